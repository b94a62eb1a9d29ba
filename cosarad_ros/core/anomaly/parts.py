"""What every detector kind shares: the result types (:class:`DefectRegion`,
:class:`AnomalyScore`), the per-part-type bank (:class:`PartBank`), threshold calibration, defect
regions, and :class:`PartRegistry`, the base of :class:`~.detector.AnomalyDetector` and
:class:`~.deviation.DeviationDetector` (part banks, registration onto the reference, symmetry check).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import transform_points
from .memory_bank import MemoryBank

#: the fewest points a scan (or template) may have
MIN_SCAN_POINTS = 50


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
            removed or pushed in, ``scratch``: a narrow groove; ``anomaly`` when it cannot tell).
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
        templates: the ``G`` registered (thinned) templates behind the bank's columns.
        counts: ``(P, G)`` raw points of each bank member's patch.
        view_reference: ``(K, 3)`` thinned reference on which a scan's coverage is measured.
        groups: ``(G,)`` the template each bank column comes from (its index among the fitted
            templates; the leave-one-out sub-banks of calibration keep the original indices).
        template_normals: unoriented normals of ``templates`` (partial scans or deviation inputs).
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
    groups: np.ndarray | None = None
    template_normals: tuple = ()
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
        """Register ``source`` onto ``target`` (retries, lowest Chamfer; :func:`.template_align.align_to_reference`).

        The target goes in as a read-only float64 copy kept per target array, so the registration
        prepares a part type's reference (k-d tree, samples, normals, features) once, not per scan.
        ``symmetry=False`` skips the reference-only symmetry step (the detector's
        ``symmetry_check`` then tests the same poses against all templates).
        """
        from ..registration.template_align import align_to_reference

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
        symmetric counterparts (:func:`.template_align.symmetry_candidates`) whose points lie closest to
        all the templates: mean deviation (``surfaces()``, a zero-argument callable giving the
        part's :class:`.surfaces.TemplateSurfaces`) capped at twice the templates' point spacing,
        on 5000 scan points; the four candidates that score best on their coarse poses are
        polished (:func:`.template_align.refine_pose`) and compared. ``T`` is kept unless another pose
        is lower by more than ``min_gain`` (relative); a new pose is polished on the whole scan.
        ``slides`` > 0 adds the slid placements of a small view (``symmetry_candidates``'
        ``slides``).
        """
        from ..registration.cloud import readonly_memo
        from ..registration.template_align import refine_pose, symmetry_candidates

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
