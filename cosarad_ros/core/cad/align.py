"""Scan-to-CAD alignment used by the classifier to measure a registration residual.

Two interchangeable aligners behind one interface (chosen by a config string or dict, see
:func:`make_aligner`):

* ``"box_icp"`` (default), coarse to fine. Seeds come from the pose-normalised box frames of
  scan and model (the four half turns of a box, axis swaps where two extents are nearly equal,
  turns about the axis of a round part, and end shifts where a partial scan is shorter than the
  model); :meth:`BoxIcpAligner.coarse` screens every seed by exact point-to-mesh distances of a
  few scan points and refines the best few with Open3D point-to-plane ICP (Chen and Medioni,
  "Object modelling by registration of multiple range images", IVC 1992) on a subset, which is
  cheap enough to run on every candidate model; :meth:`BoxIcpAligner.refine` then refines the
  best pose on more points (a fine turn search for round parts, a last Tukey-weighted step so a
  deviating region does not pull the part off) for the few candidates that remain.
* ``"registration"``: the project's general pipeline
  :func:`cosarad_ros.core.registration.register` (global FPFH + RANSAC and ICP), for scans
  whose box frame is unreliable.

Both report the residual from exact point-to-mesh distances of the aligned scan (Open3D
``RaycastingScene``), so it does not depend on how densely the CAD is sampled.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from cosarad_ros.core.cad.features import BoxFeatures
from cosarad_ros.core.registration.symmetry import box_rotations

__all__ = ["Alignment", "Aligner", "BoxIcpAligner", "RegistrationAligner", "ALIGNERS", "make_aligner",
           "residuals", "coverage"]


@dataclass(frozen=True)
class Alignment:
    """Pose of a scan on a CAD model.

    Attributes:
        transform: ``(4, 4)`` maps scan points into the model frame.
        rmse: RMS point-to-mesh distance of the aligned scan [m], each distance capped at
            ``3 * inlier_distance`` (a stray point counts as a miss, not as its distance).
        fitness: share of scan points within ``inlier_distance`` of the mesh.
        median: median point-to-mesh distance [m].
    """

    transform: np.ndarray = field(repr=False)
    rmse: float
    fitness: float
    median: float


def residuals(model, points: np.ndarray, transform: np.ndarray, inlier_distance: float,
              trim: float = 0.0) -> tuple[float, float, float]:
    """``(rmse, fitness, median)`` of ``points`` ``(N, 3)`` moved by ``transform`` onto ``model``'s mesh.

    ``rmse`` is the RMS of the ``1 - trim`` closest points, each distance capped at
    ``3 * inlier_distance``; ``fitness`` the share within ``inlier_distance``.
    """
    moved = points @ transform[:3, :3].T + transform[:3, 3]
    return _summary(model.distance(moved), inlier_distance, trim)


def _summary(d: np.ndarray, inlier_distance: float, trim: float = 0.0) -> tuple[float, float, float]:
    """``(rmse, fitness, median)`` of point-to-mesh distances ``d`` ``(N,)`` (see :func:`residuals`)."""
    d = np.sort(d)
    keep = max(1, int(np.ceil(len(d) * (1.0 - trim))))
    capped = np.minimum(d[:keep], 3.0 * inlier_distance)
    return (float(np.sqrt(np.mean(capped ** 2))), float(np.mean(d <= inlier_distance)), float(np.median(d)))


def coverage(reference, scan_tree, transform: np.ndarray, distance: float) -> float:
    """Share of a model's surface seen from above (``reference.visible_points``, model frame)
    that has a scan point within ``distance`` [m] once the scan is moved by ``transform``
    (scan -> model); ``scan_tree`` is a ``scipy.spatial.cKDTree`` of the scan. 1 when the model
    has no such surface.
    """
    vis = reference.visible_points
    if len(vis) == 0:
        return 1.0
    inv = np.linalg.inv(transform)
    d, _ = scan_tree.query(vis @ inv[:3, :3].T + inv[:3, 3], distance_upper_bound=distance)
    return float(np.mean(np.isfinite(d)))


class Aligner(ABC):
    """Interface: ``align(points, scan_box, model) -> Alignment``."""

    name = "base"

    @abstractmethod
    def align(self, points: np.ndarray, scan_box: BoxFeatures, model) -> Alignment:
        """Pose of ``points`` ``(N, 3)`` (with box ``scan_box``) on ``model`` (a ``CadModel``)."""


def _o3d_cloud(points, normals=None):
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.array(points, dtype=np.float64)))
    if normals is not None:
        pcd.normals = o3d.utility.Vector3dVector(np.array(normals, dtype=np.float64))
    return pcd


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _subset(points: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[np.random.default_rng(seed).choice(len(points), n, replace=False)]


def _criteria(iterations: int):
    """ICP stopping rule: ``iterations`` at most, or a relative change below 1e-4 (the residual
    is then steady to a micrometre on these parts; Open3D's 1e-6 default runs to the limit).
    """
    import open3d as o3d

    return o3d.pipelines.registration.ICPConvergenceCriteria(relative_fitness=1e-4, relative_rmse=1e-4,
                                                             max_iteration=iterations)


def _moved(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    return points @ T[:3, :3].T + T[:3, 3]


class BoxIcpAligner(Aligner):
    """Box-frame seeds + point-to-plane ICP, coarse (:meth:`coarse`) then fine (:meth:`refine`).

    Args:
        model_points: CAD surface samples used as ICP target.
        icp_points: scan points (random subset) of the coarse ICP.
        residual_points: scan points (random subset) of the fine ICP and the residual.
        screen_points: scan points that screen the seeds.
        keep_seeds: seeds refined by the coarse ICP after screening (the best of each box
            rotation first, then the second best of each).
        shift_threshold: where the scan's box is shorter than the model's by more than twice this
            [m] on an axis (a partial scan), seeds also put the scan at either end of that axis.
        spin_step_deg: when two model extents are within 2 % of the longest (a round part),
            seeds also turn about the third axis in these steps, and :meth:`refine` searches the
            whole turn in 3-degree, then 0.5-degree steps (0 = off).
        robust_kernel: Tukey width [m] of the last ICP step (``None`` = off).
        swap_tolerance: scan extents that, swapped, are within this [m] of the model's also try
            that axis swap; ``None``: 15 % of each model extent plus 3.5 mm (a partial scan falls
            short, see the classifier's box gate).
        coarse_distance: ICP correspondence distance of the first stage [m]; ``None``: 6 % of the
            model diagonal (at least 4 mm).
        fine_distance: ICP correspondence distance of the later stages [m]; ``None``: 1 % of the
            model diagonal (at least 1.5 mm).
        iterations: ICP iterations per stage.
        inlier_distance: distance for ``fitness`` [m]; distances are capped at three times this.
        trim: share of farthest points left out of the residual RMS.
        accept_rmse: the coarse stage stops trying seeds once a pose's residual, with the
            uncovered share of the surface seen from above counted at the 3 mm cap, is at most
            this [m] (``None``: every seed).
        seed: sampling seed.
    """

    name = "box_icp"

    def __init__(self, *, model_points: int = 4000, icp_points: int = 1000, residual_points: int = 3000,
                 screen_points: int = 120, keep_seeds: int = 6, shift_threshold: float = 0.0015,
                 spin_step_deg: float = 10.0, robust_kernel: float | None = 0.001,
                 swap_tolerance: float | None = None, coarse_distance: float | None = None,
                 fine_distance: float | None = None, iterations: int = 30, inlier_distance: float = 0.001,
                 trim: float = 0.0, accept_rmse: float | None = 0.0005, seed: int = 0):
        if model_points < 100 or screen_points < 10 or keep_seeds < 1 or iterations < 1:
            raise ValueError("box_icp: model_points >= 100, screen_points >= 10, keep_seeds >= 1, iterations >= 1")
        if inlier_distance <= 0:
            raise ValueError(f"box_icp: inlier_distance must be > 0, got {inlier_distance}")
        if icp_points < 50 or residual_points < 50:
            raise ValueError("box_icp: icp_points and residual_points must be >= 50")
        if robust_kernel is not None and robust_kernel <= 0:
            raise ValueError(f"box_icp: robust_kernel must be > 0 or None, got {robust_kernel}")
        if not 0.0 <= trim < 0.5:
            raise ValueError(f"box_icp: trim must be in [0, 0.5), got {trim}")
        self.model_points = int(model_points)
        self.icp_points = int(icp_points)
        self.residual_points = int(residual_points)
        self.screen_points = int(screen_points)
        self.keep_seeds = int(keep_seeds)
        self.shift_threshold = float(shift_threshold)
        self.spin_step_deg = float(spin_step_deg)
        self.robust_kernel = robust_kernel
        self.swap_tolerance = swap_tolerance
        self.coarse_distance = coarse_distance
        self.fine_distance = fine_distance
        self.iterations = int(iterations)
        self.inlier_distance = float(inlier_distance)
        self.trim = float(trim)
        if accept_rmse is not None and accept_rmse <= 0:
            raise ValueError(f"box_icp: accept_rmse must be > 0 or None, got {accept_rmse}")
        self.accept_rmse = accept_rmse
        self.seed = int(seed)

    # ------------------------------------------------------------------------------------------
    def _swap_tol(self, model_box: BoxFeatures) -> np.ndarray | float:
        if self.swap_tolerance is not None:
            return float(self.swap_tolerance)
        # a partial scan's extent may fall short by as much as the classifier's gate admits
        return 0.15 * model_box.dimensions + 0.0035

    @staticmethod
    def _free_axis(model_box: BoxFeatures, tol: float) -> int | None:
        """Box axis about which a round part may turn freely (the other two extents equal)."""
        d = model_box.dimensions
        for free, (i, j) in ((2, (0, 1)), (0, (1, 2)), (1, (0, 2))):
            if abs(d[i] - d[j]) <= tol:
                return free
        return None

    def seeds(self, scan_box: BoxFeatures, model_box: BoxFeatures) -> list[np.ndarray]:
        """Initial scan -> model transforms ``(4, 4)`` from the two box frames."""
        return self._seed_set(scan_box, model_box)[0]

    def _seed_set(self, scan_box: BoxFeatures, model_box: BoxFeatures) -> tuple[list[np.ndarray], list[int]]:
        """Seeds and the index of the box rotation (half turn / swap) each one comes from."""
        mb = model_box
        tol = self._swap_tol(mb)
        free = self._free_axis(mb, 0.02 * float(mb.dimensions.max()))
        spins = [np.eye(3)]
        if free is not None and self.spin_step_deg > 0:
            # a round part turns freely about its axis: the turns replace the axis swaps
            rots = box_rotations(scan_box.dimensions, mb.dimensions, tolerance=0.0)
            axis = np.eye(3)[free]
            spins += [_axis_rotation(axis, np.deg2rad(a)) for a in np.arange(self.spin_step_deg, 180.0,
                                                                              self.spin_step_deg)]
        else:
            rots = box_rotations(scan_box.dimensions, mb.dimensions, tolerance=tol)
        # a scan that falls short of the model's extent may lie at either end of that axis
        short = np.maximum(mb.dimensions - scan_box.dimensions, 0.0) / 2.0
        shifts = np.stack(np.meshgrid(*[[0.0] if sh <= self.shift_threshold else [0.0, -sh, sh] for sh in short],
                                      indexing="ij"), -1).reshape(-1, 3)
        inv_scan = np.linalg.inv(scan_box.frame)
        out, cls = [], []
        for k, R in enumerate(rots):
            for S in spins:
                for t in shifts:
                    M = np.eye(4)
                    M[:3, :3] = S @ R
                    M[:3, 3] = t
                    out.append(mb.frame @ M @ inv_scan)
                    cls.append(k)
        return out, cls

    def _distances(self, model, model_box: BoxFeatures) -> tuple[float, float]:
        diag = float(np.linalg.norm(model_box.dimensions))
        coarse = max(0.06 * diag, 0.004) if self.coarse_distance is None else float(self.coarse_distance)
        fine = max(0.01 * diag, 0.0015) if self.fine_distance is None else float(self.fine_distance)
        return coarse, fine

    def _icp_inputs(self, pts: np.ndarray, model, reference, model_box: BoxFeatures):
        """Source and target clouds of the ICP and its coarse and fine correspondence distances."""
        tgt = (_o3d_cloud(reference.points, reference.normals) if reference is not None
               else _o3d_cloud(*model.sample(self.model_points, seed=self.seed)))
        return (_o3d_cloud(pts), tgt, *self._distances(model, model_box))

    def _capped_cost(self, model, pts: np.ndarray, T: np.ndarray) -> float:
        d = np.minimum(model.distance(_moved(pts, T)), 3.0 * self.inlier_distance)
        return float(np.mean(d ** 2))

    def screen(self, points: np.ndarray, scan_boxes: Sequence[BoxFeatures], model,
               model_box: BoxFeatures | None = None, prior: np.ndarray | None = None) -> tuple[list[np.ndarray], float]:
        """The seeds that start the coarse ICP, best first, and the mean squared capped
        point-to-mesh distance of the best seed on ``screen_points`` scan points [m^2].

        ``prior`` (``(4, 4)`` scan -> model, optional): a pose known beforehand, such as the
        fixture's nominal pose of a part in a cell; it is always the first seed, ahead of the
        box seeds.

        Seeds come from every scan box hypothesis (``scan_boxes``) onto the model's box
        (:meth:`seeds`), screened by exact distances; round robin over the box turns, best
        first: a flat part turned upside down can screen nearly as well as upright, so every turn
        keeps its best shift / spin, then its second best (a thin part's scan can sit in a local
        minimum a shift away); ``keep_seeds`` in all.
        """
        mb = model.box if model_box is None else model_box
        seeds = [T for b in scan_boxes for T in self._seed_set(b, mb)[0]]
        # the class of a seed: the signed permutation nearest to its rotation between the model's
        # box axes and the first scan box's axes (for a round part only where its axis comes
        # from), so the seeds of every box hypothesis that mean the same turn share a class
        free = self._free_axis(mb, 0.02 * float(mb.dimensions.max()))
        B0, Bm = scan_boxes[0].frame[:3, :3], mb.frame[:3, :3]
        cls = []
        for T in seeds:
            Q = Bm.T @ T[:3, :3] @ B0
            rows = range(3) if free is None else (free,)
            cls.append(tuple((int(np.argmax(np.abs(Q[r]))), bool(Q[r, np.argmax(np.abs(Q[r]))] > 0)) for r in rows))
        sub = _subset(points, self.screen_points, self.seed)
        moved = np.concatenate([_moved(sub, T) for T in seeds])
        d = np.minimum(model.distance(moved).reshape(len(seeds), len(sub)), 3.0 * self.inlier_distance)
        cost = np.mean(d ** 2, axis=1)
        ranked: dict = {}
        for i in np.argsort(cost):
            ranked.setdefault(cls[i], []).append(int(i))
        order = [r[j] for j in range(2) for r in ranked.values() if len(r) > j][: self.keep_seeds]
        kept, best = [seeds[i] for i in order], float(cost[order[0]])
        if prior is not None:
            prior = np.asarray(prior, dtype=np.float64)
            if prior.shape != (4, 4) or not np.isfinite(prior).all():
                raise ValueError(f"box_icp: prior must be a finite (4, 4) pose, got shape {prior.shape}")
            d0 = np.minimum(model.distance(_moved(sub, prior)), 3.0 * self.inlier_distance)
            kept, best = [prior] + kept, min(best, float(np.mean(d0 ** 2)))
        return kept, best

    def coarse(self, points: np.ndarray, scan_boxes: Sequence[BoxFeatures], model, reference=None,
               model_box: BoxFeatures | None = None, scan_tree=None, seeds=None) -> tuple[np.ndarray, float]:
        """Best pose from the screened seeds (:meth:`screen`), refined by ICP on ``icp_points``.

        With a ``reference``, the poses are compared in both directions: the residual of the
        scan, and the share of the model surface seen from above that the scan leaves
        uncovered (:func:`coverage`), which tells an upright part from one turned over (a block
        turned over fits its scan as well, but puts the scan on the unseen underside).

        Args:
            points: ``(N, 3)`` scan.
            scan_boxes: the scan's box hypotheses (:func:`~.features.box_hypotheses`).
            model: ``CadModel``.
            reference: its :class:`~.reference.ModelReference` (ICP target, surface seen from
                above), or ``None`` (samples of the model, one-sided comparison).
            model_box: the model's box (default ``model.box``).
            scan_tree: ``scipy.spatial.cKDTree`` of ``points`` (built when needed).
            seeds: the seeds of :meth:`screen` (screened here when ``None``).

        Returns:
            ``(transform (4, 4) scan -> model, cost)``: the mean squared capped point-to-mesh
            distance of the ICP subset [m^2].
        """
        import open3d as o3d

        mb = model.box if model_box is None else model_box
        if seeds is None:
            seeds, _ = self.screen(points, scan_boxes, model, mb)
        icp_pts = _subset(points, self.icp_points, self.seed)
        src, tgt, coarse, fine = self._icp_inputs(icp_pts, model, reference, mb)
        reg = o3d.pipelines.registration
        est = reg.TransformationEstimationPointToPlane()
        crit = _criteria(self.iterations)
        if reference is not None and scan_tree is None:
            from scipy.spatial import cKDTree

            scan_tree = cKDTree(points)
        cap2 = (3.0 * self.inlier_distance) ** 2

        def rank(T: np.ndarray, pts: np.ndarray) -> tuple[float, float]:
            # an uncovered share of the surface seen from above counts as that share of points
            # at the capped distance
            cost = self._capped_cost(model, pts, T)
            if reference is None:
                return cost, cost
            return cost + cap2 * (1.0 - coverage(reference, scan_tree, T, 3.0 * self.inlier_distance)), cost

        # the first stage on half of the points: it only has to find the basin
        half = icp_pts[: max(len(icp_pts) // 2, 50)]
        src_half = _o3d_cloud(half)
        first = []
        for seed_T in seeds:
            T = np.asarray(reg.registration_icp(src_half, tgt, coarse, seed_T, est, crit).transformation)
            first.append((rank(T, half)[0], T))
            if self.accept_rmse is not None and first[-1][0] <= self.accept_rmse ** 2:
                break  # explains the scan (residual and coverage): the other seeds cannot do much better
        first.sort(key=lambda r: r[0])
        best_T, best_cost, best_rank = first[0][1], np.inf, np.inf
        for rank0, T in first[:2]:
            if rank0 > 2.0 * first[0][0]:  # the fine stage only for poses near the best (RMS within 1.4x)
                break
            T = np.asarray(reg.registration_icp(src, tgt, fine, T, est, crit).transformation)
            r, cost = rank(T, icp_pts)
            if r < best_rank:
                best_T, best_cost, best_rank = T, cost, r
        return best_T, best_cost

    def refine(self, points: np.ndarray, transform: np.ndarray, model, reference=None,
               model_box: BoxFeatures | None = None) -> Alignment:
        """Refine a coarse pose on ``residual_points`` scan points and measure the residual.

        A round part (two equal box extents) hardly turns under ICP about its axis (only small
        features such as bolt holes resist), so the turn is first searched all around, in
        3-degree and then 0.5-degree steps, on a few hundred points. With a ``reference`` each
        turn is ranked as :meth:`coarse` ranks its poses, with the share of the model surface
        seen from above that the scan leaves uncovered: two equal extents need not make a part
        round, and a part as tall as it is wide turned half about a horizontal axis fits its
        scan as well upside down. A last Tukey-weighted ICP
        step (Zhang, IVC 1997) is kept when it fits the median better, so that a deviating region
        (a moved bore, a dent) does not pull the part off.

        Returns:
            :class:`Alignment`.
        """
        import open3d as o3d

        mb = model.box if model_box is None else model_box
        pts = _subset(points, self.residual_points, self.seed)
        src, tgt, _, fine = self._icp_inputs(pts, model, reference, mb)
        reg = o3d.pipelines.registration
        est = reg.TransformationEstimationPointToPlane()
        crit = _criteria(self.iterations)
        T = np.asarray(transform, dtype=np.float64)
        free = self._free_axis(mb, 0.02 * float(mb.dimensions.max()))
        if free is not None and self.spin_step_deg > 0:
            axis = mb.frame[:3, :3] @ np.eye(3)[free]
            centre = mb.frame[:3, 3]
            sub = _subset(points, max(self.screen_points, 1000), self.seed)
            cap = 3.0 * self.inlier_distance
            tree = None
            if reference is not None:
                from scipy.spatial import cKDTree

                tree = cKDTree(points)
            for angles in (np.arange(-180.0, 180.0, 3.0), np.arange(-2.0, 2.01, 0.5)):
                cands = []
                for a in angles:
                    S = np.eye(4)
                    S[:3, :3] = _axis_rotation(axis, np.deg2rad(a))
                    S[:3, 3] = centre - S[:3, :3] @ centre
                    cands.append(S @ T)
                moved = np.concatenate([_moved(sub, C) for C in cands])
                d = np.minimum(model.distance(moved).reshape(len(cands), len(sub)), cap)
                cost = np.mean(d ** 2, axis=1)
                if tree is not None:
                    cost += cap ** 2 * (1.0 - np.array([coverage(reference, tree, C, cap) for C in cands]))
                T = cands[int(np.argmin(cost))]
        T = np.asarray(reg.registration_icp(src, tgt, fine, T, est, crit).transformation)
        d = model.distance(_moved(pts, T))
        if self.robust_kernel is not None:
            est_r = reg.TransformationEstimationPointToPlane(reg.TukeyLoss(k=self.robust_kernel))
            T_r = np.asarray(reg.registration_icp(src, tgt, fine, T, est_r, crit).transformation)
            d_r = model.distance(_moved(pts, T_r))
            if np.median(d_r) < np.median(d):
                T, d = T_r, d_r
        rmse, fit, med = _summary(d, self.inlier_distance, self.trim)
        return Alignment(transform=T, rmse=rmse, fitness=fit, median=med)

    def align(self, points: np.ndarray, scan_box: BoxFeatures, model) -> Alignment:
        T, _ = self.coarse(points, [scan_box], model)
        return self.refine(points, T, model)


class RegistrationAligner(Aligner):
    """The project's global + ICP registration (:func:`cosarad_ros.core.registration.register`).

    Args:
        model_points: CAD surface samples used as target.
        inlier_distance: distance for ``fitness`` [m].
        trim: share of farthest points left out of the residual RMS.
        residual_points: scan points (random subset) of the residual.
        seed: seed of the model samples, the residual subset and ``register``.
        attempts: global hypotheses per feature scale of ``register``.
        allow_scale: let ``register`` estimate a scale factor too.
        **register_options: flat :class:`~cosarad_ros.core.registration.RegisterOptions` of
            ``register`` (e.g. ``voxel_size``, ``min_fitness``); checked here.
    """

    name = "registration"

    def __init__(self, *, model_points: int = 20000, inlier_distance: float = 0.001, trim: float = 0.0,
                 residual_points: int = 20000, seed: int = 0, attempts: int = 5, allow_scale: bool = False,
                 **register_options):
        from cosarad_ros.core.registration import RegisterOptions

        self.model_points = int(model_points)
        self.residual_points = int(residual_points)
        self.trim = float(trim)
        self.inlier_distance = float(inlier_distance)
        self.seed = int(seed)
        self.attempts = int(attempts)
        self.allow_scale = bool(allow_scale)
        self.register_options = RegisterOptions.from_options(register_options)

    def align(self, points: np.ndarray, scan_box: BoxFeatures, model) -> Alignment:
        from cosarad_ros.core.registration import register

        mpts, _ = model.sample(self.model_points, seed=self.seed)
        res = register(points, mpts, self.register_options, attempts=self.attempts, allow_scale=self.allow_scale,
                       seed=self.seed)
        T = np.asarray(res.transform, dtype=np.float64)
        rmse, fit, med = residuals(model, _subset(points, self.residual_points, self.seed), T,
                                  self.inlier_distance, self.trim)
        return Alignment(transform=T, rmse=rmse, fitness=fit, median=med)


ALIGNERS = {"box_icp": BoxIcpAligner, "registration": RegistrationAligner}


def make_aligner(config: str | Mapping | Aligner | None = "box_icp") -> Aligner | None:
    """An aligner from ``"box_icp"`` / ``"registration"`` / ``{"method": ..., **kwargs}`` / an
    instance; ``None`` or ``"none"`` disables registration (paper-only ranking).
    """
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
