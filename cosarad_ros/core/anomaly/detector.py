"""The inference object: :class:`AnomalyDetector` (fit memory banks per part type, score scans).

Pipeline of :meth:`AnomalyDetector.score` (COSARAD: Tarvo, Wan, Chen, *Contrastive Learning on
3D Point Clouds for Robotic Geometric Defect Detection*, ICRA 2026; additions to the paper are
marked as such in the constructor's arguments):

1. register the scan onto the part type's reference template (FPFH + RANSAC + ICP, several
   attempts, the lowest one-sided Chamfer distance wins; :func:`cosarad_ros.core.registration.register`),
2. cut patches of radius ``R`` at the bank's fixed centres (FPS on the reference template),
   recentre, scale so ``R = 2``, resample to 512 points; skip patches with fewer than
   ``|P|min = 0.5 x`` the mean patch size (partial scans),
3. extract features (learned COSARAD network, or FPFH for the ablation),
4. patch score: Cohen's effect size against the location's bank (or the nearest-neighbour
   distance in one global bank for the PatchCore-style ablation),
5. object score: max (or top-k sum / mean) of the patch scores; per-point score: Gaussian-weighted
   mean of patch scores with ``sigma = R``,
6. defects: connected groups of points whose score exceeds the patch threshold.

Threshold calibration (no defective example needed): every template is scored against a bank of
the other templates (leave-one-out). For partial scans the left-out template is first cut to
simulated partial views (hidden point removal from ``calibration_views`` random directions) and
scored exactly like a test scan, view matching included, because full-template scores are
tighter than those of real partial scans. The good-patch scores are summarised robustly (median and
1.4826 x MAD), a Gaussian tail is assumed, and the object threshold is the ``1 - false_alarm_rate``
quantile of the object score of a good part with ``n_eff`` scored patches (Monte Carlo for the
top-k aggregators; for ``max`` that is ``median + z sigma`` with ``z = Phi^-1((1 - a)^(1 / n_eff))``).
The same ``median + z sigma`` is the per-patch / per-point threshold that delimits defects.

Layout: this module defines :class:`AnomalyDetector` and re-exports the shared types and helpers of
:mod:`.parts` (:class:`AnomalyScore`, :class:`DefectRegion`, :class:`PartBank`, :class:`PartRegistry`,
:func:`calibrate_threshold`, :func:`find_defect_regions`); the bank fitting and cache are in
:mod:`.bank_fitting`, the template banks cut to a scan in :mod:`.view_matching`.
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import as_points, transform_points
from . import bank_fitting, view_matching
from .bank_fitting import CACHE_VERSION as CACHE_VERSION
from .features import PatchFeatureExtractor, make_extractor
from .parts import (
    MIN_SCAN_POINTS,
    AnomalyScore,
    DefectRegion,
    PartBank,
    PartRegistry,
    _check_slides,
    _safe_name,
    calibrate_threshold,
    find_defect_regions,
)
from .patches import extract_patches, uniform_keys
from .scoring import AGGREGATORS, add_point_deviation, aggregate, point_scores_from_patches

__all__ = ["DefectRegion", "AnomalyScore", "PartBank", "AnomalyDetector", "METHODS", "calibrate_threshold",
           "find_defect_regions", "MIN_SCAN_POINTS"]

#: method name -> (feature extractor, memory bank kind)
METHODS = {"cosarad": ("cosarad", "local"), "fpfh": ("fpfh", "local"), "global-bank": ("cosarad", "global")}

#: how templates are cropped to a partial scan before comparing (``template_crop``)
TEMPLATE_CROPS = ("support", "views")
RESAMPLERS = ("random", "uniform")


class AnomalyDetector(PartRegistry):
    """COSARAD anomaly detector (and its FPFH / global-bank ablations through the same code).

    Args:
        method: ``"cosarad"`` (learned features, location-aware banks), ``"fpfh"`` (FPFH
            features, location-aware banks) or ``"global-bank"`` (learned features, one bank).
        model: COSARAD weights (``.safetensors``); ``None``: the shipped default model.
        patch_radius: ``R`` in metres; ``None``: ``patch_radius_rel`` x the reference template's
            bounding-box diagonal. Clouds are scaled by ``2 / R`` internally (``R = 2``).
        patch_radius_rel: see ``patch_radius``.
        num_patches: patch centres (FPS on the reference template).
        patch_points: points per resampled patch (512).
        aggregator: object score: ``"max"``, ``"topk_sum"`` or ``"topk_mean"``.
        top_k: ``k`` of the top-k aggregators.
        partial_scans: scans are partial views: skip test patches with fewer than
            ``min_patch_fraction`` x the mean patch size (``|P|min``); False: full scans (0).
        min_patch_fraction: see ``partial_scans`` (0.5 in the paper).
        min_std: floor of the pooled standard deviation of Cohen's d (feature-distance units).
        std_prior_weight: shrink each location's pooled variance toward the median over all
            locations with this many pseudo degrees of freedom (an addition to the paper;
            :func:`.scoring.local_effect_sizes`); 0: the paper's per-location value.
        registration_attempts: global registration hypotheses per registration.
        register: register scans onto the reference (False: scans are already in its frame).
        false_alarm_rate: target false-alarm rate of the calibrated object threshold.
        threshold: fixed object threshold (overrides calibration); ``None``: calibrated.
        max_template_points: templates are randomly thinned to this many points.
        min_region_points: smallest defect region reported.
        device: torch device of the network (``"cpu"``, ``"cuda"``, ``"auto"``).
        batch_size: patches per network forward pass.
        num_threads: torch threads during feature extraction (``None``: torch's default).
        seed: seed of patch resampling (scores are deterministic for a seed).
        fpfh: keyword arguments of :class:`~.baselines.FpfhExtractor` (method ``fpfh``).
        view_matching: crop the templates to what a partial scan shows before comparing (an
            addition to the paper), as ``template_crop`` says.
        template_crop: ``"support"`` (default): each full template is cut to its points within
            ``support_tolerance x R`` of a scan point, and the bank of a location holds those
            ``G`` cropped template patches; ``"views"``: the cameras that explain the scan are
            estimated (:mod:`.visibility`, hidden point removal) and template patches cropped to
            what they see, next to ``bank_views`` simulated views per template (scans covering
            more than ``full_coverage`` of the reference are then compared with full templates).
        support_tolerance: see ``template_crop`` (in patch radii).
        full_coverage: see ``template_crop``.
        view_points: points of the thinned reference used for view estimation.
        calibration_views: simulated partial views per template for threshold calibration
            (``partial_scans`` only; 0: calibrate on full templates' leave-one-out scores).
        bank_views: simulated partial views (hidden point removal) of each template added to the
            banks (``partial_scans`` only; an addition to the paper, see ``docs/anomaly.md``);
            ``None``: 3 with ``template_crop="views"``, 0 with ``"support"`` (which compares with
            the cropped full templates only).
        point_deviation_weight: per-point scores add this many score units per
            ``deviation_tolerance`` of the point's own deviation from the templates
            (:func:`.scoring.add_point_deviation`; an addition to the paper); 0: the paper's
            Gaussian-weighted patch score alone. Object scores and thresholds are unchanged.
        deviation_tolerance: see ``point_deviation_weight`` [m].
        resample: how a patch's points are drawn down to ``patch_points``: ``"random"``
            (default, what the shipped models were trained on) or ``"uniform"`` (inversely to the
            local point density, :func:`.patches.uniform_keys`, so scans and templates sampled
            at different densities give evenly spread patches; an addition to the paper).
        symmetry_check: after registration (or with a given ``transform``), test the other poses
            a near-symmetric part allows that fit the reference template about as well
            (:func:`.template_align.symmetry_candidates`) against *all* good templates, and keep the one
            whose points lie closest to them (mean deviation, :mod:`.surfaces`, capped at twice
            the templates' point spacing) when it is lower by more than ``symmetry_min_gain``
            (relative). The reference alone cannot tell a block's true pose from its half-turn
            when the view sees little of what breaks the symmetry; the templates together can.
            An addition to the paper; needs 2 or more templates.
        symmetry_min_gain: see ``symmetry_check``.
        symmetry_slides: with ``symmetry_check``, also test the placements that slide a small
            view against either end of the part on each principal axis where it is shorter than
            ``symmetry_slides`` x the part (a view of one corner of a block fits every corner);
            ``0`` turns them off. An addition to the paper.
    """

    def __init__(self, method: str = "cosarad", model: str | None = None, *, patch_radius: float | None = None,
                 patch_radius_rel: float = 0.06, num_patches: int = 256, patch_points: int = 512,
                 aggregator: str = "max", top_k: int = 3, partial_scans: bool = True,
                 min_patch_fraction: float = 0.5, min_std: float = 0.02, registration_attempts: int = 3,
                 register: bool = True, false_alarm_rate: float = 0.01, threshold: float | None = None,
                 max_template_points: int = 60_000, min_region_points: int = 10, device: str = "cpu",
                 batch_size: int = 128, num_threads: int | None = None, seed: int = 0,
                 fpfh: dict | None = None, view_matching: bool = True, full_coverage: float = 0.85,
                 view_points: int = 2000, calibration_views: int = 2, bank_views: int | None = None,
                 std_prior_weight: float = 32.0, point_deviation_weight: float = 1.0,
                 deviation_tolerance: float = 0.25e-3, template_crop: str = "support",
                 support_tolerance: float = 0.25, resample: str = "random", symmetry_check: bool = True,
                 symmetry_min_gain: float = 0.03, symmetry_slides: float = 0.9):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
        if aggregator not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {aggregator!r}; choose from {AGGREGATORS}")
        if num_patches < 2 or patch_points < 16 or top_k < 1 or registration_attempts < 1:
            raise ValueError("num_patches >= 2, patch_points >= 16, top_k >= 1 and registration_attempts >= 1 required")
        if not 0 <= min_patch_fraction < 1:
            raise ValueError(f"min_patch_fraction must be in [0, 1), got {min_patch_fraction}")
        if threshold is not None and not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        if not (np.isfinite(std_prior_weight) and std_prior_weight >= 0):
            raise ValueError(f"std_prior_weight must be >= 0, got {std_prior_weight}")
        if not (np.isfinite(point_deviation_weight) and point_deviation_weight >= 0):
            raise ValueError(f"point_deviation_weight must be >= 0, got {point_deviation_weight}")
        if not (np.isfinite(deviation_tolerance) and deviation_tolerance > 0):
            raise ValueError(f"deviation_tolerance must be > 0, got {deviation_tolerance}")
        if template_crop not in TEMPLATE_CROPS:
            raise ValueError(f"unknown template_crop {template_crop!r}; choose from {TEMPLATE_CROPS}")
        if not (np.isfinite(support_tolerance) and support_tolerance > 0):
            raise ValueError(f"support_tolerance must be > 0, got {support_tolerance}")
        if resample not in RESAMPLERS:
            raise ValueError(f"unknown resample {resample!r}; choose from {RESAMPLERS}")
        if not (np.isfinite(symmetry_min_gain) and 0 <= symmetry_min_gain < 1):
            raise ValueError(f"symmetry_min_gain must be in [0, 1), got {symmetry_min_gain}")
        if bank_views is None:
            bank_views = 3 if template_crop == "views" else 0
        if bank_views < 0:
            raise ValueError(f"bank_views must be >= 0, got {bank_views}")
        self.template_crop = template_crop
        self.resample = resample
        self.symmetry_check = bool(symmetry_check)
        self.symmetry_min_gain = float(symmetry_min_gain)
        self.symmetry_slides = _check_slides(symmetry_slides)
        self.support_tolerance = float(support_tolerance)
        self.point_deviation_weight = float(point_deviation_weight)
        self.deviation_tolerance = float(deviation_tolerance)
        self.method = method
        self.model = model
        self.patch_radius = patch_radius
        self.patch_radius_rel = float(patch_radius_rel)
        self.num_patches = int(num_patches)
        self.patch_points = int(patch_points)
        self.aggregator = aggregator
        self.top_k = int(top_k)
        self.partial_scans = bool(partial_scans)
        self.min_patch_fraction = float(min_patch_fraction)
        self.min_std = float(min_std)
        self.std_prior_weight = float(std_prior_weight)
        self.registration_attempts = int(registration_attempts)
        self.register = bool(register)
        self.false_alarm_rate = float(false_alarm_rate)
        self.threshold = None if threshold is None else float(threshold)
        self.max_template_points = int(max_template_points)
        self.min_region_points = int(min_region_points)
        self.seed = int(seed)
        self.view_matching = bool(view_matching)
        self.full_coverage = float(full_coverage)
        self.view_points = int(view_points)
        self.calibration_views = int(calibration_views)
        self.bank_views = int(bank_views)
        feat_name, self.bank_kind = METHODS[method]
        if feat_name == "cosarad":
            self.extractor: PatchFeatureExtractor = make_extractor(
                "cosarad", model=model, device=device, batch_size=batch_size, num_threads=num_threads)
        else:
            self.extractor = make_extractor("fpfh", **(fpfh or {}))
        self._parts: dict[str, PartBank] = {}
        self._surface_cache: dict = {}
        self._member_cache: dict = {}

    # ------------------------------------------------------------------ construction
    @property
    def classes_seen(self) -> tuple[str, ...]:
        """Classes the feature extractor saw in training (empty for FPFH)."""
        return tuple(getattr(self.extractor, "classes_seen", ()))

    # ------------------------------------------------------------------ helpers
    def _rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def _template_keys(self, pb: "PartBank | None", g: int, n: int, points: np.ndarray | None = None) -> np.ndarray:
        """Resampling keys of the ``n`` points of template ``g`` (:func:`.patches.extract_patches`
        ``point_keys``): fixed per template, so a template patch cut again from the same points
        is the fitted one; the leave-one-out sub-banks of calibration keep the original template
        indices in ``groups``.
        """
        if pb is not None and pb.groups is not None and len(pb.groups) > g:
            g = int(pb.groups[g])
        u = np.random.default_rng([self.seed, 100 + int(g)]).random(n)
        if self.resample != "uniform" or points is None:
            return u
        hit = self._member_cache.get(("keys", id(points)))
        if hit is None or hit[0] is not points or len(hit[1]) != n:
            hit = (points, uniform_keys(points, u))
            self._member_cache[("keys", id(points))] = hit
        return hit[1]

    @property
    def uses_deviation(self) -> bool:
        """The extractor takes each point's deviation from the templates as an input channel."""
        return self.extractor.inputs == "xyz+deviation"

    def _channel(self, dev: np.ndarray | None, radius: float, mask=None):
        """Per-point input channels for :func:`.patches.extract_patches` (``None``: coordinates only)."""
        if not self.uses_deviation or dev is None:
            return None
        from .surfaces import deviation_channel

        return deviation_channel(dev if mask is None else dev[mask], radius)

    def _surfaces(self, pb: PartBank):
        """The part's :class:`.surfaces.TemplateSurfaces` (built once per part type, in memory)."""
        from .surfaces import TemplateSurfaces

        cache = self._surface_cache
        if cache.get(pb.part_type, (None,))[0] is not pb:
            normals = pb.template_normals if pb.template_normals else None
            cache[pb.part_type] = (pb, TemplateSurfaces.build(pb.templates, normals))
        return cache[pb.part_type][1]

    def _cut(self, points, centres, **kwargs):
        """:func:`.patches.extract_patches` with the farthest-point prefix the extractor needs
        (and density-weighted resampling keys with ``resample="uniform"``).
        """
        if self.resample == "uniform" and kwargs.get("point_keys") is None:
            rng = kwargs.pop("rng", None)
            rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
            kwargs["point_keys"] = uniform_keys(points, rng.random(len(points)))
        return extract_patches(points, centres, fps_prefix=self.extractor.fps_prefix, **kwargs)

    def _features(self, ps) -> np.ndarray:
        feats = np.zeros((len(ps.patches), self.extractor.dim), dtype=np.float32)
        if ps.valid.any():
            feats[ps.valid] = self.extractor(ps.patches[ps.valid])
        return feats

    def _bank_args(self) -> dict:
        """Keyword arguments of :func:`.memory_bank.make_bank` from the detector's settings."""
        return {"min_std": self.min_std, "std_prior_weight": self.std_prior_weight}

    # methods bound from module functions that take the detector as ``self`` (:mod:`.bank_fitting`,
    # :mod:`.view_matching`)
    _cache_key = bank_fitting._cache_key

    # ------------------------------------------------------------------ fitting
    def fit(self, part_type: str, templates, *, cache_dir: str | None = None, progress: bool = False,
            aligned: bool = False) -> PartBank:
        """Build (or load from ``cache_dir``) the memory banks of ``part_type``.

        Args:
            part_type: label of the part type.
            templates: list of ``(N_g, 3)`` good scans (or simulated scans of the CAD model) in
                metres, any poses; the first is the reference whose frame becomes the template frame.
            cache_dir: folder for the banks (``<part_type>-<key>.npz``); reused when the method,
                model, parameters and template data match.
            progress: tqdm bar over the templates.
            aligned: the templates are already in the first template's frame (skip registering them).

        Raises:
            ValueError: empty part type, fewer than 2 (3 for Cohen's-d calibration) valid templates,
                empty / non-finite templates.
        """
        if not isinstance(part_type, str) or not part_type:
            raise ValueError("part_type must be a non-empty string")
        if templates is None or len(templates) == 0:
            raise ValueError(f"no templates given for part type '{part_type}'")
        tmpl = [self._thin(as_points(t, name=f"template {i} of '{part_type}'", min_points=MIN_SCAN_POINTS), i)
                for i, t in enumerate(templates)]
        need = 3 if self.bank_kind == "local" else 2
        if len(tmpl) < need:
            raise ValueError(f"part type '{part_type}' has {len(tmpl)} template(s); the {self.method} "
                             f"method needs at least {need}")
        key = self._cache_key(tmpl) + ("-aligned" if aligned else "")
        path = None
        if cache_dir:
            path = os.path.join(cache_dir, f"{_safe_name(part_type)}-{key[:20]}.npz")
            if os.path.isfile(path):
                try:
                    pb = self._load_bank(path, part_type, key)
                    self._parts[part_type] = pb
                    return pb
                except ValueError as exc:
                    warnings.warn(f"ignoring unreadable bank cache {path}: {exc}")
        pb = self._build(part_type, tmpl, key, progress=progress, aligned=aligned)
        self._parts[part_type] = pb
        if path:
            self._save_bank(path, pb)
        return pb

    _build = bank_fitting._build
    _partial_loo = bank_fitting._partial_loo

    def _calibrate(self, loo: np.ndarray, n_eff: int) -> tuple[float, float]:
        thr, pthr = calibrate_threshold(loo, aggregator=self.aggregator, top_k=self.top_k, n_eff=n_eff,
                                        false_alarm_rate=self.false_alarm_rate, seed=self.seed)
        if self.threshold is not None:
            thr = self.threshold
        return thr, pthr

    # ------------------------------------------------------------------ cache
    _save_bank = bank_fitting._save_bank
    _load_bank = bank_fitting._load_bank

    # ------------------------------------------------------------------ scoring
    def score(self, scan, part_type: str, *, register: bool | None = None, transform=None) -> AnomalyScore:
        """Score a scan of ``part_type``.

        Args:
            scan: ``(N, 3)`` points in metres, any pose (registered onto the templates here).
            part_type: a fitted part type.
            register: override the detector's ``register`` setting for this call.
            transform: a known ``(4, 4)`` scan -> template-frame transform (skips registration).

        Raises:
            ValueError: empty / non-finite / too small scan, unknown part type, or a scan that
                overlaps no patch of the templates.
        """
        timings = {}
        t0 = time.perf_counter()
        pts = as_points(scan, name="scan", min_points=MIN_SCAN_POINTS)
        pb = self.part_bank(part_type)
        do_reg = self.register if register is None else bool(register)
        if transform is not None:
            from ..geometry import as_transform

            T = as_transform(transform)
            d, _ = cKDTree(pb.reference).query(transform_points(T, pts), k=1)
            chamfer, reg_ok = float(d.mean()), True
        elif do_reg:
            res = self._align(pts, pb.reference, symmetry=not (self.symmetry_check and len(pb.templates) >= 2))
            T, chamfer, reg_ok = np.asarray(res.transform), float(res.chamfer), bool(res.ok)
            if not reg_ok:
                warnings.warn(f"scan of '{part_type}' did not register well ({res.reason}); scores are unreliable")
        else:
            T = np.eye(4)
            d, _ = cKDTree(pb.reference).query(pts, k=1)
            chamfer, reg_ok = float(d.mean()), True
        if self.symmetry_check and (transform is not None or do_reg) and len(pb.templates) >= 2:
            T_reg = T
            T = self._check_symmetry(pb.reference, lambda: self._surfaces(pb), pts, T,
                                     min_gain=self.symmetry_min_gain, slides=self.symmetry_slides)
            if T is not T_reg:
                d, _ = cKDTree(pb.reference).query(transform_points(T, pts), k=1)
                chamfer = float(d.mean())
        reg = transform_points(T, pts)
        t1 = time.perf_counter()
        timings["register"] = t1 - t0
        reg_tree = cKDTree(reg)  # shared by the patch cutting, coverage and the support crop
        need_dev = self.uses_deviation or self.point_deviation_weight > 0
        dev = self._surfaces(pb).deviation(reg) if need_dev and len(pb.templates) >= 2 else None
        ps = self._cut(reg, pb.centres, radius=pb.radius, num_points=self.patch_points,
                       min_points="partial" if self.partial_scans else 0, rng=self._rng(999), tree=reg_tree,
                       point_features=self._channel(dev, pb.radius))
        if self.partial_scans and self.min_patch_fraction != 0.5:
            nz = ps.counts[ps.counts > 0]
            lim = self.min_patch_fraction * nz.mean() if nz.size else 0
            ps = type(ps)(ps.centres, ps.patches, ps.counts, (ps.counts >= max(lim, 1)), ps.radius, ps.scale)
        if not ps.valid.any():
            raise ValueError(f"the scan overlaps none of the {len(pb.centres)} patches of '{part_type}' "
                             f"(registration chamfer {chamfer:.4g} m); is it the right part type?")
        t2 = time.perf_counter()
        timings["patches"] = t2 - t1
        feats = self._features(ps)
        t3 = time.perf_counter()
        timings["features"] = t3 - t2
        bank, coverage = pb.bank, 1.0
        if self.view_matching and pb.view_reference is not None:
            bank, coverage = self._view_matched_bank(pb, reg, ps.valid, reg_tree=reg_tree)
        timings["view_matching"] = time.perf_counter() - t3
        t3 = time.perf_counter()
        patch_scores = bank.score(feats, ps.valid)
        if not np.isfinite(patch_scores).any():
            raise ValueError(f"no patch of the scan could be scored against the banks of '{part_type}'")
        obj = aggregate(patch_scores, self.aggregator, self.top_k)
        point_scores = point_scores_from_patches(reg, pb.centres, patch_scores, sigma=pb.radius)
        if dev is not None and self.point_deviation_weight > 0:
            point_scores = add_point_deviation(point_scores, dev, weight=self.point_deviation_weight,
                                               tolerance=self.deviation_tolerance)
        defects = find_defect_regions(reg, point_scores, pb.patch_threshold, link_distance=0.5 * pb.radius,
                                      min_points=self.min_region_points)
        timings["scoring"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0
        return AnomalyScore(point_scores=point_scores, object_score=float(obj), threshold=float(pb.threshold),
                            is_anomalous=bool(obj > pb.threshold), transform=T, chamfer=chamfer,
                            patch_centres=pb.centres.copy(), patch_scores=patch_scores, defects=defects,
                            point_threshold=float(pb.patch_threshold), registration_ok=reg_ok, timings=timings,
                            coverage=float(coverage))

    _view_matched_bank = view_matching._view_matched_bank
    _cropped_template_patches = view_matching._cropped_template_patches
    _fill_features = view_matching._fill_features
    _membership = view_matching._membership
    _support_bank = view_matching._support_bank
