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
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import as_points, transform_points
from .features import PatchFeatureExtractor, make_extractor
from .memory_bank import MemoryBank, make_bank
from .patches import extract_patches, farthest_point_sampling, resolve_patch_radius, uniform_keys
from .scoring import AGGREGATORS, add_point_deviation, aggregate, point_scores_from_patches

__all__ = ["DefectRegion", "AnomalyScore", "PartBank", "AnomalyDetector", "METHODS", "calibrate_threshold",
           "find_defect_regions", "MIN_SCAN_POINTS"]

#: method name -> (feature extractor, memory bank kind)
METHODS = {"cosarad": ("cosarad", "local"), "fpfh": ("fpfh", "local"), "global-bank": ("cosarad", "global")}

#: the fewest points a scan (or template) may have
MIN_SCAN_POINTS = 50

#: how templates are cropped to a partial scan before comparing (``template_crop``)
TEMPLATE_CROPS = ("support", "views")
RESAMPLERS = ("random", "uniform")

CACHE_VERSION = 5


@dataclass(frozen=True)
class DefectRegion:
    """One connected group of anomalous scan points.

    Attributes:
        centroid: ``(3,)`` mean of its points, template (part) frame [m].
        extent: ``(3,)`` axis-aligned size of its points, template frame [m].
        score: the largest point score in the region.
        point_count: number of points.
        indices: ``(K,)`` indices into the scored scan.
        kind: what the detector can tell of it (``bulge``: material added, ``sink``: material
            removed or pushed in; ``anomaly`` when it cannot tell).
    """

    centroid: np.ndarray
    extent: np.ndarray
    score: float
    point_count: int
    indices: np.ndarray
    kind: str = "anomaly"


@dataclass(frozen=True)
class AnomalyScore:
    """Result of :meth:`AnomalyDetector.score`.

    Attributes:
        point_scores: ``(N,)`` per-point anomaly scores, in the order of the input scan.
        object_score: object-level score.
        threshold: decision threshold on ``object_score`` (calibrated per part type).
        is_anomalous: ``object_score > threshold``.
        transform: ``(4, 4)`` scan frame -> template (part) frame.
        chamfer: one-sided Chamfer distance scan -> reference after registration [m].
        patch_centres: ``(P, 3)`` patch centres in the template frame.
        patch_scores: ``(P,)`` patch scores (NaN: patch not scored, e.g. not seen by a partial scan).
        defects: connected regions of points above ``point_threshold``, highest score first.
        point_threshold: the per-point / per-patch threshold used for ``defects``.
        registration_ok: the registration passed its checks (when False, scores are unreliable).
        timings: seconds per stage (``register``, ``patches``, ``features``, ``view_matching``,
            ``scoring``, ``total``).
        coverage: share of the reference template the registered scan covers.
    """

    point_scores: np.ndarray
    object_score: float
    threshold: float
    is_anomalous: bool
    transform: np.ndarray
    chamfer: float
    patch_centres: np.ndarray
    patch_scores: np.ndarray
    defects: tuple[DefectRegion, ...] = ()
    point_threshold: float = float("nan")
    registration_ok: bool = True
    timings: dict = field(default_factory=dict)
    coverage: float = 1.0


@dataclass(frozen=True)
class PartBank:
    """Everything the detector keeps per part type (and caches on disk).

    Attributes:
        part_type: the label.
        reference: ``(M, 3)`` float32 reference template (registration target), template frame.
        centres: ``(P, 3)`` patch centres.
        radius: patch radius ``R`` [m].
        bank: the memory bank of template features.
        threshold: object-score threshold.
        patch_threshold: per-patch / per-point threshold.
        loo_scores: ``(G, P)`` leave-one-out patch scores of the templates.
        key: cache key (method, extractor, parameters, template data).
        templates: the ``G`` registered (thinned) templates behind the first ``G`` bank columns.
        counts: ``(P, G')`` raw points of each bank member's patch.
        view_reference: ``(K, 3)`` thinned reference used to estimate a scan's views.
        template_nn: per template, the index of each point's nearest ``view_reference`` point.
        groups: ``(G',)`` the template each bank column comes from: the ``G`` full templates
            first, then ``bank_views`` simulated partial views of each.
        template_normals: unoriented normals of ``templates``; view_normals: of ``view_reference``.
        template_dev: per template, each point's leave-one-out deviation from the other templates
            [m] (:mod:`.surfaces`); only for extractors with ``"xyz+deviation"`` inputs, else empty.
    """

    part_type: str
    reference: np.ndarray
    centres: np.ndarray
    radius: float
    bank: MemoryBank
    threshold: float
    patch_threshold: float
    loo_scores: np.ndarray
    key: str
    templates: tuple = ()
    counts: np.ndarray | None = None
    view_reference: np.ndarray | None = None
    template_nn: tuple = ()
    groups: np.ndarray | None = None
    template_normals: tuple = ()
    view_normals: np.ndarray | None = None
    template_dev: tuple = ()


def calibrate_threshold(loo_scores, *, aggregator: str = "max", top_k: int = 3, n_eff: int = 128,
                        false_alarm_rate: float = 0.01, draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Object and patch thresholds from good-patch scores only (see module docstring).

    Args:
        loo_scores: good-patch scores (any shape; NaNs ignored), e.g. leave-one-out template scores.
        aggregator, top_k: how object scores are formed.
        n_eff: scored patches expected per scan.
        false_alarm_rate: accepted probability that a good part exceeds the object threshold.

    Returns:
        ``(object_threshold, patch_threshold)``.
    """
    from scipy.stats import norm

    s = np.asarray(loo_scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size < 3:
        raise ValueError("need at least 3 finite good-patch scores to calibrate a threshold")
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    n_eff = max(int(n_eff), 1)
    med = float(np.median(s))
    sig = float(1.4826 * np.median(np.abs(s - med)))
    if sig <= 0:
        sig = float(s.std()) or 1e-6
    z = float(norm.ppf((1.0 - false_alarm_rate) ** (1.0 / n_eff)))
    patch_thr = med + z * sig
    if aggregator == "max":
        return patch_thr, patch_thr
    rng = np.random.default_rng(seed)
    sims = rng.normal(med, sig, size=(draws, n_eff))
    k = min(top_k, n_eff)
    top = -np.partition(-sims, k - 1, axis=1)[:, :k]
    obj = top.sum(1) if aggregator == "topk_sum" else top.mean(1)
    return float(np.quantile(obj, 1.0 - false_alarm_rate)), patch_thr


def find_defect_regions(points, scores, threshold: float, *, link_distance: float,
                        min_points: int = 10) -> tuple[DefectRegion, ...]:
    """Connected components (points closer than ``link_distance``) of points scoring above
    ``threshold``; regions smaller than ``min_points`` are dropped. Highest score first.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pts = np.asarray(points, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    hot = np.nonzero(np.isfinite(sc) & (sc > threshold))[0]
    if hot.size < max(min_points, 1):
        return ()
    hp = pts[hot]
    pairs = cKDTree(hp).query_pairs(link_distance, output_type="ndarray")
    n = len(hp)
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) else \
        coo_matrix((n, n))
    _, labels = connected_components(g, directed=False)
    regions = []
    for lab in np.unique(labels):
        members = hot[labels == lab]
        if members.size < min_points:
            continue
        p = pts[members]
        regions.append(DefectRegion(centroid=p.mean(0), extent=p.max(0) - p.min(0),
                                    score=float(sc[members].max()), point_count=int(members.size),
                                    indices=members.astype(np.int64)))
    regions.sort(key=lambda r: -r.score)
    return tuple(regions)


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:80] or "part"


def _check_slides(value) -> float:
    """``symmetry_slides``: 0 (off) or a ratio in (0, 1]."""
    v = float(value)
    if not (np.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"symmetry_slides must be in [0, 1] (0 = off), got {value}")
    return v


class PartRegistry:
    """Per-part-type banks of a detector: ``self._parts`` maps a part type to its bank; needs
    ``seed``, ``max_template_points``, ``register`` and ``registration_attempts`` attributes
    (shared by every detector kind).
    """

    _parts: dict

    @classmethod
    def from_config(cls, config: dict | None = None):
        """Build from a dict whose keys are the constructor's arguments (unknown keys are refused;
        ``method`` is accepted by detectors whose constructor does not take it).
        """
        import inspect

        cfg = dict(config or {})
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
        if "method" not in allowed:
            cfg.pop("method", None)
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} config keys {unknown}; allowed: {sorted(allowed)}")
        return cls(**cfg)

    def has_part(self, part_type: str) -> bool:
        return part_type in self._parts

    def parts(self) -> list[str]:
        return sorted(self._parts)

    def part_bank(self, part_type: str):
        if part_type not in self._parts:
            known = ", ".join(self.parts()) or "none"
            raise ValueError(f"unknown part type '{part_type}': fit its templates first (known: {known})")
        return self._parts[part_type]

    def _align(self, source: np.ndarray, target: np.ndarray, *, symmetry: bool = True):
        """Register ``source`` onto ``target`` (retries, lowest Chamfer; :func:`.align.align_to_reference`).

        The target goes in as a read-only float64 copy kept per target array, so the registration
        prepares a part type's reference (k-d tree, samples, normals, features) once, not per scan.
        ``symmetry=False`` skips the reference-only symmetry step (the detector's
        ``symmetry_check`` then tests the same poses against all templates).
        """
        from .align import align_to_reference

        return align_to_reference(source, self._readonly(target), attempts=self.registration_attempts,
                                  seed=self.seed, symmetry=symmetry)

    def _readonly(self, target: np.ndarray) -> np.ndarray:
        """A read-only float64 copy of ``target``, kept per target array (work derived from it is
        memoised by :func:`~cosarad_ros.core.registration.cloud.readonly_memo`).
        """
        cache = self.__dict__.setdefault("_readonly_refs", {})
        hit = cache.get(id(target))
        if hit is None or hit[0] is not target:
            ro = np.array(target, dtype=np.float64, copy=True)
            ro.flags.writeable = False
            if len(cache) >= 32:
                cache.clear()
            hit = cache[id(target)] = (target, ro)
        return hit[1]

    def _check_symmetry(self, reference: np.ndarray, surfaces, points: np.ndarray, T: np.ndarray, *,
                        min_gain: float, slides: float = 0.0) -> np.ndarray:
        """``symmetry_check``: the pose among ``T`` (``points`` -> ``reference`` frame) and its
        symmetric counterparts (:func:`.align.symmetry_candidates`) whose points lie closest to
        all the templates: mean deviation (``surfaces()``, a zero-argument callable giving the
        part's :class:`.surfaces.TemplateSurfaces`) capped at twice the templates' point spacing,
        on 5000 scan points; the four candidates that score best on their coarse poses are
        polished (:func:`.align.refine_pose`) and compared. ``T`` is kept unless another pose
        is lower by more than ``min_gain`` (relative); a new pose is polished on the whole scan.
        ``slides`` > 0 adds the slid placements of a small view (``symmetry_candidates``'
        ``slides``).
        """
        from ..registration.cloud import readonly_memo
        from .align import refine_pose, symmetry_candidates

        ref = self._readonly(reference)
        memo = readonly_memo(ref)
        tree = memo.get("tree")
        if tree is None:
            tree = memo["tree"] = cKDTree(ref)
        rng = np.random.default_rng([self.seed, 555])
        sub = points if len(points) <= 5000 else points[rng.choice(len(points), 5000, replace=False)]
        cands = symmetry_candidates(sub, ref, T, target_tree=tree, seed=self.seed, slides=slides or None)
        if not len(cands):
            return T
        surf = surfaces()
        cap = 2.0 * surf.allowance

        def cost(M, pts=sub):
            return float(np.minimum(surf.deviation(transform_points(M, pts)), cap).mean())

        normals = memo.get("normals")
        if normals is None:
            from .visibility import estimate_normals

            normals = memo["normals"] = estimate_normals(ref).astype(np.float64)
        spacing = memo.get(("spacing", "symmetry_check"))
        if spacing is None:
            probe = ref[:: max(1, len(ref) // 2000)]
            spacing = memo[("spacing", "symmetry_check")] = float(np.median(tree.query(probe, k=2)[0][:, 1]))
        # rank the candidates cheaply (their coarse poses, 1000 points), polish the best four
        quick = sorted(cands, key=lambda C: cost(C, sub[:1000]))[:4]
        base = cost(T)
        best, best_c = T, base
        for C in quick:
            C, _ = refine_pose(sub, ref, C, spacing=spacing, target_normals=normals, target_tree=tree, seed=self.seed,
                               max_points=1500)
            c = cost(C)
            if c < best_c:
                best, best_c = C, c
        if best is T or best_c >= (1.0 - min_gain) * base:
            return T
        best, _ = refine_pose(points, ref, best, spacing=spacing, target_normals=normals, target_tree=tree,
                              seed=self.seed)
        return best

    def _templates_on_reference(self, part_type: str, tmpl: list, *, aligned: bool):
        """Yield ``(index, template)`` with every template in the first one's frame (registered
        unless ``aligned`` or ``register`` is off); templates that do not register are skipped
        with a warning.
        """
        ref = tmpl[0]
        for g, t in enumerate(tmpl):
            if g > 0 and self.register and not aligned:
                res = self._align(t, ref)
                if not res.ok:
                    warnings.warn(f"template {g} of '{part_type}' did not register onto the reference "
                                  f"({res.reason}); it is left out of the banks")
                    continue
                t = transform_points(res.transform, t)
            yield g, t

    def _thin(self, pts: np.ndarray, salt: int) -> np.ndarray:
        """At most ``max_template_points`` of ``pts`` (random, reproducible per ``seed`` and ``salt``)."""
        if len(pts) <= self.max_template_points:
            return pts
        sel = np.random.default_rng([self.seed, 1000 + salt]).choice(len(pts), self.max_template_points,
                                                                     replace=False)
        return pts[np.sort(sel)]


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
            (:func:`.align.symmetry_candidates`) against *all* good templates, and keep the one
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

    def _cache_key(self, templates: list[np.ndarray]) -> str:
        from .align import ALIGN_VERSION

        h = hashlib.sha1()
        params = {"v": CACHE_VERSION, "align": ALIGN_VERSION, "method": self.method,
                  "extractor": self.extractor.fingerprint(),
                  "patch_radius": self.patch_radius, "patch_radius_rel": self.patch_radius_rel,
                  "num_patches": self.num_patches, "patch_points": self.patch_points, "min_std": self.min_std,
                  "aggregator": self.aggregator, "top_k": self.top_k, "far": self.false_alarm_rate,
                  "partial": self.partial_scans, "reg": self.registration_attempts, "register": self.register,
                  "max_pts": self.max_template_points, "seed": self.seed,
                  "view_points": self.view_points, "calibration_views": self.calibration_views,
                  "bank_views": self.bank_views}
        if self.template_crop != "views":  # keyed only when used: banks of the earlier default stay valid
            params["template_crop"] = [self.template_crop, self.support_tolerance]
        if self.resample != "random":  # keyed only when used
            params["resample"] = self.resample
        if self.std_prior_weight:  # keyed only when used: banks of the paper's scoring stay valid
            params["std_prior_weight"] = self.std_prior_weight
        h.update(json.dumps(params, sort_keys=True).encode())
        for t in templates:
            h.update(np.ascontiguousarray(t, dtype=np.float32).tobytes())
        return h.hexdigest()

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

    def _build(self, part_type: str, tmpl: list[np.ndarray], key: str, *, progress: bool,
               aligned: bool = False) -> PartBank:
        from tqdm.auto import tqdm

        ref = tmpl[0]
        radius = resolve_patch_radius(ref, patch_radius=self.patch_radius, patch_radius_rel=self.patch_radius_rel)
        sub = ref if len(ref) <= 20_000 else ref[self._rng(7).choice(len(ref), 20_000, replace=False)]
        centres = sub[farthest_point_sampling(sub, self.num_patches)]
        feats, valid, counts, regs = [], [], [], []
        on_ref = self._templates_on_reference(part_type, tmpl, aligned=aligned)
        for g, t in tqdm(on_ref, total=len(tmpl), desc=f"register {part_type}", disable=not progress, leave=False):
            regs.append(t.astype(np.float32))
        need = 3 if self.bank_kind == "local" else 2
        if len(regs) < need:
            raise ValueError(f"only {len(regs)} template(s) of '{part_type}' registered onto the reference; "
                             f"need {need}")
        from .visibility import estimate_normals

        normals = ([estimate_normals(t) for t in regs] if self.partial_scans or self.uses_deviation
                   else [None] * len(regs))
        tdev = ()
        if self.uses_deviation:
            from .surfaces import TemplateSurfaces

            tdev = tuple(d.astype(np.float32) for d in TemplateSurfaces.build(regs, normals).leave_one_out())
        for g, t in enumerate(regs):
            ps = self._cut(t, centres, radius=radius, num_points=self.patch_points, min_points=8,
                           point_keys=self._template_keys(None, g, len(t), t),
                           point_features=self._channel(tdev[g] if tdev else None, radius))
            feats.append(self._features(ps))
            valid.append(ps.valid)
            counts.append(ps.counts)
        groups = list(range(len(regs)))
        if self.partial_scans and self.bank_views > 0:
            # simulated partial views of every template join the bank, so the bank's own spread
            # covers what a partial view does to a patch (an addition to the paper)
            from .visibility import fibonacci_directions, visible_from

            dirs = fibonacci_directions(4 * self.bank_views + 6)
            for g, t in enumerate(regs):
                c = 0.5 * (t.max(0) + t.min(0))
                diag = float(np.linalg.norm(t.max(0) - t.min(0)))
                pick = self._rng(300 + g).choice(len(dirs), self.bank_views, replace=False)
                for v, k in enumerate(pick):
                    seen = visible_from(t, normals[g], c + 1.5 * diag * dirs[k])
                    ps = self._cut(t[seen], centres, radius=radius, num_points=self.patch_points,
                                   min_points="partial", rng=self._rng(400 + 10 * g + v),
                                   point_features=self._channel(tdev[g] if tdev else None, radius, seen))
                    feats.append(self._features(ps))
                    valid.append(ps.valid)
                    counts.append(ps.counts)
                    groups.append(g)
        F = np.stack(feats, axis=1)  # (P, G', d)
        V = np.stack(valid, axis=1)
        bank = make_bank(self.bank_kind, F, V, **self._bank_args())
        loo = bank.leave_one_out()
        vref = sub[farthest_point_sampling(sub, self.view_points)].astype(np.float32)
        tree = cKDTree(vref)
        nn = tuple(tree.query(t, k=1)[1].astype(np.int32) for t in regs)
        if self.partial_scans:
            vnorm = normals[0][cKDTree(regs[0]).query(vref, k=1)[1]]
            tnorm = tuple(normals)
        else:
            vnorm, tnorm = None, ()
        pb = PartBank(part_type, ref.astype(np.float32), centres, float(radius), bank, np.nan, np.nan, loo, key,
                      tuple(regs), np.stack(counts, axis=1), vref, nn, np.asarray(groups), tnorm, vnorm, tdev)
        n_eff = self.num_patches // 2 if self.partial_scans else self.num_patches
        if self.partial_scans and self.calibration_views > 0 and len(regs) >= need + 1:
            loo, n_eff = self._partial_loo(pb)
        thr, pthr = self._calibrate(loo, n_eff)
        return dataclasses.replace(pb, threshold=thr, patch_threshold=pthr, loo_scores=loo)

    def _partial_loo(self, pb: PartBank) -> tuple[np.ndarray, int]:
        """Good-patch scores of simulated partial views of each template (hidden point removal from
        ``calibration_views`` random directions) against a bank of the other templates, scored
        exactly like a test scan (view matching included). Returns ``(scores (G * V, P), n_eff)``.
        """
        from .visibility import fibonacci_directions, visible_from

        rng = self._rng(4242)
        G = len(pb.templates)
        groups = pb.groups if pb.groups is not None else np.arange(G)
        rows, n_valid = [], []
        for g in range(G):
            keep = [i for i in range(G) if i != g]
            rest = keep + [i for i in range(G, len(groups)) if groups[i] != g]  # full templates first
            sub = dataclasses.replace(
                pb, bank=make_bank(self.bank_kind, pb.bank.features[:, rest], pb.bank.valid[:, rest],
                                   **self._bank_args()),
                templates=tuple(pb.templates[i] for i in keep), counts=pb.counts[:, rest],
                template_nn=tuple(pb.template_nn[i] for i in keep), groups=groups[rest],
                template_normals=tuple(pb.template_normals[i] for i in keep) if pb.template_normals else (),
                template_dev=tuple(pb.template_dev[i] for i in keep) if pb.template_dev else ())
            t = pb.templates[g]
            centre = 0.5 * (t.max(0) + t.min(0))
            diag = float(np.linalg.norm(t.max(0) - t.min(0)))
            dirs = fibonacci_directions(64)[rng.choice(64, self.calibration_views, replace=False)]
            for d in dirs:
                nrm = pb.template_normals[g] if pb.template_normals else None
                seen = visible_from(t, nrm, centre + 1.5 * diag * d)
                view = t[seen].astype(np.float64)
                if len(view) < MIN_SCAN_POINTS:
                    continue
                ps = self._cut(view, pb.centres, radius=pb.radius, num_points=self.patch_points,
                               min_points="partial", rng=rng,
                               point_features=self._channel(pb.template_dev[g] if pb.template_dev else None,
                                                            pb.radius, seen))
                if not ps.valid.any():
                    continue
                feats = self._features(ps)
                bank = self._view_matched_bank(sub, view, ps.valid)[0] if self.view_matching else sub.bank
                rows.append(bank.score(feats, ps.valid))
                n_valid.append(int(ps.valid.sum()))
        if not rows:
            return pb.loo_scores, self.num_patches // 2
        return np.stack(rows), int(np.median(n_valid))

    def _calibrate(self, loo: np.ndarray, n_eff: int) -> tuple[float, float]:
        thr, pthr = calibrate_threshold(loo, aggregator=self.aggregator, top_k=self.top_k, n_eff=n_eff,
                                        false_alarm_rate=self.false_alarm_rate, seed=self.seed)
        if self.threshold is not None:
            thr = self.threshold
        return thr, pthr

    # ------------------------------------------------------------------ cache
    def _save_bank(self, path: str, pb: PartBank) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        meta = {"version": CACHE_VERSION, "part_type": pb.part_type, "key": pb.key, "radius": pb.radius,
                "threshold": pb.threshold, "patch_threshold": pb.patch_threshold, "bank_kind": pb.bank.kind}
        tmp = path + ".tmp.npz"
        np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), reference=pb.reference, centres=pb.centres,
                            features=pb.bank.features, valid=pb.bank.valid, loo=pb.loo_scores,
                            templates=np.concatenate(pb.templates),
                            template_len=np.array([len(t) for t in pb.templates]),
                            template_nn=np.concatenate(pb.template_nn), counts=pb.counts,
                            view_reference=pb.view_reference, groups=pb.groups,
                            template_normals=(np.concatenate(pb.template_normals) if pb.template_normals
                                              else np.zeros((0, 3), np.float32)),
                            view_normals=(pb.view_normals if pb.view_normals is not None
                                          else np.zeros((0, 3), np.float32)),
                            template_dev=(np.concatenate(pb.template_dev) if pb.template_dev
                                          else np.zeros(0, np.float32)))
        os.replace(tmp, path)

    def _load_bank(self, path: str, part_type: str, key: str) -> PartBank:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in ("reference", "centres", "features", "valid", "loo", "templates",
                                            "template_len", "template_nn", "counts", "view_reference",
                                            "groups", "template_normals", "view_normals")}
                # written since the deviation inputs; absent in older files (xyz / FPFH banks)
                arrays["template_dev"] = z["template_dev"] if "template_dev" in z.files else np.zeros(0, np.float32)
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(str(exc)) from exc
        if meta.get("key") != key or meta.get("version") != CACHE_VERSION:
            raise ValueError("cache key mismatch")
        bank = make_bank(meta["bank_kind"], arrays["features"], arrays["valid"], **self._bank_args())
        thr, pthr = float(meta["threshold"]), float(meta["patch_threshold"])
        cut = np.cumsum(arrays["template_len"])[:-1]
        return PartBank(part_type, arrays["reference"], arrays["centres"], float(meta["radius"]), bank, thr, pthr,
                        arrays["loo"], key, tuple(np.split(arrays["templates"], cut)), arrays["counts"],
                        arrays["view_reference"], tuple(np.split(arrays["template_nn"], cut)), arrays["groups"],
                        tuple(np.split(arrays["template_normals"], cut)) if len(arrays["template_normals"]) else (),
                        arrays["view_normals"] if len(arrays["view_normals"]) else None,
                        tuple(np.split(arrays["template_dev"], cut)) if len(arrays["template_dev"]) else ())

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

    def _view_matched_bank(self, pb: PartBank, reg: np.ndarray, test_valid: np.ndarray, *,
                           reg_tree: cKDTree | None = None):
        """The bank with template patches cropped to what the scan shows (``template_crop``).

        Returns ``(bank, coverage)``; with ``"views"``, the cached bank when the scan covers the
        reference.
        """
        from .visibility import coverage_mask, estimate_views

        reg_tree = reg_tree if reg_tree is not None else cKDTree(reg)
        cov = coverage_mask(pb.view_reference, reg, 0.25 * pb.radius, scan_tree=reg_tree)
        if self.template_crop == "support":
            return self._support_bank(pb, reg, test_valid, reg_tree=reg_tree), float(cov.mean())
        if cov.mean() >= self.full_coverage:
            return pb.bank, float(cov.mean())
        from .visibility import incidence_ok

        ve = estimate_views(pb.view_reference, cov, normals=pb.view_normals)
        F = pb.bank.features.copy()
        cols = np.nonzero(test_valid)[0]
        todo, where = [], []
        for g, (t, nn) in enumerate(zip(pb.templates, pb.template_nn)):
            vis = ve.visible[nn]
            if pb.template_normals:
                facing = np.zeros(len(t), dtype=bool)
                for cam in ve.cameras:
                    facing |= incidence_ok(t, pb.template_normals[g], cam)
                vis &= facing
            if not vis.any():
                continue
            ps = self._cropped_template_patches(pb, g, vis, cols)
            full = pb.counts[cols, g]
            # crop where the views hide part of the template patch; where they hide nearly all
            # of it although the scan has points there, keep the full patch (view estimate off)
            upd = (ps.counts < 0.9 * full) & (ps.counts >= np.maximum(8, 0.25 * full))
            if upd.any():
                todo.append(ps.patches[upd])
                where.append((cols[upd], g))
        self._fill_features(F, todo, where)
        return make_bank(self.bank_kind, F, pb.bank.valid, **self._bank_args()), float(cov.mean())

    def _cropped_template_patches(self, pb: PartBank, g: int, keep: np.ndarray, cols: np.ndarray):
        """Patches of template ``g`` cut to its points ``keep`` at the locations ``cols``,
        resampled with the template's own point keys (a patch the cut leaves whole is the fitted one).
        """
        return self._cut(pb.templates[g][keep], pb.centres[cols], radius=pb.radius,
                         num_points=self.patch_points, min_points=0,
                         point_keys=self._template_keys(pb, g, len(pb.templates[g]), pb.templates[g])[keep],
                         point_features=self._channel(pb.template_dev[g] if pb.template_dev else None,
                                                      pb.radius, keep))

    def _fill_features(self, F: np.ndarray, todo: list, where: list, V: np.ndarray | None = None) -> None:
        """One feature pass over the patch arrays ``todo``; the features of ``todo[i]`` go to
        ``F[js, g]`` (and ``V[js, g] = True``) for ``(js, g) = where[i]``.
        """
        if not todo:
            return
        new = self.extractor(np.concatenate(todo))
        o = 0
        for js, g in where:
            F[js, g] = new[o:o + len(js)]
            if V is not None:
                V[js, g] = True
            o += len(js)

    def _membership(self, pb: PartBank, g: int):
        """Sparse ``(P, N_g)`` matrix: which points of template ``g`` lie in each patch of ``pb``
        (built once per template array, kept in memory).
        """
        from scipy.sparse import csr_matrix

        t = pb.templates[g]
        hit = self._member_cache.get(id(t))
        if hit is not None and hit[0] is t and hit[1] == (pb.radius, len(pb.centres)):
            return hit[2]
        groups = cKDTree(t).query_ball_point(pb.centres, r=pb.radius, return_sorted=True)
        indptr = np.concatenate([[0], np.cumsum([len(x) for x in groups])])
        idx = np.concatenate([np.asarray(x, dtype=np.int64) for x in groups]) if indptr[-1] else np.zeros(0, np.int64)
        M = csr_matrix((np.ones(len(idx), dtype=np.int32), idx, indptr), shape=(len(pb.centres), len(t)))
        if len(self._member_cache) >= 64:
            self._member_cache.clear()
        self._member_cache[id(t)] = (t, (pb.radius, len(pb.centres)), M)
        return M

    def _support_bank(self, pb: PartBank, reg: np.ndarray, test_valid: np.ndarray, *,
                      reg_tree: cKDTree | None = None) -> MemoryBank:
        """A bank of the ``G`` full templates, each cut to its points within ``support_tolerance
        x R`` of a scan point, at the locations the scan shows (an addition to the paper).

        A test patch and its template patches then cover the same surface, whatever the view left
        out, so a patch that a view crops to a sliver is compared with slivers of the templates;
        material a defect moved by less than the tolerance stays in the templates. Template
        patches with fewer than 8 points are left out of their location's bank. A template patch
        the cut leaves whole keeps its feature from fitting: a template's points keep their
        resampling keys, so cutting it again would give the same patch.
        """
        G = len(pb.templates)
        P, d = pb.bank.features.shape[0], pb.bank.features.shape[2]
        F = np.zeros((P, G, d), dtype=np.float32)
        V = np.zeros((P, G), dtype=bool)
        cols = np.nonzero(test_valid)[0]
        tree = reg_tree if reg_tree is not None else cKDTree(reg)
        todo, where = [], []
        for g, t in enumerate(pb.templates):
            dist, _ = tree.query(t, k=1, distance_upper_bound=self.support_tolerance * pb.radius, workers=-1)
            keep = np.isfinite(dist)
            if not keep.any():
                continue
            M = self._membership(pb, g)
            full = np.diff(M.indptr)[cols]
            kept = (M[cols] @ keep.astype(np.int32)).astype(np.int64)
            whole = (kept == full) & pb.bank.valid[cols, g]
            F[cols[whole], g] = pb.bank.features[cols[whole], g]
            V[cols[whole], g] = True
            cut = cols[~whole & (kept >= 8)]
            if cut.size:
                ps = self._cropped_template_patches(pb, g, keep, cut)
                todo.append(ps.patches)
                where.append((cut, g))
        if not V.any() and not todo:  # no template surface near the scan: compare with the full templates
            return pb.bank
        self._fill_features(F, todo, where, V)
        return make_bank(self.bank_kind, F, V, **self._bank_args())
