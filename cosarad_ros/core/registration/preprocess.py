"""Point-cloud pre-processing before registration.

The chain follows the hybrid inspection pipeline of Kwon et al. (Electronics 2025, "hybrid 3D
inspection"): region-of-interest crop, removal of the supporting plane (table or fixture),
statistical outlier removal (points whose mean neighbour distance lies outside mu +- k sigma),
voxel down-sampling and normal estimation.

Every function takes and returns plain ``numpy`` arrays (metres, or whatever unit the caller uses
consistently); Open3D is used internally for the k-d trees, plane RANSAC and normals.

Sizes scale with the part: :func:`part_size` (bounding-box diagonal) and
:func:`default_voxel_size` give thresholds that work for parts from 30 to 300 mm without tuning.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from ..geometry import as_points, as_transform

__all__ = [
    "PreprocessResult",
    "part_size",
    "default_voxel_size",
    "point_spacing",
    "estimate_noise",
    "crop_roi",
    "remove_plane",
    "remove_statistical_outliers",
    "voxel_down_sample",
    "estimate_normals",
    "preprocess",
    "to_o3d",
]

#: bounding-box diagonal / voxel size used when no voxel size is given (about 50 voxels across).
VOXELS_PER_DIAGONAL = 50.0


def to_o3d(points: np.ndarray, normals: np.ndarray | None = None) -> o3d.geometry.PointCloud:
    """``(N, 3)`` points (and optional ``(N, 3)`` normals) -> ``open3d.geometry.PointCloud``."""
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    if normals is not None:
        pcd.normals = o3d.utility.Vector3dVector(np.asarray(normals, dtype=np.float64))
    return pcd


def part_size(points) -> float:
    """Length of the axis-aligned bounding-box diagonal of ``(N, 3)`` points.

    Raises:
        ValueError: empty or non-finite input, or all points coincide.
    """
    pts = as_points(points)
    size = float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))
    if size <= 0.0:
        raise ValueError("all points coincide; the cloud has no extent")
    return size


def default_voxel_size(points, *, voxels_per_diagonal: float = VOXELS_PER_DIAGONAL) -> float:
    """Voxel size that puts about ``voxels_per_diagonal`` voxels along the bounding-box diagonal."""
    if voxels_per_diagonal <= 0:
        raise ValueError(f"voxels_per_diagonal must be > 0, got {voxels_per_diagonal}")
    return part_size(points) / float(voxels_per_diagonal)


def point_spacing(points, *, sample: int = 2000, seed: int = 0) -> float:
    """Median distance from a point to its nearest neighbour (on a random subset of ``sample``
    points), i.e. the sampling density of the cloud.
    """
    pts = as_points(points, min_points=2)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pts), size=min(sample, len(pts)), replace=False)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pts).query(pts[idx], k=2)
    return float(np.median(d[:, 1]))


def estimate_noise(points, *, k: int = 16, sample: int = 2000, seed: int = 0) -> float:
    """Surface noise of a scan: square root of the median smallest eigenvalue of the covariance of
    each point's ``k`` nearest neighbours (the spread across the local tangent plane; Pauly, Gross
    & Kobbelt, "Efficient simplification of point-sampled surfaces", IEEE Vis 2002), evaluated on a
    random subset of ``sample`` points. Curvature adds to it on sparse clouds, so it errs high.
    """
    pts = as_points(points, min_points=4)
    k = int(min(max(k, 4), len(pts)))
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pts), size=min(sample, len(pts)), replace=False)
    from scipy.spatial import cKDTree

    _, nn = cKDTree(pts).query(pts[idx], k=k)
    nb = pts[nn]
    nb = nb - nb.mean(axis=1, keepdims=True)
    ev = np.linalg.eigvalsh(np.einsum("nki,nkj->nij", nb, nb) / k)
    return float(np.sqrt(max(np.median(ev[:, 0]), 0.0)))


def crop_roi(points, min_bound, max_bound, *, transform=None) -> np.ndarray:
    """Boolean mask of the points inside an axis-aligned box.

    Args:
        points: ``(N, 3)``.
        min_bound, max_bound: ``(3,)`` box corners, expressed in the box frame.
        transform: optional ``(4, 4)`` pose of the box frame in the points' frame (an oriented
            region of interest, e.g. the fixture frame). Points are mapped into the box frame with
            its inverse before the test.

    Returns:
        ``(N,)`` bool mask.
    """
    pts = as_points(points)
    lo = np.asarray(min_bound, dtype=np.float64).reshape(-1)
    hi = np.asarray(max_bound, dtype=np.float64).reshape(-1)
    if lo.shape != (3,) or hi.shape != (3,):
        raise ValueError("min_bound and max_bound must each have 3 values")
    if np.any(hi < lo):
        raise ValueError(f"ROI max_bound {hi.tolist()} is below min_bound {lo.tolist()}")
    if transform is not None:
        T = np.linalg.inv(as_transform(transform, name="roi transform"))
        pts = pts @ T[:3, :3].T + T[:3, 3]
    return np.all((pts >= lo) & (pts <= hi), axis=1)


def remove_plane(points, *, distance_threshold: float | None = None, min_inlier_ratio: float = 0.15,
                 expected_normal=None, max_angle_deg: float = 30.0, keep_side: str = "majority",
                 num_iterations: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Find the dominant plane (table / fixture) with RANSAC and drop it and everything behind it.

    A plane is removed only when it holds at least ``min_inlier_ratio`` of the points and, when
    ``expected_normal`` is given, its normal lies within ``max_angle_deg`` of it; otherwise the
    cloud is returned unchanged (a part's own flat face is not a table unless it dominates).

    Args:
        points: ``(N, 3)``.
        distance_threshold: plane inlier band; default ``part_size / 200``.
        min_inlier_ratio: least fraction of points on the plane for it to count as the support.
        expected_normal: optional ``(3,)`` direction of the support normal (e.g. world z).
        max_angle_deg: tolerance on that direction.
        keep_side: ``"majority"`` keeps the side of the plane holding more points,
            ``"positive"`` the side the (expected) normal points to.
        num_iterations: RANSAC iterations.
        seed: RANSAC seed.

    Returns:
        ``(mask, plane)``: ``(N,)`` bool mask of the points kept and the plane ``(a, b, c, d)``
        with ``a x + b y + c z + d = 0`` (``None`` when no plane was removed).
    """
    pts = as_points(points, name="points", min_points=3)
    if keep_side not in ("majority", "positive"):
        raise ValueError(f"keep_side must be 'majority' or 'positive', got {keep_side!r}")
    if distance_threshold is None:
        distance_threshold = part_size(pts) / 200.0
    if distance_threshold <= 0:
        raise ValueError(f"distance_threshold must be > 0, got {distance_threshold}")
    o3d.utility.random.seed(int(seed))
    plane, inliers = to_o3d(pts).segment_plane(distance_threshold=float(distance_threshold), ransac_n=3,
                                               num_iterations=int(num_iterations))
    keep = np.ones(len(pts), dtype=bool)
    if len(inliers) < min_inlier_ratio * len(pts):
        return keep, None
    plane = np.asarray(plane, dtype=np.float64)
    plane /= np.linalg.norm(plane[:3])
    if expected_normal is not None:
        n = np.asarray(expected_normal, dtype=np.float64).reshape(3)
        n /= np.linalg.norm(n)
        if plane[:3] @ n < 0:
            plane = -plane
        if np.degrees(np.arccos(np.clip(plane[:3] @ n, -1.0, 1.0))) > max_angle_deg:
            return keep, None
    signed = pts @ plane[:3] + plane[3]
    above = signed > distance_threshold
    below = signed < -distance_threshold
    if keep_side == "positive" and expected_normal is not None:
        keep = above
    else:
        keep = above if above.sum() >= below.sum() else below
        if not above.sum() >= below.sum():
            plane = -plane
    return keep, plane


def remove_statistical_outliers(points, *, nb_neighbors: int = 20, std_ratio: float = 2.0,
                                two_sided: bool = False) -> np.ndarray:
    """Statistical outlier removal on the mean distance to the ``nb_neighbors`` nearest points.

    A point is kept when its mean neighbour distance ``d`` satisfies ``d <= mu + std_ratio*sigma``
    (and ``d >= mu - std_ratio*sigma`` when ``two_sided``, the literal mu +- 2 sigma rule of
    Kwon et al.; the lower bound removes unusually dense spots such as duplicated scan lines).

    Args:
        points: ``(N, 3)``.
        nb_neighbors: k of the k-nearest-neighbour statistic.
        std_ratio: k sigma band.
        two_sided: apply the lower bound too.

    Returns:
        ``(N,)`` bool mask of inliers.
    """
    pts = as_points(points, min_points=2)
    if nb_neighbors < 1:
        raise ValueError(f"nb_neighbors must be >= 1, got {nb_neighbors}")
    if std_ratio <= 0:
        raise ValueError(f"std_ratio must be > 0, got {std_ratio}")
    k = int(min(nb_neighbors, len(pts) - 1))
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pts).query(pts, k=k + 1, workers=-1)
    mean_d = d[:, 1:].mean(axis=1)
    mu, sigma = mean_d.mean(), mean_d.std()
    keep = mean_d <= mu + std_ratio * sigma
    if two_sided:
        keep &= mean_d >= mu - std_ratio * sigma
    return keep


def voxel_down_sample(points, voxel_size: float, *, normals=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Average the points (and normals) falling into each voxel of edge ``voxel_size``.

    Returns:
        ``(M, 3)`` points and ``(M, 3)`` unit normals (``None`` when none were given).
    """
    pts = as_points(points)
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    down = to_o3d(pts, normals).voxel_down_sample(float(voxel_size))
    out_n = None
    if normals is not None:
        out_n = np.asarray(down.normals)
        out_n = out_n / np.maximum(np.linalg.norm(out_n, axis=1, keepdims=True), 1e-12)
    return np.asarray(down.points), out_n


def estimate_normals(points, *, radius: float | None = None, max_nn: int = 30,
                     viewpoint=None) -> np.ndarray:
    """Unit normals by PCA of the neighbourhood (radius ``radius``, at most ``max_nn`` points).

    Normals are oriented towards ``viewpoint`` when given (the sensor origin of a scan), else
    away from the centroid (right for closed parts, arbitrary for flat patches).

    Returns:
        ``(N, 3)`` unit normals.
    """
    pts = as_points(points, min_points=3)
    if radius is None:
        radius = 2.0 * default_voxel_size(pts)
    if not radius > 0:
        raise ValueError(f"normal radius must be > 0, got {radius}")
    pcd = to_o3d(pts)
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=float(radius), max_nn=int(max_nn)))
    n = np.asarray(pcd.normals).copy()
    if viewpoint is not None:
        ref = np.asarray(viewpoint, dtype=np.float64).reshape(3) - pts
    else:
        ref = pts - pts.mean(axis=0)
    flip = np.einsum("ij,ij->i", n, ref) < 0
    n[flip] *= -1.0
    return n


@dataclass(frozen=True)
class PreprocessResult:
    """Output of :func:`preprocess`.

    Attributes:
        points: ``(M, 3)`` cleaned, down-sampled points.
        normals: ``(M, 3)`` unit normals.
        voxel_size: the voxel size used (``0`` when not down-sampled).
        plane: the removed support plane ``(a, b, c, d)`` or ``None``.
        counts: number of points after each step (``input``, ``roi``, ``plane``, ``outliers``,
            ``voxel``).
    """

    points: np.ndarray
    normals: np.ndarray
    voxel_size: float
    plane: np.ndarray | None = None
    counts: dict = field(default_factory=dict)


def preprocess(points, *, roi=None, roi_transform=None, remove_support_plane: bool = False,
               plane_distance: float | None = None, plane_normal=None, outlier_neighbors: int = 20,
               outlier_std: float | None = 2.0, two_sided_outliers: bool = False,
               voxel_size: float | None = None, normal_radius: float | None = None,
               viewpoint=None, min_points: int = 10) -> PreprocessResult:
    """Kwon et al. pre-processing chain: ROI -> support plane -> outliers -> voxel grid -> normals.

    Args:
        points: ``(N, 3)`` raw scan; non-finite rows (invalid pixels) are dropped first.
        roi: optional ``(min_bound, max_bound)`` box (see :func:`crop_roi`).
        roi_transform: optional ``(4, 4)`` pose of the ROI box.
        remove_support_plane: remove the dominant plane (see :func:`remove_plane`).
        plane_distance: plane inlier band (default ``part_size / 200``).
        plane_normal: expected support normal (e.g. ``(0, 0, 1)``), or ``None``.
        outlier_neighbors, outlier_std, two_sided_outliers: statistical outlier removal
            (``outlier_std=None`` skips it).
        voxel_size: voxel edge; ``None``: :func:`default_voxel_size` of the cleaned cloud;
            ``0``: no down-sampling.
        normal_radius: normal estimation radius; default ``2 * voxel_size`` (or 2x the point
            spacing when not down-sampled).
        viewpoint: sensor origin to orient normals towards.
        min_points: the fewest points that may remain.

    Returns:
        :class:`PreprocessResult`.

    Raises:
        ValueError: bad shapes, or fewer than ``min_points`` points left after a step (the message
            names the step).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    counts = {"input": int(len(pts))}
    pts = pts[np.isfinite(pts).all(axis=1)]

    def _check(step):
        counts[step] = int(len(pts))
        if len(pts) < min_points:
            raise ValueError(f"only {len(pts)} points left after {step} (need {min_points})")

    _check("finite")
    if roi is not None:
        lo, hi = roi
        pts = pts[crop_roi(pts, lo, hi, transform=roi_transform)]
    _check("roi")
    plane = None
    if remove_support_plane:
        keep, plane = remove_plane(pts, distance_threshold=plane_distance, expected_normal=plane_normal)
        pts = pts[keep]
    _check("plane")
    if outlier_std is not None:
        pts = pts[remove_statistical_outliers(pts, nb_neighbors=outlier_neighbors, std_ratio=outlier_std,
                                              two_sided=two_sided_outliers)]
    _check("outliers")
    if voxel_size is None:
        voxel_size = default_voxel_size(pts)
    if voxel_size < 0:
        raise ValueError(f"voxel_size must be >= 0, got {voxel_size}")
    if voxel_size > 0:
        pts, _ = voxel_down_sample(pts, voxel_size)
    _check("voxel")
    if normal_radius is None:
        normal_radius = 2.0 * (voxel_size if voxel_size > 0 else max(point_spacing(pts), 1e-12))
    normals = estimate_normals(pts, radius=normal_radius, viewpoint=viewpoint)
    return PreprocessResult(points=pts, normals=normals, voxel_size=float(voxel_size), plane=plane,
                            counts=counts)
