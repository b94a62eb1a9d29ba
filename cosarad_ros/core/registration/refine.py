"""Local refinement of a registration hypothesis (ICP variants behind one interface).

Methods (config string -> class):

* ``"point_to_point"``: Besl & McKay, "A method for registration of 3-D shapes", IEEE TPAMI 1992.
* ``"point_to_plane"``: Chen & Medioni, "Object modelling by registration of multiple range
  images", Image and Vision Computing 1992 (optionally with a robust kernel).
* ``"generalized"``: Segal, Haehnel & Thrun, "Generalized-ICP", RSS 2009.
* ``"symmetric"``: Rusinkiewicz, "A symmetric objective function for ICP", ACM TOG 2019.
* ``"similarity"``: point-to-plane with a scale degree of freedom (see :mod:`.similarity`).

All share ``refine(source, target, init, max_distance) -> (4, 4)``; the pipeline calls it with a
decreasing schedule of ``max_distance`` values (coarse to fine).

:func:`plane_icp` and :func:`plane_icp_batch` are the same point-to-plane step in numpy on a
prebuilt k-d tree, for the many short runs of the template aligner's symmetry screen and polish
(one tree, many starting poses; the batch shares one k-d query and one solve per iteration).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

from ..geometry import as_transform
from ..settings import build_named
from .cloud import Cloud
from .similarity import similarity_icp

__all__ = [
    "Refiner",
    "PointToPointICP",
    "PointToPlaneICP",
    "GeneralizedICP",
    "SymmetricICP",
    "SimilarityICP",
    "REFINERS",
    "make_refiner",
    "plane_icp",
    "plane_icp_batch",
]

_reg = o3d.pipelines.registration


def _kernel(name: str | None, scale: float):
    if name is None or name == "none":
        return None
    kernels = {"huber": _reg.HuberLoss, "tukey": _reg.TukeyLoss, "cauchy": _reg.CauchyLoss,
               "gm": _reg.GMLoss, "l1": None}
    if name not in kernels:
        raise ValueError(f"unknown robust kernel {name!r}; choose from {sorted(kernels)} or None")
    if name == "l1":
        return _reg.L1Loss()
    return kernels[name](k=float(scale))


class Refiner(ABC):
    """Interface: refine ``init`` (``(4, 4)``, source -> target) for one correspondence distance.

    Attributes:
        name: config string of the method.
        estimates_scale: whether the method changes the scale of ``init``.
    """

    name = "base"
    estimates_scale = False

    def __init__(self, *, max_iterations: int = 40, relative_tolerance: float = 1e-7):
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations = int(max_iterations)
        self.relative_tolerance = float(relative_tolerance)

    def _criteria(self):
        return _reg.ICPConvergenceCriteria(relative_fitness=self.relative_tolerance,
                                           relative_rmse=self.relative_tolerance,
                                           max_iteration=self.max_iterations)

    def refine(self, source: Cloud, target: Cloud, init: np.ndarray, *, max_distance: float) -> np.ndarray:
        """Return the refined ``(4, 4)`` transform mapping ``source`` onto ``target``."""
        init = as_transform(init, name="init")
        if not max_distance > 0:
            raise ValueError(f"max_distance must be > 0, got {max_distance}")
        return self._refine(source, target, init, float(max_distance))

    @abstractmethod
    def _refine(self, source: Cloud, target: Cloud, init: np.ndarray, max_distance: float) -> np.ndarray:
        """Method-specific refinement (``init`` and ``max_distance`` already validated)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_iterations={self.max_iterations})"


class PointToPointICP(Refiner):
    """Besl-McKay ICP (closest points, SVD step). Slow convergence on smooth surfaces."""

    name = "point_to_point"

    def _refine(self, source, target, init, max_distance):
        res = _reg.registration_icp(source.pcd, target.pcd, max_distance, init,
                                    _reg.TransformationEstimationPointToPoint(False), self._criteria())
        return np.asarray(res.transformation)


class PointToPlaneICP(Refiner):
    """Chen-Medioni point-to-plane ICP, optionally with a robust kernel.

    Args:
        kernel: ``None``, ``"huber"``, ``"tukey"``, ``"cauchy"``, ``"gm"`` or ``"l1"``.
        kernel_scale: kernel parameter as a fraction of ``max_distance``.
    """

    name = "point_to_plane"

    def __init__(self, *, max_iterations: int = 40, relative_tolerance: float = 1e-7,
                 kernel: str | None = None, kernel_scale: float = 0.5):
        super().__init__(max_iterations=max_iterations, relative_tolerance=relative_tolerance)
        _kernel(kernel, 1.0)  # validate early
        self.kernel = kernel
        self.kernel_scale = float(kernel_scale)

    def _refine(self, source, target, init, max_distance):
        k = _kernel(self.kernel, self.kernel_scale * max_distance)
        est = _reg.TransformationEstimationPointToPlane() if k is None else _reg.TransformationEstimationPointToPlane(k)
        res = _reg.registration_icp(source.pcd, target.pcd, max_distance, init, est, self._criteria())
        return np.asarray(res.transformation)


class GeneralizedICP(Refiner):
    """Segal et al. plane-to-plane ICP on per-point covariances.

    Args:
        epsilon: covariance regulariser (the flat direction's relative variance).
    """

    name = "generalized"

    def __init__(self, *, max_iterations: int = 40, relative_tolerance: float = 1e-7, epsilon: float = 1e-3):
        super().__init__(max_iterations=max_iterations, relative_tolerance=relative_tolerance)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.epsilon = float(epsilon)

    def _refine(self, source, target, init, max_distance):
        res = _reg.registration_generalized_icp(
            source.pcd_with_covariances(), target.pcd_with_covariances(), max_distance, init,
            _reg.TransformationEstimationForGeneralizedICP(self.epsilon), self._criteria())
        return np.asarray(res.transformation)


class SymmetricICP(Refiner):
    """Rusinkiewicz symmetric point-to-plane objective (uses normals of both clouds)."""

    name = "symmetric"

    def _refine(self, source, target, init, max_distance):
        res = _reg.registration_symmetric_icp(source.pcd, target.pcd, max_distance, init,
                                              _reg.TransformationEstimationSymmetric(), self._criteria())
        return np.asarray(res.transformation)


class SimilarityICP(Refiner):
    """Point-to-plane ICP with a scale degree of freedom (7 parameters).

    Args:
        max_scale_step: largest relative scale change per iteration.
        scale_bounds: the accumulated scale is clamped to this range (``None``: unbounded).
        lateral_factor: keep pairs whose tangential offset is at most this many target point
            spacings (removes the curvature bias of the scale; ``None``: keep all).
    """

    name = "similarity"
    estimates_scale = True

    def __init__(self, *, max_iterations: int = 40, relative_tolerance: float = 1e-7, max_scale_step: float = 0.01,
                 scale_bounds: tuple[float, float] | None = (0.5, 2.0), lateral_factor: float | None = 1.0):
        super().__init__(max_iterations=max_iterations, relative_tolerance=relative_tolerance)
        if not max_scale_step > 0:
            raise ValueError(f"max_scale_step must be > 0, got {max_scale_step}")
        self.max_scale_step = float(max_scale_step)
        if scale_bounds is not None and not 0 < scale_bounds[0] <= 1.0 <= scale_bounds[1]:
            raise ValueError(f"scale_bounds must satisfy 0 < min <= 1 <= max, got {scale_bounds}")
        self.scale_bounds = None if scale_bounds is None else (float(scale_bounds[0]), float(scale_bounds[1]))
        if lateral_factor is not None and not lateral_factor > 0:
            raise ValueError(f"lateral_factor must be > 0 or None, got {lateral_factor}")
        self.lateral_factor = lateral_factor

    def _refine(self, source, target, init, max_distance):
        T, _ = similarity_icp(source.points, target.points, target.normals, init=init, max_distance=max_distance,
                              max_iterations=self.max_iterations, tolerance=self.relative_tolerance,
                              with_scale=True, max_scale_step=self.max_scale_step, target_tree=target.tree,
                              scale_bounds=self.scale_bounds,
                              lateral_limit=None if self.lateral_factor is None
                              else self.lateral_factor * target.spacing)
        return T


REFINERS: dict[str, type[Refiner]] = {
    cls.name: cls for cls in (PointToPointICP, PointToPlaneICP, GeneralizedICP, SymmetricICP, SimilarityICP)
}


def plane_icp(src: np.ndarray, tree: cKDTree, tpts: np.ndarray, tnormals: np.ndarray, T: np.ndarray,
               max_distance: float, iterations: int) -> np.ndarray:
    """Point-to-plane ICP (Chen & Medioni 1992), linearised small-angle steps, on a prebuilt tree:
    the fast numpy member of the ICP family, for many short runs (symmetry screens, polishing).

    Args:
        src: ``(N, 3)`` source points.
        tree: k-d tree of ``tpts``; tpts, tnormals: ``(M, 3)`` target points and unit normals.
        T: ``(4, 4)`` initial source -> target pose.
        max_distance: correspondences further apart are dropped [m].
        iterations: most steps; stops early when a step moves less than 1e-7 (rad / m).

    Returns:
        ``(4, 4)`` refined pose. Coordinates should be centred near the origin (the caller
        shifts them), as the rotation is linearised about it.
    """
    R, t = T[:3, :3].copy(), T[:3, 3].copy()
    for _ in range(iterations):
        p = src @ R.T + t
        d, idx = tree.query(p, k=1, distance_upper_bound=max_distance)
        ok = np.isfinite(d)
        if ok.sum() < 12:
            break
        p, q, n = p[ok], tpts[idx[ok]], tnormals[idx[ok]]
        A = np.concatenate([np.cross(p, n), n], axis=1)
        b = ((q - p) * n).sum(1)
        try:
            x = np.linalg.solve(A.T @ A + 1e-12 * np.eye(6), A.T @ b)
        except np.linalg.LinAlgError:
            break
        w = x[:3]
        a = float(np.linalg.norm(w))
        K = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
        dR = np.eye(3) + (np.sin(a) / a * K + (1 - np.cos(a)) / a ** 2 * K @ K if a > 1e-12 else K)
        R, t = dR @ R, dR @ t + x[3:]
        if a < 1e-7 and np.linalg.norm(x[3:]) < 1e-7:
            break
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = R, t
    return out


def plane_icp_batch(src: np.ndarray, tree: cKDTree, tpts: np.ndarray, tnormals: np.ndarray, Ts: np.ndarray,
                     max_distance: float, iterations: int) -> np.ndarray:
    """:func:`plane_icp` for ``K`` starting poses ``Ts (K, 4, 4)`` at once (one k-d query and one
    batched solve per iteration); each pose stops on its own as :func:`plane_icp` would.
    """
    K = len(Ts)
    R, t = Ts[:, :3, :3].copy(), Ts[:, :3, 3].copy()
    active = np.ones(K, dtype=bool)
    n = len(src)
    for _ in range(iterations):
        act = np.nonzero(active)[0]
        if act.size == 0:
            break
        p = np.einsum("kij,nj->kni", R[act], src) + t[act][:, None]  # (A, n, 3)
        d, idx = tree.query(p.reshape(-1, 3), k=1, distance_upper_bound=max_distance, workers=-1)
        ok = np.isfinite(d).reshape(len(act), n)
        idx = np.minimum(idx.reshape(len(act), n), len(tpts) - 1)
        enough = ok.sum(1) >= 12
        active[act[~enough]] = False
        q, nr = tpts[idx], tnormals[idx]
        w = ok.astype(np.float64)[..., None]
        A = np.concatenate([np.cross(p, nr), nr], axis=2) * w  # rows of unmatched points are zero
        b = ((q - p) * nr).sum(2) * w[..., 0]
        H = np.einsum("kni,knj->kij", A, A) + 1e-12 * np.eye(6)
        g = np.einsum("kni,kn->ki", A, b)
        for a_i in np.nonzero(enough)[0]:
            k = act[a_i]
            try:
                x = np.linalg.solve(H[a_i], g[a_i])
            except np.linalg.LinAlgError:
                active[k] = False
                continue
            wv = x[:3]
            a = float(np.linalg.norm(wv))
            Kx = np.array([[0.0, -wv[2], wv[1]], [wv[2], 0.0, -wv[0]], [-wv[1], wv[0], 0.0]])
            dR = np.eye(3) + (np.sin(a) / a * Kx + (1 - np.cos(a)) / a ** 2 * Kx @ Kx if a > 1e-12 else Kx)
            R[k], t[k] = dR @ R[k], dR @ t[k] + x[3:]
            if a < 1e-7 and np.linalg.norm(x[3:]) < 1e-7:
                active[k] = False
    out = np.tile(np.eye(4), (K, 1, 1))
    out[:, :3, :3], out[:, :3, 3] = R, t
    return out


def make_refiner(config: str | dict | Refiner) -> Refiner:
    """Build a refiner from a name (``"point_to_plane"``), a dict ``{"method": name, **kwargs}``
    or pass an instance through.
    """
    return build_named(config, REFINERS, base=Refiner, config_name="refiner config", kind="refinement")
