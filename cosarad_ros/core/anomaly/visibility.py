"""View matching: crop full templates to what a partial scan's sensor could have seen.

Templates are full 360-degree scans while test scans are partial views; a template patch at an
occluding contour or on a thin wall holds surface the test scan never saw, which inflates its
distance to the test patch. This module (an addition to COSARAD) estimates from where the
registered test scan was seen, and marks the template points visible from there:

1. *coverage*: reference points with a scan point within ``tol`` (what the scan covers);
2. *views*: camera positions on a sphere around the part (Fibonacci lattice); the visible set
   of each is found by hidden point removal (Katz, Tal, Basri, "Direct visibility of point
   sets", SIGGRAPH 2007) minus surfaces seen at grazing incidence (> 77.5 degrees, which
   structured-light sensors lose); cameras are chosen greedily (up to ``max_views``, so fused
   multi-view scans work too) to maximise ``|visible & covered| - |visible & ~covered|``;
3. *template visibility*: a template point is visible when its nearest reference point is and
   it faces one of the chosen cameras within the incidence limit.

Visibility is geometric, so material missing from the scan because of a defect (hole, crack,
broken piece) stays *visible* in the cropped templates and is still detected.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["fibonacci_directions", "hpr_visible", "ViewEstimate", "estimate_views", "coverage_mask",
           "estimate_normals", "incidence_ok", "visible_from", "MAX_INCIDENCE_DEG"]

#: surfaces seen at a larger incidence angle are dropped (structured-light / laser sensors lose
#: grazing surfaces; the synthetic scanner drops them with a ramp from 70 to 85 degrees)
MAX_INCIDENCE_DEG = 77.5


def estimate_normals(points: np.ndarray, *, k: int = 16) -> np.ndarray:
    """Unoriented unit normals ``(N, 3)`` from the ``k`` nearest neighbours (PCA, Open3D)."""
    import open3d as o3d

    # a copy: Open3D refuses read-only arrays (the detectors' references are read-only)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.array(points, dtype=np.float64)))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=k))
    return np.asarray(pcd.normals, dtype=np.float32)


def incidence_ok(points: np.ndarray, normals: np.ndarray, camera: np.ndarray,
                 max_incidence_deg: float = MAX_INCIDENCE_DEG) -> np.ndarray:
    """Points whose surface faces ``camera`` within ``max_incidence_deg`` (normal sign ignored)."""
    v = np.asarray(camera, dtype=np.float64) - np.asarray(points, dtype=np.float64)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    cos = np.abs((v * normals).sum(1))
    return cos >= np.cos(np.radians(max_incidence_deg))


def visible_from(points: np.ndarray, normals: np.ndarray | None, camera: np.ndarray, *,
                 max_incidence_deg: float = MAX_INCIDENCE_DEG, radius_factor: float = 100.0) -> np.ndarray:
    """Hidden point removal plus the grazing-incidence cut (when ``normals`` are given)."""
    m = hpr_visible(points, camera, radius_factor=radius_factor)
    if normals is not None:
        m &= incidence_ok(points, normals, camera, max_incidence_deg)
    return m


def fibonacci_directions(n: int) -> np.ndarray:
    """``(n, 3)`` unit vectors spread evenly over the sphere (golden-angle spiral)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def hpr_visible(points: np.ndarray, camera: np.ndarray, *, radius_factor: float = 100.0) -> np.ndarray:
    """Bool mask of ``points (N, 3)`` visible from ``camera (3,)`` by hidden point removal."""
    import open3d as o3d

    pts = np.asarray(points, dtype=np.float64)
    diag = float(np.linalg.norm(pts.max(0) - pts.min(0)))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    _, idx = pcd.hidden_point_removal(np.asarray(camera, dtype=np.float64), radius_factor * diag)
    m = np.zeros(len(pts), dtype=bool)
    m[np.asarray(idx, dtype=np.int64)] = True
    return m


def coverage_mask(reference: np.ndarray, scan: np.ndarray, tol: float, *,
                  scan_tree: cKDTree | None = None) -> np.ndarray:
    """Reference points with a scan point within ``tol`` (``scan_tree``: a prebuilt tree of ``scan``)."""
    d, _ = (scan_tree if scan_tree is not None else cKDTree(scan)).query(reference, k=1, distance_upper_bound=tol,
                                                                       workers=-1)
    return np.isfinite(d)


@dataclass(frozen=True)
class ViewEstimate:
    """Cameras that explain a partial scan.

    Attributes:
        cameras: ``(K, 3)`` camera positions (template frame).
        visible: ``(M,)`` bool, reference points visible from any camera.
        covered_fraction: share of reference points the scan covers.
        agreement: ``|visible & covered| / |visible | covered|`` (1 = the views explain the scan).
    """

    cameras: np.ndarray
    visible: np.ndarray
    covered_fraction: float
    agreement: float


def estimate_views(reference: np.ndarray, covered: np.ndarray, *, normals: np.ndarray | None = None,
                   n_candidates: int = 32, max_views: int = 3, distance_factor: float = 1.5,
                   radius_factor: float = 100.0, min_gain: float = 0.02) -> ViewEstimate:
    """Greedy choice of up to ``max_views`` cameras whose visible sets match ``covered``.

    Args:
        reference: ``(M, 3)`` thinned reference template (a few thousand points is plenty).
        covered: ``(M,)`` bool coverage of the reference by the scan.
        n_candidates: camera directions tried (Fibonacci lattice).
        max_views: most cameras combined.
        normals: ``(M, 3)`` reference normals: grazing surfaces count as unseen (see
            :func:`visible_from`).
        distance_factor: cameras sit at ``distance_factor x`` the box diagonal from the centre
            (1.5: three bounding-sphere radii, like the simulated scanner).
        min_gain: a further camera must improve the objective by this fraction of ``|covered|``.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cov = np.asarray(covered, dtype=bool)
    centre = 0.5 * (ref.max(0) + ref.min(0))
    diag = float(np.linalg.norm(ref.max(0) - ref.min(0)))
    cams = centre + distance_factor * diag * fibonacci_directions(n_candidates)
    vis = np.stack([visible_from(ref, normals, c, radius_factor=radius_factor) for c in cams])  # (C, M)
    w = np.where(cov, 1.0, -1.0)
    chosen: list[int] = []
    union = np.zeros(len(ref), dtype=bool)
    best_obj = 0.0
    n_cov = max(int(cov.sum()), 1)
    for _ in range(max_views):
        objs = ((vis | union) * w).sum(1)
        k = int(np.argmax(objs))
        if chosen and objs[k] - best_obj < min_gain * n_cov:
            break
        if k in chosen:
            break
        chosen.append(k)
        union |= vis[k]
        best_obj = float(objs[k])
    inter = (union & cov).sum()
    uni = max(int((union | cov).sum()), 1)
    return ViewEstimate(cams[chosen], union, float(cov.mean()), float(inter / uni))
