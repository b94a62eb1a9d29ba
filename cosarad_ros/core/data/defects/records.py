"""Records of applied defects: :class:`DefectRecord` (what was done to a part, and how to label
any later scan of it) and :class:`DefectResult` (a defect applied to a point cloud).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ...geometry import as_points
from .helpers import _distance, _o3d_scene


@dataclass(frozen=True)
class DefectRecord:
    """What was done to a part, in the part frame (metres), and how to label scans of it.

    Attributes:
        kind: one of :data:`ALL_DEFECT_TYPES`.
        centre: ``(3,)`` defect centre on the surface.
        normal: ``(3,)`` outward surface normal at the centre.
        direction: ``(3,)`` scratch / crack direction, bend plane normal, hole shift direction
            (zeros when not meaningful).
        size: the defect's dimensions in metres (``angle_deg`` in degrees), e.g.
            ``{"diameter": 0.012, "depth": 0.0004}``.
        footprint: measured diameter of the anomalous surface region, metres.
        min_shift: a moved point counts as anomalous above this displacement, metres.
        extra: other facts (hole index, nominal/actual hole diameter ...).
    """

    kind: str
    centre: tuple
    normal: tuple
    direction: tuple
    size: Mapping[str, float]
    footprint: float = 0.0
    min_shift: float = 5e-5
    extra: Mapping[str, Any] = field(default_factory=dict)
    # labelling geometry (not part of equality / repr)
    mesh_vertices: np.ndarray | None = field(default=None, repr=False, compare=False)
    mesh_faces: np.ndarray | None = field(default=None, repr=False, compare=False)
    vertex_shift: np.ndarray | None = field(default=None, repr=False, compare=False)
    region_vertices: np.ndarray | None = field(default=None, repr=False, compare=False)
    region_faces: np.ndarray | None = field(default=None, repr=False, compare=False)
    anomalous_points: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def removes_material(self) -> bool:
        return self.region_vertices is not None

    def label_points(self, points, tol: float = 3e-4) -> np.ndarray:
        """Label points of a scan of the defective part (part frame, metres).

        Args:
            points: ``(N, 3)``.
            tol: for "removes" kinds, points within ``tol`` of the removed material (its
                new walls and floor, and a rim of width ``tol`` around the vanished surface);
                for "moves" kinds, points within ``tol`` of the defective surface whose nearest
                surface point moved more than ``min_shift``. Records made by
                :func:`apply_defect` (point clouds) label points within ``tol`` of a moved or
                removed sample.

        Returns:
            ``(N,)`` bool.
        """
        import open3d as o3d

        pts = as_points(points, name="points")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if self.region_vertices is not None:
            # surface points never lie inside the removed material, so the unsigned distance
            # to it decides (walls and floor at 0, the rim within tol)
            return _distance(self.region_vertices, self.region_faces, pts) <= tol
        if self.mesh_vertices is not None:
            scene = _o3d_scene(self.mesh_vertices, self.mesh_faces)
            ans = scene.compute_closest_points(o3d.core.Tensor(pts.astype(np.float32)))
            cp = ans["points"].numpy().astype(np.float64)
            prim = ans["primitive_ids"].numpy().astype(np.int64)
            uv = ans["primitive_uvs"].numpy().astype(np.float64)
            f = self.mesh_faces[prim]
            s = self.vertex_shift
            shift = (1 - uv[:, 0] - uv[:, 1]) * s[f[:, 0]] + uv[:, 0] * s[f[:, 1]] + uv[:, 1] * s[f[:, 2]]
            return (shift > self.min_shift) & (np.linalg.norm(pts - cp, axis=1) <= tol)
        if self.anomalous_points is not None and len(self.anomalous_points):
            from scipy.spatial import cKDTree

            d, _ = cKDTree(self.anomalous_points).query(pts, k=1, distance_upper_bound=tol)
            return np.isfinite(d)
        return np.zeros(len(pts), dtype=bool)

    def to_dict(self, *, transform=None, scale: float = 1.0) -> dict:
        """JSON-friendly summary. ``transform`` (4x4, part frame -> file frame) and ``scale``
        (metres -> file units) map ``centre`` / ``normal`` / ``direction`` and the sizes into a
        written file's frame and units; ``angle_deg`` is never scaled.
        """
        c = np.asarray(self.centre, dtype=np.float64)
        n = np.asarray(self.normal, dtype=np.float64)
        d = np.asarray(self.direction, dtype=np.float64)
        if transform is not None:
            T = np.asarray(transform, dtype=np.float64)
            c, n, d = T[:3, :3] @ c + T[:3, 3], T[:3, :3] @ n, T[:3, :3] @ d
        out = {
            "type": self.kind,
            "centre": [round(float(v) * scale, 6) for v in c],
            "normal": [round(float(v), 6) for v in n],
            "direction": [round(float(v), 6) for v in d],
            "size": {k: round(float(v) * (1.0 if k.endswith("_deg") else scale), 6)
                     for k, v in self.size.items()},
            "footprint": round(float(self.footprint) * scale, 6),
        }
        if self.extra:
            out["extra"] = {k: (round(float(v) * scale, 6) if isinstance(v, float) else v)
                            for k, v in self.extra.items()}
        return out


@dataclass(frozen=True)
class DefectResult:
    """A defect applied to a point cloud.

    Attributes:
        points: ``(M, 3)`` the defective cloud (``M <= N``: removed points are gone).
        normals: ``(M, 3)`` or ``None`` (rotated for bends, otherwise the input normals).
        mask: ``(M,)`` bool, True where the surface moved by more than ``min_shift`` or lies
            within ``rim`` of removed material.
        kept: ``(M,)`` int64 row of each output point in the input cloud.
        record: the :class:`DefectRecord`.
    """

    points: np.ndarray
    normals: np.ndarray | None
    mask: np.ndarray
    kept: np.ndarray
    record: DefectRecord
