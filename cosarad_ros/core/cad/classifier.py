"""Training-free CAD classification of a scan (Kwon et al., Electronics 2025, sec. 3.5), with a
registration residual that separates parts whose bounding boxes are equal.

Steps:

1. pose-normalise the scan and measure its box ``(w, h, l)`` and volume
   (:func:`~cosarad_ros.core.cad.features.box_features`; robust extents that leave at least
   ``min_trim_points`` points per side outside, so a few stray points do not inflate the box of
   a sparse scan; those points are left out of the registration residual of step 4 too);
2. candidates: models whose sorted box extents are all within ``dim_tolerance`` (paper: 1 mm) of
   the scan's; a model's own ``tolerances.dimension`` metadata overrides it;
3. rank them by the paper's similarity ``0.5 cos + 0.5 (1 - |v1 - v2| / (|v1| + |v2|))`` of the
   feature vectors ``(w, h, l, cbrt(V))``;
4. beyond the paper: register the scan onto every candidate (see :mod:`.align`) and blend in a
   residual similarity ``1 / (1 + (rmse / rmse_scale)^2)``. Parts with equal boxes but different
   features (a hole, a pocket, a chamfer) differ in residual, and a scan whose residual on the best
   candidate exceeds ``max_rmse`` is "unknown" even though its box matched;
5. no candidate: ``"unknown"`` with the nearest models and their box deviations.

Score in percent: ``100 * ((1 - registration_weight) * feature_sim + registration_weight * residual_sim)``
(``100 * feature_sim`` without registration, as in the paper).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from cosarad_ros.core.cad.align import Aligner, make_aligner
from cosarad_ros.core.cad.features import POSE_METHODS, VOLUME_MODES, BoxFeatures, box_features, feature_similarity
from cosarad_ros.core.cad.library import CadLibrary, CadModel
from cosarad_ros.core.cad.quality import QualityReport, default_fpfh_voxel, mean_fpfh, quality_report
from cosarad_ros.core.geometry import as_points

__all__ = ["Candidate", "ClassificationResult", "CadClassifier", "classify", "UNKNOWN"]

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Candidate:
    """A CAD model that could be the scanned part (maps onto ``msg/ClassCandidate``).

    Attributes:
        label: model label.
        score: similarity in percent (0-100).
        deviation: ``(3,)`` scan box minus model box, per sorted axis [m].
        registration_rmse: residual of the scan registered onto the model [m]; -1 if not computed.
        feature_similarity: the paper's box-feature similarity in [0, 1].
        fitness: share of scan points within the inlier distance of the model; -1 if not computed.
        within_tolerance: every box extent within the dimension tolerance.
        transform: ``(4, 4)`` scan -> model frame, or ``None`` when not registered.
    """

    label: str
    score: float
    deviation: np.ndarray
    registration_rmse: float = -1.0
    feature_similarity: float = 0.0
    fitness: float = -1.0
    within_tolerance: bool = True
    transform: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {"label": self.label, "score": float(self.score),
                "deviation": [float(v) for v in self.deviation],
                "registration_rmse": float(self.registration_rmse),
                "feature_similarity": float(self.feature_similarity), "fitness": float(self.fitness),
                "within_tolerance": bool(self.within_tolerance)}


@dataclass(frozen=True)
class ClassificationResult:
    """Outcome of :func:`classify`.

    Attributes:
        label: best candidate, or ``"unknown"``.
        score: percent (0-100) of the best candidate (0 when unknown without candidates).
        candidates: best first; for ``"unknown"`` the nearest models.
        quality: ISO 25012 report of the scan against the chosen (or nearest) model, or ``None``.
        transform: ``(4, 4)`` scan -> model frame of the chosen (or nearest registered) model.
        scan_dimensions: ``(3,)`` sorted box extents of the scan [m].
        reason: why the label is ``"unknown"`` ("" otherwise).
        reference_label: the model that ``quality`` and ``transform`` refer to ("" if none).
        timings: stage -> seconds.
        points_outside_box: scan points outside the robust scan box, left out of the registration
            residual (see ``CadClassifier(residual_in_box=...)``).
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

    @property
    def known(self) -> bool:
        return self.label != UNKNOWN

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
            "timings": {k: float(v) for k, v in self.timings.items()},
            "points_outside_box": int(self.points_outside_box),
        }


class CadClassifier:
    """Zero-shot classifier of scans against a :class:`CadLibrary`.

    Args:
        library: a :class:`CadLibrary` or a folder.
        dim_tolerance: largest box-extent deviation of a candidate, per axis [m] (paper: 1 mm).
        cosine_weight: weight of the cosine term of the feature similarity (paper: 0.5).
        pose_method: ``"obb"`` (robust minimum-volume box) or ``"pca"`` (paper).
        extent_quantile: share of points allowed outside the scan box per side.
        min_trim_points: at least this many points per side are allowed outside the scan box
            (at most 2 % of the points): stray points (fixture / table points just above the
            crop, mixed pixels) do not become fewer in sparse scans such as the cell's fused
            survey (see :func:`~.features.box_features`). 0: the quantile alone (paper-like).
        residual_in_box: the points outside the robust scan box (the strays the box ignores) are
            also left out of the registration and its residual; a handful of stray points
            millimetres off the part raise the RMS residual of a sparse scan by tenths of a
            millimetre. ``False``: every point.
        smooth_k: neighbours of the denoising plane projection before boxing (0 = off).
        volume_mode: ``"box"`` (paper) or ``"hull"`` (convex-hull volume).
        aligner: ``"box_icp"`` (default), ``"registration"``, ``"none"``/``None`` (paper only), a
            dict ``{"method": ..., **options}`` or an :class:`~.align.Aligner`.
        registration_weight: weight of the residual similarity in the score.
        rmse_scale: residual [m] at which the residual similarity is 0.5.
        max_rmse: best candidate's residual [m] above which the scan is "unknown".
        min_score: best score [%] below which the scan is "unknown".
        max_registrations: at most this many candidates (best feature similarity first) are
            registered; the rest keep their feature score.
        n_nearest: nearest models reported with an "unknown" answer.
        compute_quality: attach the ISO 25012 report.
        quality_points: CAD surface samples used as quality reference.
        quality_options: keyword arguments of :func:`~.quality.quality_report`.
        box_max_points: random subset size for the box.
        max_shortfall: beyond the paper, for partial scans that may not reach every extent: a
            scan extent may also fall short of the model's by this share of the model extent
            (0 = the paper's symmetric tolerance). The registration residual then ranks.
        seed: seed of every random subset.
    """

    def __init__(self, library, *, dim_tolerance: float = 0.001, cosine_weight: float = 0.5,
                 pose_method: str = "obb", extent_quantile: float = 0.0005, min_trim_points: int = 10,
                 residual_in_box: bool = True, smooth_k: int = 0,
                 volume_mode: str = "box", aligner: str | Mapping | Aligner | None = "box_icp",
                 registration_weight: float = 0.5, rmse_scale: float = 0.0002, max_rmse: float = 0.0005,
                 min_score: float = 0.0, max_registrations: int = 6, n_nearest: int = 3,
                 compute_quality: bool = True, quality_points: int = 20000,
                 quality_options: Mapping | None = None, box_max_points: int = 20000, max_shortfall: float = 0.0,
                 seed: int = 0):
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
        self.library = library
        self.dim_tolerance = float(dim_tolerance)
        self.cosine_weight = float(cosine_weight)
        self.pose_method = pose_method
        self.extent_quantile = float(extent_quantile)
        if min_trim_points < 0:
            raise ValueError(f"min_trim_points must be >= 0, got {min_trim_points}")
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
        if not 0.0 <= max_shortfall < 1.0:
            raise ValueError(f"max_shortfall must be in [0, 1), got {max_shortfall}")
        self.max_shortfall = float(max_shortfall)
        self.seed = int(seed)

    # ------------------------------------------------------------------------------------------
    def _model_vector(self, model: CadModel) -> np.ndarray:
        v = model.box.vector()
        if self.volume_mode == "hull":
            v = v.copy()
            v[3] = np.cbrt(model.hull_volume)
        return v

    def model_box(self, model: CadModel) -> BoxFeatures:
        return model.box if self.pose_method == "obb" else _pca_box(model)

    def scan_box(self, scan) -> BoxFeatures:
        """Pose-normalised box of a scan with this classifier's settings."""
        return box_features(scan, method=self.pose_method, quantile=self.extent_quantile,
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

    def classify(self, scan) -> ClassificationResult:
        """Classify ``scan`` ``(N, 3)`` [m, any frame, N >= 10]. See the module docstring.

        Raises:
            ValueError: malformed scan (shape, NaN, too few points, no extent).
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        raw = as_points(scan, name="scan", min_points=10)
        box = self.scan_box(raw)
        pts = raw
        if self.residual_in_box:
            inside = self.inside_box(raw, box)
            if inside.sum() >= max(10, 0.5 * len(raw)):
                pts = raw[inside]
        vec = box.vector()
        timings["features"] = time.perf_counter() - t0

        rows = []
        for model in self.library.models:
            mbox = self.model_box(model)
            dev = box.dimensions - mbox.dimensions
            tol = float(model.tolerances.get("dimension", self.dim_tolerance))
            sim = feature_similarity(vec, self._model_vector(model), cosine_weight=self.cosine_weight)
            low = -tol - self.max_shortfall * mbox.dimensions
            rows.append((model, dev, bool(np.all((dev <= tol) & (dev >= low))), sim))
        inside = sorted((r for r in rows if r[2]), key=lambda r: -r[3])

        t1 = time.perf_counter()
        candidates: list[Candidate] = []
        for i, (model, dev, _, sim) in enumerate(inside):
            if self.aligner is not None and i < self.max_registrations:
                al = self.aligner.align(pts, box, model)
                s = (1.0 - self.registration_weight) * sim + self.registration_weight * self._residual_similarity(al.rmse)
                candidates.append(Candidate(model.label, 100.0 * s, dev, al.rmse, sim, al.fitness, True, al.transform))
            else:
                s = sim if self.aligner is None else (1.0 - self.registration_weight) * sim
                candidates.append(Candidate(model.label, 100.0 * s, dev, -1.0, sim, -1.0, True, None))
        candidates.sort(key=lambda c: -c.score)
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
                      f"(scan box {np.round(box.dimensions * 1000, 2).tolist()} mm"
                      + (f"; nearest {best.label} off by {np.round(best.deviation * 1000, 2).tolist()} mm)"
                         if best else ")"))
        else:
            best = candidates[0]
            if best.registration_rmse >= 0 and best.registration_rmse > self.max_rmse:
                reason = (f"box matches {best.label} but the registration residual "
                          f"{best.registration_rmse * 1000:.3g} mm exceeds {self.max_rmse * 1000:.3g} mm")
            elif best.score < self.min_score:
                reason = f"best score {best.score:.1f} % below {self.min_score:.1f} %"
            else:
                label, score = best.label, float(best.score)

        quality, transform, ref_label = None, None, ""
        if candidates:
            ref = candidates[0]
            model = self.library.get(ref.label)
            transform = ref.transform
            if transform is None and self.compute_quality:
                t2 = time.perf_counter()
                aligner = self.aligner or make_aligner("box_icp")
                transform = aligner.align(pts, box, model).transform
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
                                    points_outside_box=int(len(raw) - len(pts)))


def _pca_box(model: CadModel) -> BoxFeatures:
    cache = model.__dict__.setdefault("_pca_box", {})
    if "box" not in cache:
        pts, _ = model.sample(20000, seed=0)
        cache["box"] = box_features(pts, method="pca", quantile=0.0, smooth_k=0, max_points=len(pts))
    return cache["box"]


def classify(scan, library, *, dim_tolerance: float = 0.001, **options) -> ClassificationResult:
    """Classify a scan against a CAD library (see :class:`CadClassifier` for ``options``).

    Args:
        scan: ``(N, 3)`` points [m], any frame.
        library: :class:`CadLibrary` or its folder.
        dim_tolerance: box tolerance per axis [m] (paper: 1 mm).

    Returns:
        :class:`ClassificationResult` (label ``"unknown"`` possible).
    """
    return CadClassifier(library, dim_tolerance=dim_tolerance, **options).classify(scan)
