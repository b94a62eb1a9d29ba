"""The inference object: :class:`AnomalyDetector` (fit memory banks per part type, score scans).

Pipeline of :meth:`AnomalyDetector.score` (COSARAD: Tarvo, Wan, Chen, *Contrastive Learning on
3D Point Clouds for Robotic Geometric Defect Detection*, ICRA 2026; additions to the paper are
marked as such in the settings of :mod:`.config`):

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
:func:`calibrate_threshold`, :func:`find_defect_regions`); its settings are the grouped, typed
:class:`~.config.DetectorConfig`; the bank fitting and cache are in :mod:`.bank_fitting`, the
template banks cut to a scan in :mod:`.view_matching`.
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import as_points, transform_points
from . import bank_fitting, view_matching
from .config import GROUPS as CONFIG_GROUPS
from .config import REMOVED_OPTIONS, DetectorConfig
from .features import PatchFeatureExtractor, make_extractor
from .parts import (
    MIN_SCAN_POINTS,
    AnomalyScore,
    DefectRegion,
    PartBank,
    PartRegistry,
    _safe_name,
    calibrate_threshold,
    find_defect_regions,
)
from .parts import _check_slides as _check_slides  # re-exported: deviation.py imports it from here
from .patches import extract_patches
from .scoring import add_point_deviation, aggregate, point_scores_from_patches

__all__ = ["DefectRegion", "AnomalyScore", "PartBank", "AnomalyDetector", "DetectorConfig", "METHODS",
           "calibrate_threshold", "find_defect_regions", "MIN_SCAN_POINTS"]

#: method name -> (feature extractor, memory bank kind)
METHODS = {"cosarad": ("cosarad", "local"), "fpfh": ("fpfh", "local"), "global-bank": ("cosarad", "global")}

#: keys of :meth:`AnomalyDetector.from_config` that are constructor arguments, not config options
_CONSTRUCTOR_KEYS = ("method", "model", "fpfh", "device", "batch_size", "num_threads", "seed")


class AnomalyDetector(PartRegistry):
    """COSARAD anomaly detector (and its FPFH / global-bank ablations through the same code).

    The method picks the two parts that differ between COSARAD and its ablations, the patch
    feature extractor and the memory-bank kind (:data:`METHODS`); everything that shapes the
    banks and scores is in ``config`` (:class:`~.config.DetectorConfig`, grouped by stage, each
    default the best measured setting); the keyword arguments only say where and how fast the
    features are computed, and the seed.

    Args:
        method: ``"cosarad"`` (learned features, location-aware banks), ``"fpfh"`` (FPFH
            features, location-aware banks) or ``"global-bank"`` (learned features, one bank).
        model: COSARAD weights (``.safetensors``); ``None``: the shipped default model.
        config: the settings (patches, banks, scoring, calibration, regions, registration);
            ``None``: the defaults. :meth:`from_config` builds one from flat option names.
        fpfh: keyword arguments of :class:`~.baselines.FpfhExtractor` (method ``fpfh``).
        device: torch device of the network (``"cpu"``, ``"cuda"``, ``"auto"``).
        batch_size: patches per network forward pass.
        num_threads: torch threads during feature extraction (``None``: torch's default).
        seed: seed of patch resampling and template thinning (scores are deterministic for a seed).

    Attributes:
        config: the :class:`~.config.DetectorConfig` in use (frozen; assign a new one, e.g.
            ``det.config = det.config.with_options(threshold=5.0)``, to change a setting; settings
            that shape the banks take effect on the next ``fit``).
        method, model, seed: as given.
        bank_kind: ``"local"`` (one bank per patch location) or ``"global"``.
        extractor: the patch feature extractor.

    Raises:
        ValueError: unknown method.
    """

    def __init__(self, method: str = "cosarad", model: str | None = None, config: DetectorConfig | None = None, *,
                 fpfh: dict | None = None, device: str = "cpu", batch_size: int = 128,
                 num_threads: int | None = None, seed: int = 0):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
        if config is None:
            config = DetectorConfig()
        elif not isinstance(config, DetectorConfig):
            raise ValueError(f"config must be a DetectorConfig, got {type(config).__name__} "
                             "(AnomalyDetector.from_config takes a dict of options)")
        self.config = config
        self.method = method
        self.model = model
        self.seed = int(seed)
        feat_name, self.bank_kind = METHODS[method]
        if feat_name == "cosarad":
            self.extractor: PatchFeatureExtractor = make_extractor(
                "cosarad", model=model, device=device, batch_size=batch_size, num_threads=num_threads)
        else:
            self.extractor = make_extractor("fpfh", **(fpfh or {}))
        self._parts: dict[str, PartBank] = {}
        self._surface_cache: dict = {}
        self._member_cache: dict = {}

    @classmethod
    def from_config(cls, config: dict | None = None) -> AnomalyDetector:
        """Build from a flat dict: the constructor's arguments other than ``config`` (``method``,
        ``model``, ``fpfh``, ``device``, ``batch_size``, ``num_threads``, ``seed``) and the option
        names of :class:`~.config.DetectorConfig`'s groups (``num_patches``, ``threshold``, ...),
        or a group name with a dict of its fields (``{"patches": {"num_patches": 64}}``).

        Raises:
            ValueError: unknown keys (named; removed options say what replaced them), bad values.
        """
        cfg = dict(config or {})
        args = {k: cfg.pop(k) for k in _CONSTRUCTOR_KEYS if k in cfg}
        allowed = set(_CONSTRUCTOR_KEYS) | set(DetectorConfig.option_names()) | set(CONFIG_GROUPS)
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            notes = "".join(f"; {k} was removed: {REMOVED_OPTIONS[k]}" for k in unknown if k in REMOVED_OPTIONS)
            raise ValueError(f"unknown {cls.__name__} config keys {unknown}{notes}; allowed: {sorted(allowed)}")
        return cls(config=DetectorConfig.from_options(cfg), **args)

    # settings the shared :class:`.parts.PartRegistry` code reads
    @property
    def register(self) -> bool:
        """Register scans and templates onto the reference (``config.registration.register``)."""
        return self.config.registration.register

    @property
    def registration_attempts(self) -> int:
        return self.config.registration.registration_attempts

    @property
    def max_template_points(self) -> int:
        return self.config.banks.max_template_points

    # ------------------------------------------------------------------ construction
    @property
    def classes_seen(self) -> tuple[str, ...]:
        """Classes the feature extractor saw in training (empty for FPFH)."""
        return tuple(getattr(self.extractor, "classes_seen", ()))

    # ------------------------------------------------------------------ helpers
    def _rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def _template_keys(self, pb: "PartBank | None", g: int, n: int) -> np.ndarray:
        """Resampling keys of the ``n`` points of template ``g`` (:func:`.patches.extract_patches`
        ``point_keys``): fixed per template, so a template patch cut again from the same points
        is the fitted one; the leave-one-out sub-banks of calibration keep the original template
        indices in ``groups``.
        """
        if pb is not None and pb.groups is not None and len(pb.groups) > g:
            g = int(pb.groups[g])
        return np.random.default_rng([self.seed, 100 + int(g)]).random(n)

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
        """:func:`.patches.extract_patches` with the farthest-point prefix the extractor needs."""
        return extract_patches(points, centres, fps_prefix=self.extractor.fps_prefix, **kwargs)

    def _features(self, ps) -> np.ndarray:
        feats = np.zeros((len(ps.patches), self.extractor.dim), dtype=np.float32)
        if ps.valid.any():
            feats[ps.valid] = self.extractor(ps.patches[ps.valid])
        return feats

    def _bank_args(self) -> dict:
        """Keyword arguments of :func:`.memory_bank.make_bank` from the detector's settings."""
        sc = self.config.scoring
        return {"min_std": sc.min_std, "std_prior_weight": sc.std_prior_weight}

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
        sc, cal = self.config.scoring, self.config.calibration
        thr, pthr = calibrate_threshold(loo, aggregator=sc.aggregator, top_k=sc.top_k, n_eff=n_eff,
                                        false_alarm_rate=cal.false_alarm_rate, seed=self.seed)
        if cal.threshold is not None:
            thr = cal.threshold
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
            register: override the detector's ``config.registration.register`` for this call.
            transform: a known ``(4, 4)`` scan -> template-frame transform (skips registration).

        Raises:
            ValueError: empty / non-finite / too small scan, unknown part type, or a scan that
                overlaps no patch of the templates.
        """
        cfg = self.config
        pc, rc, sc = cfg.patches, cfg.registration, cfg.scoring
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
            res = self._align(pts, pb.reference, symmetry=not (rc.symmetry_check and len(pb.templates) >= 2))
            T, chamfer, reg_ok = np.asarray(res.transform), float(res.chamfer), bool(res.ok)
            if not reg_ok:
                warnings.warn(f"scan of '{part_type}' did not register well ({res.reason}); scores are unreliable")
        else:
            T = np.eye(4)
            d, _ = cKDTree(pb.reference).query(pts, k=1)
            chamfer, reg_ok = float(d.mean()), True
        if rc.symmetry_check and (transform is not None or do_reg) and len(pb.templates) >= 2:
            T_reg = T
            T = self._check_symmetry(pb.reference, lambda: self._surfaces(pb), pts, T,
                                     min_gain=rc.symmetry_min_gain, slides=rc.symmetry_slides)
            if T is not T_reg:
                d, _ = cKDTree(pb.reference).query(transform_points(T, pts), k=1)
                chamfer = float(d.mean())
        reg = transform_points(T, pts)
        t1 = time.perf_counter()
        timings["register"] = t1 - t0
        reg_tree = cKDTree(reg)  # shared by the patch cutting, coverage and the support crop
        need_dev = self.uses_deviation or sc.point_deviation_weight > 0
        dev = self._surfaces(pb).deviation(reg) if need_dev and len(pb.templates) >= 2 else None
        ps = self._cut(reg, pb.centres, radius=pb.radius, num_points=pc.patch_points,
                       min_points="partial" if pc.partial_scans else 0, rng=self._rng(999), tree=reg_tree,
                       point_features=self._channel(dev, pb.radius))
        if pc.partial_scans and pc.min_patch_fraction != 0.5:
            nz = ps.counts[ps.counts > 0]
            lim = pc.min_patch_fraction * nz.mean() if nz.size else 0
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
        if cfg.banks.view_matching and pb.view_reference is not None:
            bank, coverage = self._view_matched_bank(pb, reg, ps.valid, reg_tree=reg_tree)
        timings["view_matching"] = time.perf_counter() - t3
        t3 = time.perf_counter()
        patch_scores = bank.score(feats, ps.valid)
        if not np.isfinite(patch_scores).any():
            raise ValueError(f"no patch of the scan could be scored against the banks of '{part_type}'")
        obj = aggregate(patch_scores, sc.aggregator, sc.top_k)
        point_scores = point_scores_from_patches(reg, pb.centres, patch_scores, sigma=pb.radius)
        if dev is not None and sc.point_deviation_weight > 0:
            point_scores = add_point_deviation(point_scores, dev, weight=sc.point_deviation_weight,
                                               tolerance=sc.deviation_tolerance)
        defects = find_defect_regions(reg, point_scores, pb.patch_threshold, link_distance=0.5 * pb.radius,
                                      min_points=cfg.regions.min_region_points)
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
