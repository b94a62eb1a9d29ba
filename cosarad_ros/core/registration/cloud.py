"""A point cloud with the derived data registration needs, computed once and cached."""
from __future__ import annotations

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

from ..geometry import as_points
from .preprocess import estimate_normals, point_spacing, to_o3d

__all__ = ["Cloud", "as_cloud_array", "readonly_memo"]


_READONLY: list = []  # (read-only array, memo dict), most recently used last


def readonly_memo(array) -> dict | None:
    """A dict kept with a read-only numpy ``array`` (by identity; the 16 most recently used), for
    work derived from it (a reference's k-d tree, samples, normals, features); ``None`` for
    anything else, since a writeable array may change between calls.
    """
    if not isinstance(array, np.ndarray) or array.flags.writeable:
        return None
    for i, (a, memo) in enumerate(_READONLY):
        if a is array:
            _READONLY.append(_READONLY.pop(i))
            return memo
    memo: dict = {}
    _READONLY.append((array, memo))
    del _READONLY[:-16]
    return memo


def as_cloud_array(cloud, *, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Accept ``(N, 3)`` array-likes or ``open3d.geometry.PointCloud``; return ``(points, normals)``.

    Non-finite rows are refused (drop invalid pixels before registering).
    """
    normals = None
    if isinstance(cloud, o3d.geometry.PointCloud):
        pts = np.asarray(cloud.points)
        if cloud.has_normals():
            normals = np.asarray(cloud.normals).copy()
    else:
        pts = cloud
    pts = as_points(pts, name=name, min_points=1)
    return pts, normals


class Cloud:
    """Points plus lazily computed normals, Open3D cloud and k-d tree.

    Args:
        points: ``(N, 3)``.
        normals: optional ``(N, 3)`` unit normals (estimated with ``normal_radius`` when needed).
        normal_radius: neighbourhood radius for normal estimation.
    """

    def __init__(self, points: np.ndarray, normals: np.ndarray | None = None, *, normal_radius: float):
        self.points = np.ascontiguousarray(points, dtype=np.float64)
        self._normals = None if normals is None else np.ascontiguousarray(normals, dtype=np.float64)
        self.normal_radius = float(normal_radius)
        self._pcd = None
        self._tree = None
        self._spacing = None

    def __len__(self) -> int:
        return len(self.points)

    @property
    def normals(self) -> np.ndarray:
        if self._normals is None:
            self._normals = estimate_normals(self.points, radius=self.normal_radius)
        return self._normals

    @property
    def pcd(self) -> o3d.geometry.PointCloud:
        if self._pcd is None:
            self._pcd = to_o3d(self.points, self.normals)
        return self._pcd

    @property
    def spacing(self) -> float:
        """Median nearest-neighbour distance (sampling density)."""
        if self._spacing is None:
            self._spacing = point_spacing(self.points) if len(self.points) > 1 else 0.0
        return self._spacing

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.points)
        return self._tree

    def pcd_with_covariances(self) -> o3d.geometry.PointCloud:
        """The Open3D cloud with per-point covariances (for generalized ICP)."""
        pcd = self.pcd
        if not pcd.has_covariances():
            pcd.estimate_covariances(o3d.geometry.KDTreeSearchParamHybrid(radius=self.normal_radius, max_nn=30))
        return pcd
