"""A CAD model as the nominal surface of a part: exact point-to-surface distances, and the one
registration an inspection needs (a scan that is already nearly in the part frame onto the model).

:class:`MeshReference` wraps a triangle mesh (metres, part frame) with Open3D's ray-casting
scene for exact closest points on the triangles, and a dense area-uniform sample with the faces'
normals for ICP correspondences.

:meth:`MeshReference.align` refines one or more initial poses (the fixture's nominal pose, the
classifier's pose) by point-to-plane ICP (Chen & Medioni, 1992) with a Tukey loss, so material
that a defect added or removed does not pull the pose, and keeps the pose whose scan points lie
closest to the surface (trimmed mean of the absolute distances). It reports the share of points
on the surface (fitness) and their RMS distance.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry import as_points, as_transform, transform_points

__all__ = ["MeshReference", "ModelAlignment"]


@dataclass(frozen=True)
class ModelAlignment:
    """Outcome of :meth:`MeshReference.align`.

    Attributes:
        transform: ``(4, 4)`` scan -> model frame.
        fitness: share of the scan's points within ``inlier_distance`` of the model surface.
        rmse: RMS distance of those inliers [m].
        trimmed_distance: mean absolute distance of the closest 80 % of the points [m] (what the
            pose minimises; noise level for a good fit).
        inlier_distance: [m].
        seed_index: which initial pose won.
        candidates: ``(trimmed_distance, fitness)`` of every refined seed, in seed order.
    """

    transform: np.ndarray
    fitness: float
    rmse: float
    trimmed_distance: float
    inlier_distance: float
    seed_index: int
    candidates: tuple = field(default=(), repr=False)


class MeshReference:
    """The nominal surface of a part type.

    Args:
        mesh: ``trimesh.Trimesh`` in metres (part frame).
        samples: surface samples used as ICP correspondences.
        seed: sampling seed.

    Raises:
        ValueError: a mesh without faces or with non-finite vertices.
    """

    def __init__(self, mesh, *, samples: int = 60_000, seed: int = 0):
        import open3d as o3d

        V = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
        F = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
        if len(F) == 0 or len(V) < 3:
            raise ValueError("reference mesh has no faces")
        if not np.isfinite(V).all():
            raise ValueError("reference mesh has non-finite vertices")
        if samples < 100:
            raise ValueError(f"samples must be >= 100, got {samples}")
        self.mesh = mesh
        self.vertices, self.faces = V, F
        fn = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
        norm = np.linalg.norm(fn, axis=1, keepdims=True)
        self.face_normals = np.divide(fn, norm, out=np.zeros_like(fn), where=norm > 0)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(V.astype(np.float32)), o3d.core.Tensor(F.astype(np.uint32)))
        self.size = float(np.linalg.norm(V.max(0) - V.min(0)))
        self.watertight = bool(getattr(mesh, "is_watertight", False))
        self.n_samples, self.seed = int(samples), int(seed)
        self._samples: dict = {}
        self._cloud = None

    def sample(self, n: int | None = None, *, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` area-uniform surface points and their normals, each ``(n, 3)`` (cached per n, seed;
        default: the ``samples`` / ``seed`` given at construction).
        """
        key = (self.n_samples if n is None else int(n), self.seed if seed is None else int(seed))
        if key not in self._samples:
            from ..io import sample_mesh

            p, nrm = sample_mesh(self.mesh, key[0], seed=key[1])
            self._samples[key] = (np.asarray(p, dtype=np.float64), np.asarray(nrm, dtype=np.float64))
        return self._samples[key]

    @property
    def points(self) -> np.ndarray:
        """The default surface sample ``(samples, 3)``."""
        return self.sample()[0]

    @property
    def normals(self) -> np.ndarray:
        """Outward normals of :attr:`points`."""
        return self.sample()[1]

    # ------------------------------------------------------------------ distances
    def closest(self, points) -> tuple[np.ndarray, np.ndarray]:
        """``(closest points (N, 3), outward face normals (N, 3))`` on the surface."""
        import open3d as o3d

        pts = as_points(points, name="points", min_points=0)
        if len(pts) == 0:
            return np.zeros((0, 3)), np.zeros((0, 3))
        ans = self.scene.compute_closest_points(o3d.core.Tensor(pts.astype(np.float32)))
        cp = ans["points"].numpy().astype(np.float64)
        prim = ans["primitive_ids"].numpy().astype(np.int64)
        return cp, self.face_normals[np.clip(prim, 0, len(self.faces) - 1)]

    def distance(self, points) -> np.ndarray:
        """``(N,)`` unsigned distance of ``points`` to the surface [m]."""
        import open3d as o3d

        pts = as_points(points, name="points", min_points=0)
        if len(pts) == 0:
            return np.zeros(0)
        return self.scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy().astype(np.float64)

    def signed_distance(self, points) -> np.ndarray:
        """``(N,)`` distance of ``points`` to the surface [m], positive outside the material
        (added material, a bulge), negative inside (removed material, a dent, a hole floor).
        Closed meshes take the sign from ray parity (exact at edges and corners); open ones from
        the nearest face's outward normal.
        """
        import open3d as o3d

        pts = as_points(points, name="points", min_points=0)
        if len(pts) and self.watertight:
            q = o3d.core.Tensor(pts.astype(np.float32))
            return self.scene.compute_signed_distance(q).numpy().astype(np.float64)
        cp, n = self.closest(pts)
        d = pts - cp
        dist = np.linalg.norm(d, axis=1)
        sign = np.sign((d * n).sum(1))
        sign[sign == 0] = 1.0
        return dist * sign

    # ------------------------------------------------------------------ registration
    def _target_cloud(self):
        from .cloud import Cloud

        if self._cloud is None:
            self._cloud = Cloud(self.points, self.normals, normal_radius=0.002)
        return self._cloud

    def align(self, points, *, init=(np.eye(4),), inlier_distance: float = 1e-3, max_points: int = 20_000,
              schedule: tuple[float, ...] = (4.0, 2.0, 1.0), seed: int = 0) -> ModelAlignment:
        """Register a scan that is nearly in the model frame onto the model.

        Args:
            points: ``(N, 3)`` scan [m].
            init: initial poses ``(4, 4)`` (scan -> model), e.g. the nominal pose (identity for
                a scan already in the part frame) and the classifier's pose; each is refined.
            inlier_distance: distance for fitness / rmse [m]; the ICP's correspondence distances
                are ``schedule`` x this (coarse to fine), each with a Tukey loss of half its width.
            max_points: at most this many (random) scan points drive the ICP.
            seed: seed of that thinning.

        Returns:
            :class:`ModelAlignment` of the best refined seed.

        Raises:
            ValueError: bad points, no initial pose, or a non-positive distance.
        """
        from .cloud import Cloud
        from .refine import PointToPlaneICP

        pts = as_points(points, name="scan", min_points=10)
        seeds = [as_transform(T, name=f"init[{i}]") for i, T in enumerate(init)]
        if not seeds:
            raise ValueError("init must hold at least one (4, 4) pose")
        if not (np.isfinite(inlier_distance) and inlier_distance > 0):
            raise ValueError(f"inlier_distance must be > 0, got {inlier_distance}")
        sub = pts
        if len(pts) > max_points:
            sub = pts[np.sort(np.random.default_rng(seed).choice(len(pts), max_points, replace=False))]
        src = Cloud(sub, normal_radius=3 * inlier_distance)
        tgt = self._target_cloud()
        results = []
        for T0 in seeds:
            T = T0
            for f in schedule:
                T = PointToPlaneICP(max_iterations=30, kernel="tukey", kernel_scale=0.5).refine(
                    src, tgt, T, max_distance=float(f) * inlier_distance)
            d = np.abs(self.signed_distance(transform_points(T, sub)))
            trimmed = float(np.sort(d)[: max(1, int(0.8 * len(d)))].mean())
            results.append((trimmed, T))
        k = int(np.argmin([r[0] for r in results]))
        T = results[k][1]
        d = np.abs(self.signed_distance(transform_points(T, pts)))
        inl = d <= inlier_distance
        fitness = float(inl.mean())
        rmse = float(np.sqrt((d[inl] ** 2).mean())) if inl.any() else float("inf")
        cands = []
        for trimmed, Tk in results:
            dk = np.abs(self.signed_distance(transform_points(Tk, sub)))
            cands.append((trimmed, float((dk <= inlier_distance).mean())))
        return ModelAlignment(T, fitness, rmse, results[k][0], float(inlier_distance), k, tuple(cands))
