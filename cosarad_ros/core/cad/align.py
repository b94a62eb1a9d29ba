"""Scan-to-CAD alignment used by the classifier to measure a registration residual.

Two interchangeable aligners behind one interface (chosen by a config string or dict, see
:func:`make_aligner`):

* ``"box_icp"`` (default): seeds from the pose-normalised box frames of scan and model (the
  four half-turn ambiguities of a box, plus axis swaps when two extents are nearly equal),
  screens the seeds by mean nearest-neighbour distance, then refines the best ones with Open3D
  point-to-plane ICP (Chen and Medioni, "Object modelling by registration of multiple range
  images", IVC 1992). Cheap, because the box gate already fixes the pose up to those symmetries.
* ``"registration"``: the project's general pipeline
  :func:`cosarad_ros.core.registration.register` (global FPFH + RANSAC and ICP), for scans
  whose box frame is unreliable.

Both report the residual as the RMS of exact point-to-mesh distances of the aligned scan
(Open3D ``RaycastingScene``), so the residual does not depend on how densely the CAD is sampled.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from cosarad_ros.core.cad.features import BoxFeatures, box_symmetry_rotations

__all__ = ["Alignment", "Aligner", "BoxIcpAligner", "RegistrationAligner", "ALIGNERS", "make_aligner",
           "residuals"]


@dataclass(frozen=True)
class Alignment:
    """Pose of a scan on a CAD model.

    Attributes:
        transform: ``(4, 4)`` maps scan points into the model frame.
        rmse: RMS point-to-mesh distance of the aligned scan [m].
        fitness: share of scan points within ``inlier_distance`` of the mesh.
        median: median point-to-mesh distance [m].
    """

    transform: np.ndarray = field(repr=False)
    rmse: float
    fitness: float
    median: float


def residuals(model, points: np.ndarray, transform: np.ndarray, inlier_distance: float,
              trim: float = 0.0) -> tuple[float, float, float]:
    """``(rmse, fitness, median)`` of ``points`` moved by ``transform`` onto ``model``'s mesh.

    ``rmse`` is the RMS of the ``1 - trim`` closest points (``trim > 0`` gives a trimmed RMS that
    ignores stray sensor points, but also hides small features such as a missing hole, so the
    default keeps every point), ``fitness`` the share within ``inlier_distance``.
    """
    moved = points @ transform[:3, :3].T + transform[:3, 3]
    d = np.sort(model.distance(moved))
    keep = max(1, int(np.ceil(len(d) * (1.0 - trim))))
    return (float(np.sqrt(np.mean(d[:keep] ** 2))), float(np.mean(d <= inlier_distance)),
            float(np.median(d)))


class Aligner(ABC):
    """Interface: ``align(points, scan_box, model) -> Alignment``."""

    name = "base"

    @abstractmethod
    def align(self, points: np.ndarray, scan_box: BoxFeatures, model) -> Alignment:
        """Pose of ``points`` ``(N, 3)`` (with box ``scan_box``) on ``model`` (a ``CadModel``)."""


def _o3d_cloud(points, normals=None):
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    if normals is not None:
        pcd.normals = o3d.utility.Vector3dVector(np.asarray(normals, dtype=np.float64))
    return pcd


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _subset(points: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[np.random.default_rng(seed).choice(len(points), n, replace=False)]


class BoxIcpAligner(Aligner):
    """Box-frame seeds + point-to-plane ICP.

    Args:
        model_points: surface samples of the CAD model used as ICP target.
        icp_points: scan points (random subset) used by ICP.
        residual_points: scan points (random subset) of the residual.
        screen_points: scan points used to screen the seeds (half of them for all seeds, all of
            them for the best ``3 * keep_seeds``).
        keep_seeds: seeds refined by ICP after screening.
        shift_threshold: when the scan's box is shorter than the model's by more than twice this
            [m] on an axis (a partial scan), seeds also put the scan at either end of that axis.
        spin_step_deg: when two model extents are within ``swap_tolerance`` (a round part),
            seeds also turn about the third axis in these steps (0 = off).
        robust_kernel: Tukey width [m] of a last robust ICP step (``None`` = off).
        swap_tolerance: extents closer than this [m] also try the axis swap between them;
            ``None``: 2 % of the longest extent.
        coarse_distance: ICP correspondence distance of the first stage [m]; ``None``: 5 % of the
            model diagonal.
        fine_distance: ICP correspondence distance of the second stage [m]; ``None``: 1 % of the
            model diagonal (at least 1 mm).
        iterations: ICP iterations per stage.
        inlier_distance: distance for ``fitness`` [m].
        trim: share of farthest points left out of the residual RMS.
        seed: sampling seed.
    """

    name = "box_icp"

    def __init__(self, *, model_points: int = 6000, icp_points: int = 3000, residual_points: int = 20000,
                 screen_points: int = 1000, keep_seeds: int = 4, shift_threshold: float = 0.001,
                 spin_step_deg: float = 5.0, robust_kernel: float | None = 0.0003,
                 swap_tolerance: float | None = None, coarse_distance: float | None = None,
                 fine_distance: float | None = None, iterations: int = 30, inlier_distance: float = 0.001,
                 trim: float = 0.0, seed: int = 0):
        if model_points < 100 or screen_points < 10 or keep_seeds < 1 or iterations < 1:
            raise ValueError("box_icp: model_points >= 100, screen_points >= 10, keep_seeds >= 1, iterations >= 1")
        if inlier_distance <= 0:
            raise ValueError(f"box_icp: inlier_distance must be > 0, got {inlier_distance}")
        if icp_points < 50 or residual_points < 50:
            raise ValueError("box_icp: icp_points and residual_points must be >= 50")
        self.model_points = int(model_points)
        self.icp_points = int(icp_points)
        self.residual_points = int(residual_points)
        self.screen_points = int(screen_points)
        self.keep_seeds = int(keep_seeds)
        self.shift_threshold = float(shift_threshold)
        self.spin_step_deg = float(spin_step_deg)
        if robust_kernel is not None and robust_kernel <= 0:
            raise ValueError(f"box_icp: robust_kernel must be > 0 or None, got {robust_kernel}")
        self.robust_kernel = robust_kernel
        self.swap_tolerance = swap_tolerance
        self.coarse_distance = coarse_distance
        self.fine_distance = fine_distance
        self.iterations = int(iterations)
        self.inlier_distance = float(inlier_distance)
        if not 0.0 <= trim < 0.5:
            raise ValueError(f"box_icp: trim must be in [0, 0.5), got {trim}")
        self.trim = float(trim)
        self.seed = int(seed)

    @staticmethod
    def _free_axis(model_box: BoxFeatures, tol: float) -> int | None:
        """Box axis about which a round part may turn freely (the other two extents equal)."""
        d = model_box.dimensions
        for free, (i, j) in ((2, (0, 1)), (0, (1, 2)), (1, (0, 2))):
            if abs(d[i] - d[j]) <= tol:
                return free
        return None

    def seeds(self, scan_box: BoxFeatures, model) -> list[np.ndarray]:
        """Initial scan -> model transforms ``(4, 4)`` from the two box frames."""
        mb = model.box
        tol = 0.02 * float(mb.dimensions.max()) if self.swap_tolerance is None else self.swap_tolerance
        rots = box_symmetry_rotations(scan_box.dimensions, mb.dimensions, tolerance=tol)
        inv_scan = np.linalg.inv(scan_box.frame)
        # a scan that falls short of the model's extent may lie at either end of that axis
        short = np.maximum(mb.dimensions - scan_box.dimensions, 0.0) / 2.0
        shifts = [np.array(t) for t in np.stack(np.meshgrid(*[
            [0.0] if sh <= self.shift_threshold else [0.0, -sh, sh] for sh in short], indexing="ij"), -1).reshape(-1, 3)]
        # a round cross-section (two nearly equal extents) leaves the turn about the third axis
        # free: add turns in steps of `spin_step_deg`
        spins = [np.eye(3)]
        free = self._free_axis(mb, tol)
        if free is not None and self.spin_step_deg > 0:
            axis = np.eye(3)[free]
            spins += [_axis_rotation(axis, np.deg2rad(a)) for a in np.arange(self.spin_step_deg, 360.0,
                                                                              self.spin_step_deg)]
        rots = [S @ R for R in rots for S in spins]
        out = []
        for R in rots:
            for t in shifts:
                M = np.eye(4)
                M[:3, :3] = R
                M[:3, 3] = t
                out.append(mb.frame @ M @ inv_scan)
        return out

    def align(self, points: np.ndarray, scan_box: BoxFeatures, model) -> Alignment:
        import open3d as o3d

        mpts, mnrm = model.sample(self.model_points, seed=self.seed)
        sub = _subset(points, self.screen_points, self.seed)
        icp_pts = _subset(points, self.icp_points, self.seed)
        res_pts = _subset(points, self.residual_points, self.seed)
        seeds = self.seeds(scan_box, model)
        # screen by the RMS of exact point-to-mesh distances (small features such as the bolt
        # holes of a round flange decide between seeds; nearest CAD samples would blur them):
        # all seeds on a few points, the best ones again on more points
        order = np.arange(len(seeds))
        for n_pts, keep in ((max(self.screen_points // 2, 50), 3 * self.keep_seeds), (self.screen_points, self.keep_seeds)):
            pts = sub[:n_pts]
            moved = np.concatenate([pts @ seeds[i][:3, :3].T + seeds[i][:3, 3] for i in order])
            d = model.distance(moved).reshape(len(order), len(pts))
            order = order[np.argsort(np.sqrt(np.mean(d ** 2, axis=1)))[:keep]]

        diag = float(np.linalg.norm(model.box.dimensions))
        coarse = 0.05 * diag if self.coarse_distance is None else self.coarse_distance
        fine = max(0.01 * diag, 0.001) if self.fine_distance is None else self.fine_distance
        src = _o3d_cloud(icp_pts)
        tgt = _o3d_cloud(mpts, mnrm)
        est = o3d.pipelines.registration.TransformationEstimationPointToPlane()
        crit = o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=self.iterations)
        best_T, best_cost = None, np.inf
        for i in order:
            T = seeds[i]
            for dist in (coarse, fine):
                T = o3d.pipelines.registration.registration_icp(src, tgt, dist, T, est, crit).transformation
            T = np.asarray(T)
            cost = residuals(model, icp_pts, T, self.inlier_distance, self.trim)[0]
            if cost < best_cost:
                best_T, best_cost = T, cost
        mb = model.box
        tol = 0.02 * float(mb.dimensions.max()) if self.swap_tolerance is None else self.swap_tolerance
        free = self._free_axis(mb, tol)
        if free is not None and self.spin_step_deg > 0:
            # round part: ICP hardly turns it about its axis (only small features such as bolt
            # holes resist), so search the turn finely around the result, then refine again
            axis = mb.frame[:3, :3] @ np.eye(3)[free]
            centre = mb.frame[:3, 3]
            half = self.spin_step_deg
            cands = []
            for a in np.linspace(-half, half, 21):
                S = np.eye(4)
                S[:3, :3] = _axis_rotation(axis, np.deg2rad(a))
                S[:3, 3] = centre - S[:3, :3] @ centre
                cands.append(S @ best_T)
            moved = np.concatenate([icp_pts @ T[:3, :3].T + T[:3, 3] for T in cands])
            d = model.distance(moved).reshape(len(cands), len(icp_pts))
            T = cands[int(np.argmin(np.mean(d ** 2, axis=1)))]
            T = np.asarray(o3d.pipelines.registration.registration_icp(src, tgt, fine, T, est, crit).transformation)
            cost = residuals(model, icp_pts, T, self.inlier_distance, self.trim)[0]
            if cost < best_cost:
                best_T, best_cost = T, cost
        if self.robust_kernel is not None:
            # a final Tukey-weighted ICP (Zhang, IVC 1997) so that a deviating region (a moved bore,
            # a large dent) does not pull the whole part off; kept when the median fits better
            loss = o3d.pipelines.registration.TukeyLoss(k=self.robust_kernel)
            est_r = o3d.pipelines.registration.TransformationEstimationPointToPlane(loss)
            T = np.asarray(o3d.pipelines.registration.registration_icp(src, tgt, fine, best_T, est_r, crit).transformation)
            if residuals(model, icp_pts, T, self.inlier_distance)[2] < residuals(model, icp_pts, best_T,
                                                                                 self.inlier_distance)[2]:
                best_T = T
        rmse, fit, med = residuals(model, res_pts, best_T, self.inlier_distance, self.trim)
        return Alignment(transform=best_T, rmse=rmse, fitness=fit, median=med)


class RegistrationAligner(Aligner):
    """The project's global + ICP registration (:func:`cosarad_ros.core.registration.register`).

    Args:
        model_points: CAD surface samples used as target.
        inlier_distance: distance for ``fitness`` [m].
        trim: share of farthest points left out of the residual RMS.
        residual_points: scan points (random subset) of the residual.
        **register_kwargs: passed to ``register`` (e.g. ``attempts``, ``voxel_size``).
    """

    name = "registration"

    def __init__(self, *, model_points: int = 20000, inlier_distance: float = 0.001, trim: float = 0.0,
                 residual_points: int = 20000, seed: int = 0, **register_kwargs):
        self.model_points = int(model_points)
        self.residual_points = int(residual_points)
        self.trim = float(trim)
        self.inlier_distance = float(inlier_distance)
        self.seed = int(seed)
        self.register_kwargs = dict(register_kwargs)

    def align(self, points: np.ndarray, scan_box: BoxFeatures, model) -> Alignment:
        from cosarad_ros.core.registration import register

        mpts, _ = model.sample(self.model_points, seed=self.seed)
        res = register(points, mpts, seed=self.seed, **self.register_kwargs)
        T = np.asarray(res.transform, dtype=np.float64)
        rmse, fit, med = residuals(model, _subset(points, self.residual_points, self.seed), T,
                                  self.inlier_distance, self.trim)
        return Alignment(transform=T, rmse=rmse, fitness=fit, median=med)


ALIGNERS = {"box_icp": BoxIcpAligner, "registration": RegistrationAligner}


def make_aligner(config: str | Mapping | Aligner | None = "box_icp") -> Aligner | None:
    """An aligner from ``"box_icp"`` / ``"registration"`` / ``{"method": ..., **kwargs}`` / an
    instance; ``None`` or ``"none"`` disables registration (paper-only ranking)."""
    if config is None or isinstance(config, Aligner):
        return config
    if isinstance(config, str):
        if config == "none":
            return None
        name, kwargs = config, {}
    elif isinstance(config, Mapping):
        kwargs = dict(config)
        name = kwargs.pop("method", "box_icp")
    else:
        raise ValueError(f"aligner config must be a name, a dict or an Aligner, got {type(config).__name__}")
    if name not in ALIGNERS:
        raise ValueError(f"unknown aligner {name!r}; choose one of {sorted(ALIGNERS)} or 'none'")
    try:
        return ALIGNERS[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options for aligner {name!r}: {exc}") from None
