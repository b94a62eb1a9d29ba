"""Training-free CAD classification of a scan (Kwon et al., Electronics 2025, sec. 3.5), with a
two-sided registration residual that works on partial scans and separates near-duplicates.

Steps:

1. pose-normalise the scan and measure its box ``(w, h, l)`` and volume
   (:func:`~cosarad_ros.core.cad.features.box_hypotheses`: the smallest robust box, the
   runners-up within 25 % of its volume and the frame of the scan's largest plane, since a
   partial scan of an L-shaped part can have a tilted smallest box). Extents leave at least
   ``min_trim_points`` points per side outside, so a few stray points do not inflate the box of
   a sparse scan; those points are left out of the registration too;
2. candidates, one-sided (a partial scan's box is truncated: the cell never sees the underside
   or the lowest 1.5 mm above the fixture): no sorted scan extent may exceed the model's by more
   than ``dim_tolerance``, and none may fall short of it by more than ``dim_tolerance`` plus
   :data:`FLOOR_CUT` plus ``max_shortfall`` of the model extent; a model's own
   ``tolerances.dimension`` metadata overrides ``dim_tolerance``;
3. the paper's similarity ``0.5 cos + 0.5 (1 - |v1 - v2| / (|v1| + |v2|))`` of the feature
   vectors ``(w, h, l, cbrt(V))``;
4. beyond the paper, coarse to fine (see :mod:`.align`): the seeds every candidate's boxes
   allow are screened on a few points (exact point-to-mesh distances); the candidates whose best
   seed is within 2x (RMS) of the best candidate's are registered coarsely (poses ranked in both
   directions); the ``max_registrations`` best are refined on more points and measured in
   both directions: the **residual** of the scan on the model (RMS of point-to-mesh distances,
   each capped at 3 mm, so scan points the model does not explain count fully), the
   **fitness** (share of the scan within 1 mm), the **extent gap** (how far the model's
   footprint or top reaches beyond the registered scan; the model frame's ``+z`` is up, as the
   part rests in the cell) and the **coverage** (share of the model surface that a cell sees
   from every side above, :mod:`.reference`, with a scan point within ``coverage_distance``).
   A near-duplicate 1.5 mm longer leaves the scan's end faces 0.75-1.5 mm off (residual); a
   larger part than the model leaves scan points far off (fitness); a smaller one leaves the
   model's ends bare (extent gap) or its visible surface uncovered (coverage);
5. the candidates that explain the scan (residual at most ``max_rmse``, fitness at least
   ``min_fitness``, extent gap at most ``max_extent_gap``, coverage at least ``min_coverage``)
   rank first, by score (the residual dominates it; the box similarity breaks near-ties, e.g.
   a twin 1 mm thicker, which a scan from above fits as well); the best of them is the
   label, unless none does: then
   ``"unknown"`` with every unmet criterion as the reason. Without any candidate: ``"unknown"``
   with the ``n_nearest`` models by box deviation.

Score in percent: ``100 * ((1 - registration_weight) * feature_sim + registration_weight *
residual_sim)``, ``residual_sim = 1 / (1 + (rmse / rmse_scale)^2)`` (``100 * feature_sim``
without registration, as in the paper).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy.spatial import cKDTree

from cosarad_ros.core.cad.align import Aligner, Alignment, BoxIcpAligner, coverage, make_aligner
from cosarad_ros.core.cad.features import (
    POSE_METHODS,
    VOLUME_MODES,
    BoxFeatures,
    box_features,
    box_hypotheses,
    feature_similarity,
)
from cosarad_ros.core.cad.library import CadLibrary, CadModel
from cosarad_ros.core.cad.quality import QualityReport, default_fpfh_voxel, mean_fpfh, quality_report
from cosarad_ros.core.cad.reference import ModelReference, model_reference
from cosarad_ros.core.geometry import as_points

__all__ = ["Candidate", "ClassificationResult", "CadClassifier", "classify", "UNKNOWN", "FLOOR_CUT"]

UNKNOWN = "unknown"
#: height above the fixture that the cell cuts away with it [m]
#: (:data:`cosarad_ros.core.inspection.fusion.DEFAULT_ROI`): a scan may be this much shorter
FLOOR_CUT = 0.0015
#: view directions whose visibility defines the model surface a scan must cover: elevations
#: [deg], and the share of all directions (12 azimuths each) that must see a surface sample
COVERAGE_ELEVATIONS = (30.0, 50.0, 70.0)
COVERAGE_VIEW_SHARE = 0.9


@dataclass(frozen=True)
class Candidate:
    """A CAD model that could be the scanned part (maps onto ``msg/ClassCandidate``).

    Attributes:
        label: model label.
        score: similarity in percent (0-100).
        deviation: ``(3,)`` scan box minus model box, per sorted axis [m].
        registration_rmse: residual of the scan registered onto the model [m] (RMS of capped
            point-to-mesh distances); -1 if not computed.
        feature_similarity: the paper's box-feature similarity in [0, 1].
        fitness: share of scan points within 1 mm of the model; -1 if not computed.
        within_tolerance: every box extent within the one-sided dimension gate.
        transform: ``(4, 4)`` scan -> model frame, or ``None`` when not registered.
        coverage: share of the model surface a cell sees from above that has a scan point
            nearby; -1 if not computed.
        extent_gap: largest amount the model's footprint or top reaches beyond the registered
            scan [m]; -1 if not computed.
    """

    label: str
    score: float
    deviation: np.ndarray
    registration_rmse: float = -1.0
    feature_similarity: float = 0.0
    fitness: float = -1.0
    within_tolerance: bool = True
    transform: np.ndarray | None = field(default=None, repr=False)
    coverage: float = -1.0
    extent_gap: float = -1.0

    def as_dict(self) -> dict:
        return {"label": self.label, "score": float(self.score),
                "deviation": [float(v) for v in self.deviation],
                "registration_rmse": float(self.registration_rmse),
                "feature_similarity": float(self.feature_similarity), "fitness": float(self.fitness),
                "within_tolerance": bool(self.within_tolerance), "coverage": float(self.coverage),
                "extent_gap": float(self.extent_gap),
                "transform": None if self.transform is None else np.asarray(self.transform).tolist()}


@dataclass(frozen=True)
class ClassificationResult:
    """Outcome of :func:`classify`.

    Attributes:
        label: best candidate, or ``"unknown"``.
        score: percent (0-100) of the best candidate (0 when unknown).
        candidates: best first; for ``"unknown"`` the nearest models.
        quality: ISO 25012 report of the scan against the chosen (or nearest) model, or ``None``.
        transform: ``(4, 4)`` scan -> model frame of the chosen (or nearest registered) model:
            the pose that seeds the inspection's registration.
        scan_dimensions: ``(3,)`` sorted box extents of the scan [m].
        reason: why the label is ``"unknown"`` ("" otherwise).
        reference_label: the model that ``quality`` and ``transform`` refer to ("" if none).
        timings: stage -> seconds.
        points_outside_box: scan points outside the robust scan box, left out of the registration
            residual (see ``CadClassifier(residual_in_box=...)``).
        fitness: share of scan points within 1 mm of that model after ``transform`` (-1: none).
        rmse: residual of the scan on that model after ``transform`` [m] (-1: none).
    """

    label: str
    score: float
    candidates: tuple[Candidate, ...]
    quality: QualityReport | None
    transform: np.ndarray | None = field(default=None, repr=False)
    scan_dimensions: np.ndarray = field(default_factory=lambda: np.zeros(3))
    reason: str = ""
    reference_label: str = ""
    timings: Mapping[str, float] = field(default_factory=dict, repr=False)
    points_outside_box: int = 0
    fitness: float = -1.0
    rmse: float = -1.0

    @property
    def known(self) -> bool:
        return self.label != UNKNOWN

    @property
    def box_match(self) -> str:
        """With label ``"unknown"``: the model whose box the scan fits although its shape does not
        explain the scan (a bent, broken or otherwise deviating part of that type, or a foreign
        part of the same size); "" otherwise.
        """
        if self.known or not self.candidates or not self.candidates[0].within_tolerance:
            return ""
        return self.reference_label if self.reference_label == self.candidates[0].label else ""

    def as_dict(self) -> dict:
        """JSON-friendly: ``label``, ``score``, ``candidates``, ``quality`` and details."""
        return {
            "label": self.label,
            "score": float(self.score),
            "candidates": [c.as_dict() for c in self.candidates],
            "quality": None if self.quality is None else self.quality.as_dict(),
            "scan_dimensions": [float(v) for v in self.scan_dimensions],
            "reason": self.reason,
            "reference_label": self.reference_label,
            "transform": None if self.transform is None else np.asarray(self.transform).tolist(),
            "fitness": float(self.fitness),
            "rmse": float(self.rmse),
            "box_match": self.box_match,
            "timings": {k: float(v) for k, v in self.timings.items()},
            "points_outside_box": int(self.points_outside_box),
        }


class CadClassifier:
    """Zero-shot classifier of scans against a :class:`CadLibrary`.

    Args:
        library: a :class:`CadLibrary` or a folder.
        dim_tolerance: largest amount by which a scan box extent may exceed the model's, and
            part of the allowed shortfall, per sorted axis [m] (paper: 1 mm, two-sided).
        cosine_weight: weight of the cosine term of the feature similarity (paper: 0.5).
        pose_method: ``"obb"`` (robust minimum-volume box) or ``"pca"`` (paper).
        extent_quantile: share of points allowed outside the scan box per side.
        min_trim_points: at least this many points per side are allowed outside the scan box
            (at most 2 % of the points): stray points (fixture points just above the crop, mixed
            pixels) do not become fewer in sparse scans (see :func:`~.features.box_features`).
            0: the quantile alone (paper-like).
        residual_in_box: the points outside the robust scan box are also left out of the
            registration and its residual. ``False``: every point.
        smooth_k: neighbours of the denoising plane projection before boxing (0 = off).
        volume_mode: ``"box"`` (paper) or ``"hull"`` (convex-hull volume).
        aligner: ``"box_icp"`` (default), ``"registration"``, ``"none"``/``None`` (paper only), a
            dict ``{"method": ..., **options}`` or an :class:`~.align.Aligner`.
        registration_weight: weight of the residual similarity in the score.
        rmse_scale: residual [m] at which the residual similarity is 0.5.
        max_rmse: residual [m] above which a candidate does not explain the scan.
        min_score: best score [%] below which the scan is "unknown".
        max_registrations: candidates (best coarse residual first) refined and scored in both
            directions; the others keep their coarse residual (``box_icp``), or are not
            registered (other aligners).
        n_nearest: nearest models reported with an "unknown" answer.
        compute_quality: attach the ISO 25012 report.
        quality_points: CAD surface samples used as quality reference.
        quality_options: keyword arguments of :func:`~.quality.quality_report`.
        box_max_points: random subset size for the box.
        max_shortfall: share of a model extent by which a scan extent may fall short (beyond
            ``dim_tolerance`` and :data:`FLOOR_CUT`): partial scans do not reach every extent.
        min_coverage: least share of the model surface seen from above (see :mod:`.reference`)
            that must have a scan point within ``coverage_distance`` (0 = no coverage test).
        coverage_distance: distance within which a model surface sample counts as covered [m].
        min_fitness: least share of scan points within 1 mm of a candidate that explains the
            scan (a larger part than the model leaves some of its points far off).
        max_extent_gap: largest amount [m] by which a candidate that explains the scan may reach
            beyond the registered scan at either end of its footprint or at its top (a smaller
            part than the model leaves the model's ends bare); the model frame's ``+z`` is up.
        cache_dir: folder that keeps each model's prepared reference on disk (see
            :mod:`.reference`); ``None``: memory only.
        seed: seed of every random subset.
    """

    def __init__(self, library, *, dim_tolerance: float = 0.003, cosine_weight: float = 0.5,
                 pose_method: str = "obb", extent_quantile: float = 0.0005, min_trim_points: int = 10,
                 residual_in_box: bool = True, smooth_k: int = 0,
                 volume_mode: str = "box", aligner: str | Mapping | Aligner | None = "box_icp",
                 registration_weight: float = 0.5, rmse_scale: float = 0.0002, max_rmse: float = 0.0005,
                 min_score: float = 0.0, max_registrations: int = 3, n_nearest: int = 3,
                 compute_quality: bool = True, quality_points: int = 20000,
                 quality_options: Mapping | None = None, box_max_points: int = 3000, max_shortfall: float = 0.15,
                 min_coverage: float = 0.5, coverage_distance: float = 0.003, min_fitness: float = 0.95,
                 max_extent_gap: float = 0.003, cache_dir=None, seed: int = 0):
        if isinstance(library, (str, os.PathLike)):
            library = CadLibrary(library)
        if not isinstance(library, CadLibrary):
            raise ValueError(f"library must be a CadLibrary or a folder, got {type(library).__name__}")
        if dim_tolerance <= 0:
            raise ValueError(f"dim_tolerance must be > 0 m, got {dim_tolerance}")
        if pose_method not in POSE_METHODS:
            raise ValueError(f"pose_method must be one of {POSE_METHODS}, got {pose_method!r}")
        if volume_mode not in VOLUME_MODES:
            raise ValueError(f"volume_mode must be one of {VOLUME_MODES}, got {volume_mode!r}")
        if not 0.0 <= registration_weight <= 1.0:
            raise ValueError(f"registration_weight must be in [0, 1], got {registration_weight}")
        if rmse_scale <= 0 or max_rmse <= 0:
            raise ValueError("rmse_scale and max_rmse must be > 0 m")
        if not 0.0 <= min_score <= 100.0:
            raise ValueError(f"min_score must be in [0, 100], got {min_score}")
        if max_registrations < 1 or n_nearest < 0 or quality_points < 100:
            raise ValueError("max_registrations >= 1, n_nearest >= 0 and quality_points >= 100 required")
        if not 0.0 <= cosine_weight <= 1.0:
            raise ValueError(f"cosine_weight must be in [0, 1], got {cosine_weight}")
        if min_trim_points < 0:
            raise ValueError(f"min_trim_points must be >= 0, got {min_trim_points}")
        if not 0.0 <= max_shortfall < 1.0:
            raise ValueError(f"max_shortfall must be in [0, 1), got {max_shortfall}")
        if not 0.0 <= min_coverage <= 1.0:
            raise ValueError(f"min_coverage must be in [0, 1], got {min_coverage}")
        if coverage_distance <= 0:
            raise ValueError(f"coverage_distance must be > 0 m, got {coverage_distance}")
        if not 0.0 <= min_fitness <= 1.0:
            raise ValueError(f"min_fitness must be in [0, 1], got {min_fitness}")
        if max_extent_gap <= 0:
            raise ValueError(f"max_extent_gap must be > 0 m, got {max_extent_gap}")
        if box_max_points < 100:
            raise ValueError(f"box_max_points must be >= 100, got {box_max_points}")
        self.library = library
        self.dim_tolerance = float(dim_tolerance)
        self.cosine_weight = float(cosine_weight)
        self.pose_method = pose_method
        self.extent_quantile = float(extent_quantile)
        self.min_trim_points = int(min_trim_points)
        self.smooth_k = int(smooth_k)
        self.residual_in_box = bool(residual_in_box)
        self.volume_mode = volume_mode
        self.aligner = make_aligner(aligner)
        self.registration_weight = float(registration_weight) if self.aligner is not None else 0.0
        self.rmse_scale = float(rmse_scale)
        self.max_rmse = float(max_rmse)
        self.min_score = float(min_score)
        self.max_registrations = int(max_registrations)
        self.n_nearest = int(n_nearest)
        self.compute_quality = bool(compute_quality)
        self.quality_points = int(quality_points)
        self.quality_options = dict(quality_options or {})
        self.box_max_points = int(box_max_points)
        self.max_shortfall = float(max_shortfall)
        self.min_coverage = float(min_coverage)
        self.coverage_distance = float(coverage_distance)
        self.min_fitness = float(min_fitness)
        self.max_extent_gap = float(max_extent_gap)
        self.cache_dir = None if cache_dir in (None, "") else os.fspath(cache_dir)
        self.seed = int(seed)

    # ------------------------------------------------------------------------------------------
    def _model_vector(self, model: CadModel) -> np.ndarray:
        v = self.model_box(model).vector()
        if self.volume_mode == "hull":
            v = v.copy()
            v[3] = np.cbrt(model.hull_volume)
        return v

    def reference(self, model: CadModel) -> ModelReference:
        """The model's prepared reference (box, samples, surface seen from above; cached by content)."""
        return model_reference(model, elevation_deg=COVERAGE_ELEVATIONS, min_view_share=COVERAGE_VIEW_SHARE,
                               cache_dir=self.cache_dir)

    def model_box(self, model: CadModel) -> BoxFeatures:
        return self.reference(model).box if self.pose_method == "obb" else _pca_box(model)

    def scan_box(self, scan) -> BoxFeatures:
        """Pose-normalised box of a scan with this classifier's settings."""
        return box_features(scan, method=self.pose_method, quantile=self.extent_quantile,
                            smooth_k=self.smooth_k, volume_mode=self.volume_mode,
                            max_points=self.box_max_points, seed=self.seed, min_trim=self.min_trim_points)

    def scan_boxes(self, scan) -> list[BoxFeatures]:
        """The scan's box hypotheses (smallest first) with this classifier's settings."""
        return box_hypotheses(scan, method=self.pose_method, quantile=self.extent_quantile,
                              smooth_k=self.smooth_k, volume_mode=self.volume_mode,
                              max_points=self.box_max_points, seed=self.seed, min_trim=self.min_trim_points)

    @staticmethod
    def inside_box(pts: np.ndarray, box: BoxFeatures, margin: float = 1e-9) -> np.ndarray:
        """``(N,)`` bool: the points within ``box`` (its frame and extents) plus ``margin`` [m]."""
        local = (pts - box.frame[:3, 3]) @ box.frame[:3, :3]
        return np.all(np.abs(local) <= box.dimensions / 2.0 + margin, axis=1)

    def _residual_similarity(self, rmse: float) -> float:
        return 1.0 / (1.0 + (rmse / self.rmse_scale) ** 2)

    def _reference_fpfh(self, model: CadModel, ref_pts: np.ndarray) -> np.ndarray:
        """Mean FPFH of the model's reference samples, cached on the model per settings."""
        opts = self.quality_options
        vs = opts.get("fpfh_voxel") or default_fpfh_voxel(ref_pts)
        key = (self.quality_points, self.seed, vs, opts.get("fpfh_normal_radius"), opts.get("fpfh_feature_radius"))
        cache = model.__dict__.setdefault("_fpfh", {})
        if key not in cache:
            cache[key] = mean_fpfh(ref_pts, voxel_size=vs, normal_radius=opts.get("fpfh_normal_radius"),
                                   feature_radius=opts.get("fpfh_feature_radius"))
        return cache[key]

    def _gate(self, boxes: list[BoxFeatures], model: CadModel) -> tuple[np.ndarray, list[BoxFeatures]]:
        """Box deviation ``(3,)`` (of the scan box nearest to the model's) and the scan boxes
        that pass the one-sided gate against ``model``.
        """
        mdims = self.model_box(model).dimensions
        tol = float(model.tolerances.get("dimension", self.dim_tolerance))
        low = -tol - FLOOR_CUT - self.max_shortfall * mdims
        devs = [b.dimensions - mdims for b in boxes]
        ok = [b for b, d in zip(boxes, devs) if np.all((d <= tol) & (d >= low))]
        return min(devs, key=lambda d: float(np.max(np.abs(d)))), ok

    def _coverage(self, model: CadModel, tree: cKDTree, transform: np.ndarray) -> float:
        return coverage(self.reference(model), tree, transform, self.coverage_distance)

    def _extent_gap(self, model: CadModel, pts: np.ndarray, transform: np.ndarray) -> float:
        """Largest amount [m] by which the model's footprint (both ends of its frame's x and y)
        or its top extends beyond the scan moved by ``transform`` (robust scan extents that
        leave ``min_trim_points`` points outside); the underside is never seen.
        """
        q = pts @ transform[:3, :3].T + transform[:3, 3]
        n = len(q)
        k = min(self.min_trim_points, n // 50)
        part = np.partition(q, [k, n - 1 - k], axis=0)
        lo, hi = part[k], part[n - 1 - k]
        b = np.asarray(model.mesh.bounds, dtype=np.float64)
        return float(max(lo[0] - b[0, 0], b[1, 0] - hi[0], lo[1] - b[0, 1], b[1, 1] - hi[1], b[1, 2] - hi[2]))

    def _unexplained(self, c: Candidate) -> list[str]:
        """What a registered candidate fails to explain (empty: it explains the scan)."""
        out = []
        if c.registration_rmse > self.max_rmse:
            out.append(f"the registration residual {c.registration_rmse * 1000:.3g} mm exceeds "
                       f"{self.max_rmse * 1000:.3g} mm")
        if c.fitness < self.min_fitness:
            out.append(f"only {100 * c.fitness:.1f} % of the scan lies within 1 mm of it "
                       f"(at least {100 * self.min_fitness:.0f} % required)")
        if c.extent_gap > self.max_extent_gap:
            out.append(f"the model reaches {c.extent_gap * 1000:.3g} mm beyond the scan seen from above "
                       f"(at most {self.max_extent_gap * 1000:.3g} mm)")
        if self.min_coverage > 0 and c.coverage < self.min_coverage:
            out.append(f"the scan covers only {100 * c.coverage:.1f} % of its surface seen from above "
                       f"(at least {100 * self.min_coverage:.0f} % required)")
        return out

    def _explains(self, c: Candidate) -> bool:
        return c.registration_rmse >= 0 and c.coverage >= 0 and not self._unexplained(c)

    def _register(self, pts: np.ndarray, gated: list, prior: np.ndarray | None = None) -> list[Candidate]:
        """Seeds of every gated candidate screened, coarse registration of those whose best seed
        is within 2x (RMS) of the best candidate's, fine registration and the measures of both
        directions for the ``max_registrations`` best. ``gated``: ``(model, dev, boxes, sim)`` rows.
        """
        w = self.registration_weight
        out: list[Candidate] = []
        if self.aligner is None:
            return [Candidate(m.label, 100.0 * sim, dev, -1.0, sim, -1.0, True, None) for m, dev, _, sim in gated]
        tree = cKDTree(pts)
        if isinstance(self.aligner, BoxIcpAligner):
            # cheapest first: the seeds of every candidate on a few points; a candidate whose best
            # seed is more than twice as far off (RMS) as the best candidate's goes no further
            # (measured: the right model's best seed is within 1.3x of the best one)
            screened = [(self.aligner.screen(pts, boxes, model, self.model_box(model), prior=prior), model, dev, boxes,
                         sim)
                        for model, dev, boxes, sim in gated]
            floor = min((r[0][1] for r in screened), default=0.0)
            coarse = []
            for (seeds, screen_cost), model, dev, boxes, sim in screened:
                if screen_cost > 4.0 * floor:
                    out.append(Candidate(model.label, 100.0 * (1.0 - w) * sim, dev, -1.0, sim, -1.0, True, None))
                    continue
                T, cost = self.aligner.coarse(pts, boxes, model, self.reference(model), self.model_box(model), tree,
                                              seeds=seeds)
                coarse.append((cost, model, dev, sim, T))
            coarse.sort(key=lambda r: r[0])
            for i, (cost, model, dev, sim, T) in enumerate(coarse):
                # the fine stage for the best few, and only where the coarse residual is within
                # 3x of the best one (a near-duplicate stays; another shape does not)
                if i < self.max_registrations and cost <= 9.0 * coarse[0][0]:
                    ref = self.reference(model)
                    al = self.aligner.refine(pts, T, model, ref, self.model_box(model))
                    cov = self._coverage(model, tree, al.transform)
                    gap = self._extent_gap(model, pts, al.transform)
                else:
                    al = Alignment(transform=T, rmse=float(np.sqrt(cost)), fitness=-1.0, median=-1.0)
                    cov, gap = -1.0, -1.0
                s = (1.0 - w) * sim + w * self._residual_similarity(al.rmse)
                out.append(Candidate(model.label, 100.0 * s, dev, al.rmse, sim, al.fitness, True, al.transform, cov,
                                     gap))
        else:
            for i, (model, dev, boxes, sim) in enumerate(gated):
                if i < self.max_registrations:
                    al = self.aligner.align(pts, boxes[0], model)
                    cov = self._coverage(model, tree, al.transform)
                    gap = self._extent_gap(model, pts, al.transform)
                    s = (1.0 - w) * sim + w * self._residual_similarity(al.rmse)
                    out.append(Candidate(model.label, 100.0 * s, dev, al.rmse, sim, al.fitness, True, al.transform,
                                         cov, gap))
                else:
                    out.append(Candidate(model.label, 100.0 * (1.0 - w) * sim, dev, -1.0, sim, -1.0, True, None))
        refined = [c for c in out if c.coverage >= 0]
        rest = sorted((c for c in out if c.coverage < 0), key=lambda c: -c.score)
        refined.sort(key=lambda c: (not self._explains(c), -c.score))
        return refined + rest

    def classify(self, scan, *, prior: np.ndarray | None = None) -> ClassificationResult:
        """Classify ``scan`` ``(N, 3)`` [m, any frame, N >= 10]. See the module docstring.

        ``prior``: ``(4, 4)`` scan -> model pose expected for whichever model the part is (a part
        on a cell's fixture, scanned in the part frame: identity); the ``box_icp`` registration
        tries it first for every candidate, besides the box seeds. It adds a seed, not a verdict:
        a candidate must still explain the scan.

        Raises:
            ValueError: malformed scan (shape, NaN, too few points, no extent).
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        raw = as_points(scan, name="scan", min_points=10)
        boxes = self.scan_boxes(raw)
        box = boxes[0]
        pts = raw
        if self.residual_in_box:
            inside = np.any([self.inside_box(raw, b) for b in boxes], axis=0)
            if inside.sum() >= max(10, 0.5 * len(raw)):
                pts = raw[inside]
        vec = box.vector()
        rows = []
        for model in self.library.models:
            dev, ok = self._gate(boxes, model)
            sim = feature_similarity(vec, self._model_vector(model), cosine_weight=self.cosine_weight)
            rows.append((model, dev, ok, sim))
        gated = sorted(((m, d, ok, s) for m, d, ok, s in rows if ok), key=lambda r: -r[3])
        timings["features"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        candidates = self._register(pts, gated, prior)
        timings["register"] = time.perf_counter() - t1

        label, score, reason = UNKNOWN, 0.0, ""
        if not self.library.models:
            reason = "the CAD library is empty"
        elif not candidates:
            near = sorted(rows, key=lambda r: float(np.max(np.abs(r[1]))))[: self.n_nearest]
            candidates = [Candidate(m.label, 100.0 * sim, dev, -1.0, sim, -1.0, False, None)
                          for m, dev, _, sim in near]
            best = candidates[0] if candidates else None
            reason = (f"no CAD model within {self.dim_tolerance * 1000:.3g} mm on all box axes "
                      f"(a scan extent may also fall short by {(self.dim_tolerance + FLOOR_CUT) * 1000:.3g} mm "
                      f"+ {100 * self.max_shortfall:.0f} %; scan box {np.round(box.dimensions * 1000, 2).tolist()} mm"
                      + (f"; nearest {best.label} off by {np.round(best.deviation * 1000, 2).tolist()} mm)"
                         if best else ")"))
        else:
            best = candidates[0]
            failed = self._unexplained(best) if best.coverage >= 0 else []
            if failed:
                reason = f"box matches {best.label} but " + "; ".join(failed)
            elif best.score < self.min_score:
                reason = f"best score {best.score:.1f} % below {self.min_score:.1f} %"
            else:
                label, score = best.label, float(best.score)

        quality, transform, ref_label = None, None, ""
        fitness, rmse = -1.0, -1.0
        if candidates:
            ref = candidates[0]
            model = self.library.get(ref.label)
            transform = ref.transform
            fitness, rmse = ref.fitness, ref.registration_rmse
            if transform is None and self.compute_quality:
                t2 = time.perf_counter()
                aligner = self.aligner or make_aligner("box_icp")
                al = aligner.align(pts, box, model)
                transform, fitness, rmse = al.transform, al.fitness, al.rmse
                timings["register"] += time.perf_counter() - t2
            ref_label = ref.label
            if self.compute_quality:
                t3 = time.perf_counter()
                # the quality judges the scan as delivered, strays included (validity, accuracy)
                moved = raw @ transform[:3, :3].T + transform[:3, 3]
                ref_pts, _ = model.sample(self.quality_points, seed=self.seed)
                quality = quality_report(moved, ref_pts, reference_descriptor=self._reference_fpfh(model, ref_pts),
                                         **self.quality_options)
                timings["quality"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0
        return ClassificationResult(label=label, score=score, candidates=tuple(candidates), quality=quality,
                                    transform=transform, scan_dimensions=box.dimensions, reason=reason,
                                    reference_label=ref_label, timings=timings,
                                    points_outside_box=int(len(raw) - len(pts)), fitness=float(fitness),
                                    rmse=float(rmse))


def _pca_box(model: CadModel) -> BoxFeatures:
    cache = model.__dict__.setdefault("_pca_box", {})
    if "box" not in cache:
        pts, _ = model.sample(20000, seed=0)
        cache["box"] = box_features(pts, method="pca", quantile=0.0, smooth_k=0, max_points=len(pts))
    return cache["box"]


def classify(scan, library, **options) -> ClassificationResult:
    """Classify a scan against a CAD library (see :class:`CadClassifier` for ``options``).

    Args:
        scan: ``(N, 3)`` points [m], any frame.
        library: :class:`CadLibrary` or its folder.
        **options: :class:`CadClassifier` settings (``dim_tolerance``, ``aligner``, ...).

    Returns:
        :class:`ClassificationResult` (label ``"unknown"`` possible).
    """
    return CadClassifier(library, **options).classify(scan)
