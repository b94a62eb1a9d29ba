"""ISO/IEC 25012 data-quality scores of a scan against its reference (Kwon et al., Electronics
2025, sec. 3.6).

ISO/IEC 25012:2008 ("Software engineering - SQuaRE - Data quality model") names the inherent
data-quality characteristics; Kwon et al. turn five of them into point-cloud measures, each in
[0, 1] (1 = best), and a weighted total:

============  ======  ==================================================================
metric        weight  measure
============  ======  ==================================================================
accuracy      0.10    ``1 - CD / diag``: bidirectional Chamfer distance ``CD`` (mean nearest
                      distance scan->reference plus reference->scan, Fan et al., CVPR 2017)
                      over the reference bounding-box diagonal
consistency   0.30    cosine similarity of the mean FPFH descriptors (Rusu et al., ICRA 2009)
completeness  0.20    share of reference points with a scan point within ``tolerance``
validity      0.20    share of scan points whose distance to the centroid lies in
                      ``mu +- 2 sigma`` of those distances
uniqueness    0.20    occupied voxels / points (1 = no duplicated points)
============  ======  ==================================================================

The scan and the reference must be in the same frame and unit (metres) for accuracy and
completeness; consistency, validity and uniqueness do not need alignment. Uniqueness uses a
0.1 mm voxel by default: the paper's voxel of 0.1 in its millimetre data, i.e. a cell well below
the point spacing of an industrial scan, so that only duplicated or near-duplicated points share
a voxel. Grades: A >= 0.9, B >= 0.8, C >= 0.7, D >= 0.6, E >= 0.5, else F (configurable).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree

from cosarad_ros.core.geometry import as_points

__all__ = [
    "QualityReport",
    "QUALITY_WEIGHTS",
    "GRADE_THRESHOLDS",
    "quality_report",
    "chamfer_distance",
    "accuracy_score",
    "consistency_score",
    "completeness_score",
    "validity_score",
    "uniqueness_score",
    "grade_for",
    "mean_fpfh",
    "default_fpfh_voxel",
]

QUALITY_WEIGHTS: dict[str, float] = {
    "accuracy": 0.10, "consistency": 0.30, "completeness": 0.20, "validity": 0.20, "uniqueness": 0.20,
}
GRADE_THRESHOLDS: tuple[tuple[str, float], ...] = (("A", 0.9), ("B", 0.8), ("C", 0.7), ("D", 0.6), ("E", 0.5))


@dataclass(frozen=True)
class QualityReport:
    """ISO/IEC 25012 scores in [0, 1] (see the module docstring) and the grade.

    Maps one-to-one onto ``cosarad_ros/msg/QualityReport``; ``chamfer`` [m] and ``weights`` are
    extra detail.
    """

    accuracy: float
    consistency: float
    completeness: float
    validity: float
    uniqueness: float
    total: float
    grade: str
    chamfer: float = float("nan")
    weights: Mapping[str, float] = field(default_factory=lambda: dict(QUALITY_WEIGHTS), repr=False)

    def as_dict(self) -> dict:
        """JSON-friendly dict (floats and the grade)."""
        d = asdict(self)
        d["weights"] = dict(self.weights)
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in d.items()}


def chamfer_distance(a, b) -> float:
    """Bidirectional Chamfer distance ``mean_a min_b |a - b| + mean_b min_a |b - a|`` [m]."""
    a = as_points(a, name="scan")
    b = as_points(b, name="reference")
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    return float(da.mean() + db.mean())


def _diag(points: np.ndarray) -> float:
    return float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))


def accuracy_score(scan, reference) -> tuple[float, float]:
    """``(1 - CD / diag(reference), CD)`` clipped to [0, 1]; ``CD`` in metres."""
    ref = as_points(reference, name="reference")
    diag = _diag(ref)
    if diag <= 0:
        raise ValueError("reference has no spatial extent")
    cd = chamfer_distance(scan, ref)
    return float(np.clip(1.0 - cd / diag, 0.0, 1.0)), cd


def completeness_score(scan, reference, *, tolerance: float = 0.001) -> float:
    """Share of reference points with a scan point within ``tolerance`` [m]."""
    if tolerance <= 0:
        raise ValueError(f"completeness tolerance must be > 0, got {tolerance}")
    s = as_points(scan, name="scan")
    ref = as_points(reference, name="reference")
    d, _ = cKDTree(s).query(ref, distance_upper_bound=tolerance)
    return float(np.mean(np.isfinite(d) & (d <= tolerance)))


def validity_score(scan, *, n_sigma: float = 2.0) -> float:
    """Share of points whose centroid distance lies within ``mu +- n_sigma * sigma``."""
    s = as_points(scan, name="scan")
    if n_sigma <= 0:
        raise ValueError(f"n_sigma must be > 0, got {n_sigma}")
    r = np.linalg.norm(s - s.mean(axis=0), axis=1)
    mu, sd = r.mean(), r.std()
    return float(np.mean(np.abs(r - mu) <= n_sigma * sd + 1e-15))


def uniqueness_score(scan, *, voxel_size: float = 1e-4) -> float:
    """Occupied voxels / points for a voxel grid of ``voxel_size`` [m] (1 = no duplicates)."""
    s = as_points(scan, name="scan")
    if voxel_size <= 0:
        raise ValueError(f"uniqueness voxel_size must be > 0, got {voxel_size}")
    keys = np.floor((s - s.min(axis=0)) / voxel_size).astype(np.int64)
    return float(len(np.unique(keys, axis=0)) / len(s))


def mean_fpfh(points, *, voxel_size: float, normal_radius: float | None = None,
              feature_radius: float | None = None, max_nn: int = 100) -> np.ndarray:
    """Mean FPFH descriptor ``(33,)`` of a cloud after voxel down-sampling.

    Down-sampling both clouds to one voxel size makes the descriptors of a scan and of a densely
    sampled reference comparable. Radii default to 2 and 5 voxels.
    """
    import open3d as o3d

    pts = as_points(points, name="points")
    if voxel_size <= 0:
        raise ValueError(f"FPFH voxel_size must be > 0, got {voxel_size}")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd = pcd.voxel_down_sample(voxel_size)
    if len(pcd.points) < 5:
        raise ValueError(f"too few points ({len(pcd.points)}) after {voxel_size} m voxel down-sampling for FPFH")
    nr = 2.0 * voxel_size if normal_radius is None else normal_radius
    fr = 5.0 * voxel_size if feature_radius is None else feature_radius
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=nr, max_nn=30))
    feat = o3d.pipelines.registration.compute_fpfh_feature(
        pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=fr, max_nn=max_nn))
    return np.asarray(feat.data).mean(axis=1)


def default_fpfh_voxel(reference) -> float:
    """Default FPFH voxel: 1/50 of the reference bounding-box diagonal [m]."""
    return _diag(as_points(reference, name="reference")) / 50.0


def consistency_score(scan, reference, *, voxel_size: float | None = None,
                      normal_radius: float | None = None, feature_radius: float | None = None,
                      reference_descriptor=None) -> float:
    """Cosine similarity of the mean FPFH descriptors of scan and reference.

    ``voxel_size`` defaults to :func:`default_fpfh_voxel`. ``reference_descriptor`` ``(33,)``:
    the reference's mean FPFH computed before with the same settings (skips recomputing it).
    """
    s = as_points(scan, name="scan")
    ref = as_points(reference, name="reference")
    vs = default_fpfh_voxel(ref) if voxel_size is None else voxel_size
    a = mean_fpfh(s, voxel_size=vs, normal_radius=normal_radius, feature_radius=feature_radius)
    if reference_descriptor is None:
        b = mean_fpfh(ref, voxel_size=vs, normal_radius=normal_radius, feature_radius=feature_radius)
    else:
        b = np.asarray(reference_descriptor, dtype=np.float64).reshape(-1)
        if b.shape != a.shape:
            raise ValueError(f"reference_descriptor must have shape {a.shape}, got {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), 0.0, 1.0))


def grade_for(total: float, thresholds: Sequence[tuple[str, float]] = GRADE_THRESHOLDS,
              fail_grade: str = "F") -> str:
    """Letter grade of a total score: the first ``(grade, minimum)`` whose minimum it reaches."""
    for g, lo in thresholds:
        if total >= lo:
            return g
    return fail_grade


def quality_report(scan, reference_points, *, completeness_tolerance: float = 0.001,
                   validity_sigma: float = 2.0, uniqueness_voxel: float = 1e-4,
                   fpfh_voxel: float | None = None, fpfh_normal_radius: float | None = None,
                   fpfh_feature_radius: float | None = None, reference_descriptor=None,
                   weights: Mapping[str, float] | None = None,
                   grade_thresholds: Sequence[tuple[str, float]] = GRADE_THRESHOLDS) -> QualityReport:
    """ISO/IEC 25012 data-quality report of a scan (Kwon et al. 2025, sec. 3.6).

    Args:
        scan: ``(N, 3)`` scan points [m], in the reference's frame.
        reference_points: ``(M, 3)`` reference (e.g. CAD surface samples) [m].
        completeness_tolerance: distance within which a reference point counts as covered [m]
            (paper: 1 mm).
        validity_sigma: half width of the valid band of centroid distances in standard deviations.
        uniqueness_voxel: voxel edge of the uniqueness measure [m].
        fpfh_voxel: down-sampling voxel of the FPFH consistency (default: reference bounding-box
            diagonal / 50) [m].
        fpfh_normal_radius, fpfh_feature_radius: FPFH radii [m] (default 2 and 5 voxels).
        reference_descriptor: precomputed mean FPFH ``(33,)`` of the reference (same settings).
        weights: metric -> weight (default :data:`QUALITY_WEIGHTS`); must sum to 1.
        grade_thresholds: ``(grade, minimum total)`` best first; below the last one: "F".

    Returns:
        :class:`QualityReport`.

    Raises:
        ValueError: empty / non-finite clouds, bad weights or parameters.
    """
    s = as_points(scan, name="scan", min_points=5)
    ref = as_points(reference_points, name="reference", min_points=5)
    w = dict(QUALITY_WEIGHTS if weights is None else weights)
    if set(w) != set(QUALITY_WEIGHTS):
        raise ValueError(f"quality weights must name exactly {sorted(QUALITY_WEIGHTS)}, got {sorted(w)}")
    if any(v < 0 for v in w.values()) or abs(sum(w.values()) - 1.0) > 1e-6:
        raise ValueError(f"quality weights must be >= 0 and sum to 1, got {w}")
    acc, cd = accuracy_score(s, ref)
    scores = {
        "accuracy": acc,
        "consistency": consistency_score(s, ref, voxel_size=fpfh_voxel, normal_radius=fpfh_normal_radius,
                                         feature_radius=fpfh_feature_radius,
                                         reference_descriptor=reference_descriptor),
        "completeness": completeness_score(s, ref, tolerance=completeness_tolerance),
        "validity": validity_score(s, n_sigma=validity_sigma),
        "uniqueness": uniqueness_score(s, voxel_size=uniqueness_voxel),
    }
    total = float(sum(w[k] * scores[k] for k in w))
    return QualityReport(total=total, grade=grade_for(total, grade_thresholds), chamfer=cd, weights=w,
                         **{k: float(v) for k, v in scores.items()})
