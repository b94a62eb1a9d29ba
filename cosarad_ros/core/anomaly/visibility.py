"""Visibility helpers of the detectors: normals, hidden point removal, coverage.

Templates are full 360-degree scans while test scans are partial views. Threshold calibration
(:func:`.bank_fitting._partial_loo`) scores simulated partial views of the templates: the points
visible from a camera on a sphere around the part (Fibonacci lattice), found by hidden point
removal (Katz, Tal, Basri, "Direct visibility of point sets", SIGGRAPH 2007) minus surfaces seen
at grazing incidence (> 77.5 degrees, which structured-light sensors lose). A scan's *coverage*
is the share of reference points with a scan point within a tolerance.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["fibonacci_directions", "hpr_visible", "coverage_mask", "estimate_normals", "incidence_ok", "visible_from",
           "MAX_INCIDENCE_DEG"]

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
