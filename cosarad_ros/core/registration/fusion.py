"""Multi-view fusion: scans from known sensor poses merged into one cloud in the part frame.

Each view ``i`` is a cloud in the sensor (optical) frame, taken at a pose known from the arm's
forward kinematics ``T_base_flange[i]`` and the hand-eye calibration ``T_flange_sensor``. With the
part located at ``T_base_part``, the view's points map into the part frame by::

    T_part_sensor[i] = inv(T_base_part) @ T_base_flange[i] @ T_flange_sensor

Kinematic and hand-eye errors leave the views misaligned by a fraction of a millimetre to a few
millimetres, which shows up as doubled surfaces. :func:`fuse_views` therefore

1. brings every view into the part frame with its kinematic pose,
2. registers every overlapping pair with point-to-plane ICP starting from those poses, rejecting
   pairs with incompatible normals (normals point to the sensor that saw them, so the two faces
   of a thin wall never match),
3. solves a pose graph over all pair constraints (multiway registration, Choi, Zhou & Koltun,
   "Robust reconstruction of indoor scenes", CVPR 2015), then moves the whole set rigidly to where
   it agrees best with all kinematic poses together (least squares, Umeyama), so the result stays
   in the part frame and the views' independent pose errors average out,
4. rejects any correction larger than ``max_correction`` (the view keeps its kinematic pose and the
   result says so), and keeps the refined poses only when they lower the overlap residual by a
   real margin (``min_residual_gain``): with accurate kinematics an ICP between noisy views
   only fits the noise, and sliding a view along a surface by a few tenths of a millimetre would
   show up downstream as a deviation, and
5. merges the views with voxel-based de-duplication: all points falling into one voxel are
   averaged into one, so overlaps do not double the density.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from ..geometry import as_points, as_transform, rotation_angle_deg
from .preprocess import estimate_normals, part_size, point_spacing, to_o3d
from .similarity import similarity_icp, umeyama

__all__ = ["FusionResult", "fuse_views", "view_poses"]

_reg = o3d.pipelines.registration


@dataclass(frozen=True)
class FusionResult:
    """Output of :func:`fuse_views`.

    Attributes:
        points: ``(M, 3)`` merged, de-duplicated points in the part frame.
        normals: ``(M, 3)`` unit normals (oriented towards the sensors that saw them).
        poses: ``(V, 4, 4)`` refined sensor -> part transforms.
        initial_poses: ``(V, 4, 4)`` kinematic sensor -> part transforms.
        corrections_mm: ``(V,)`` largest point displacement of each view caused by the
            refinement, in the cloud's units x 1000 (millimetres for metre clouds).
        corrections_deg: ``(V,)`` rotation of each view's correction.
        pairs: number of overlapping view pairs used as constraints.
        residual: RMS point-to-plane distance between overlapping views after fusion.
        residual_before: the same before refinement.
        voxel_size: de-duplication voxel.
        ok: every view was either refined within ``max_correction`` or had no overlap.
        reason: what went wrong ("" when ok).
    """

    points: np.ndarray
    normals: np.ndarray
    poses: np.ndarray
    initial_poses: np.ndarray
    corrections_mm: np.ndarray
    corrections_deg: np.ndarray
    pairs: int
    residual: float
    residual_before: float
    voxel_size: float
    ok: bool
    reason: str


def view_poses(flange_poses, *, hand_eye=None, part_pose=None) -> np.ndarray:
    """Sensor -> part transforms from flange poses, the hand-eye transform and the part pose.

    Args:
        flange_poses: ``(V, 4, 4)`` ``T_base_flange`` per view (or sensor poses when
            ``hand_eye`` is ``None``).
        hand_eye: ``(4, 4)`` ``T_flange_sensor``; identity when ``None``.
        part_pose: ``(4, 4)`` ``T_base_part``; identity when ``None`` (part frame = base frame).

    Returns:
        ``(V, 4, 4)`` ``T_part_sensor``.
    """
    X = np.eye(4) if hand_eye is None else as_transform(hand_eye, name="hand_eye")
    P_inv = np.eye(4) if part_pose is None else np.linalg.inv(as_transform(part_pose, name="part_pose"))
    return np.stack([P_inv @ as_transform(T, name=f"pose {i}") @ X for i, T in enumerate(flange_poses)])


def _apply(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ T[:3, :3].T + T[:3, 3]


def _voxel_merge(points: np.ndarray, normals: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """Average points and normals per voxel of edge ``voxel``."""
    keys = np.floor((points - points.min(axis=0)) / voxel).astype(np.int64)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    out_p = np.zeros((len(counts), 3))
    out_n = np.zeros((len(counts), 3))
    np.add.at(out_p, inv, points)
    np.add.at(out_n, inv, normals)
    out_p /= counts[:, None]
    out_n /= np.maximum(np.linalg.norm(out_n, axis=1, keepdims=True), 1e-12)
    return out_p, out_n


def fuse_views(clouds, poses, *, hand_eye=None, part_pose=None, voxel_size: float | None = None,
               refine: bool = True, max_correspondence: float | None = None, max_correction: float | None = None,
               min_overlap: float = 0.1, icp_iterations: int = 30, min_residual_gain: float = 0.1,
               icp_tolerance: float = 1e-4, progress: bool = False) -> FusionResult:
    """Fuse scans taken from known sensor poses into one de-duplicated cloud in the part frame.

    Args:
        clouds: sequence of ``(N_i, 3)`` views in the sensor frame (non-finite rows are dropped).
        poses: sequence of ``(4, 4)``: sensor poses, or flange poses when ``hand_eye`` is given
            (see :func:`view_poses`).
        hand_eye: ``(4, 4)`` flange -> sensor transform (``T_flange_sensor``).
        part_pose: ``(4, 4)`` pose of the part in the poses' base frame.
        voxel_size: de-duplication voxel; default: the largest median point spacing of the views
            (keeps the scan resolution).
        refine: run the pairwise ICP + pose-graph refinement (``False``: kinematic poses only).
        max_correspondence: ICP correspondence distance, i.e. the largest kinematic error
            expected; default: fused-cloud bounding-box diagonal / 40.
        max_correction: largest accepted displacement of a view by the refinement; default
            ``max_correspondence``.
        min_overlap: least fraction of a view's points near another view for the pair to count.
        icp_iterations: ICP iterations per pair.
        min_residual_gain: the refined poses are kept only when they lower the RMS overlap residual
            by at least this share (else the kinematic poses stand; the noise floor of the
            residual is not a misalignment). 0.1: with exact poses a refinement slid one view of a
            good block 1.6 mm along a face for a 5.1 % gain (a ghost face, a false reject); on 14
            parts with pose errors of 0-1 mm the views end up as close to the truth as with 0.05,
            0.15 leaves more of a 0.3 mm error (``benchmarks/bench_fusion_accuracy.py``,
            2026-12-07).
        icp_tolerance: a pair's ICP stops when an update moves no point by more than this share
            of the view's extent (1e-4: 15 um on a 150 mm view, a seventeenth of the sensor's depth
            noise). Against 1e-7, which ran nearly every pair to ``icp_iterations``: fusion
            0.47-0.71x the time (median 0.65x) at the same overlap residual, views placed within
            0.07 mm of the stricter result (``benchmarks/bench_fusion.py``, 2026-12-07).
        progress: tqdm bar over the pairs.

    Returns:
        :class:`FusionResult`.

    Raises:
        ValueError: no views, mismatched counts, bad poses, or a view with fewer than 10 points.
    """
    clouds = list(clouds)
    if not clouds:
        raise ValueError("fuse_views needs at least one view")
    poses = list(poses)
    if len(poses) != len(clouds):
        raise ValueError(f"got {len(clouds)} clouds but {len(poses)} poses")
    views = []
    for i, c in enumerate(clouds):
        arr = np.asarray(c, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"view {i} must have shape (N, 3), got {arr.shape}")
        arr = arr[np.isfinite(arr).all(axis=1)]
        views.append(as_points(arr, name=f"view {i}", min_points=10))
    K = view_poses(poses, hand_eye=hand_eye, part_pose=part_pose)
    n_views = len(views)
    world = [_apply(K[i], views[i]) for i in range(n_views)]
    allpts = np.concatenate(world)
    diag = part_size(allpts)
    if voxel_size is None:
        voxel_size = max(point_spacing(w) for w in world)
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    max_corr = diag / 40.0 if max_correspondence is None else float(max_correspondence)
    max_correction = max_corr if max_correction is None else float(max_correction)
    if not (np.isfinite(icp_tolerance) and icp_tolerance > 0):
        raise ValueError(f"icp_tolerance must be > 0, got {icp_tolerance}")
    if not 0.0 <= min_residual_gain < 1.0:
        raise ValueError(f"min_residual_gain must be in [0, 1), got {min_residual_gain}")
    if not max_corr > 0 or not max_correction > 0:
        raise ValueError("max_correspondence and max_correction must be > 0")

    # per-view normals, oriented towards the sensor (origin of the sensor frame)
    normals_local = [estimate_normals(views[i], radius=max(2.5 * point_spacing(views[i]), max_corr / 2),
                                      viewpoint=np.zeros(3)) for i in range(n_views)]
    icp_voxel = max_corr / 3.0
    down = []
    for i in range(n_views):
        pcd = to_o3d(views[i], normals_local[i]).voxel_down_sample(icp_voxel)
        n = np.asarray(pcd.normals)
        pcd.normals = o3d.utility.Vector3dVector(n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12))
        down.append(pcd)
    loc_pts = [np.asarray(d.points) for d in down]
    loc_nrm = [np.asarray(d.normals) for d in down]
    loc_tree = [cKDTree(p) for p in loc_pts]

    def pair_distances(i, j, Pi, Pj):
        """Point-to-point and point-to-plane distances of view i's points to view j (poses Pi,
        Pj); pairs with incompatible normals (over 60 degrees apart) count as infinitely far.
        """
        M = np.linalg.inv(Pj) @ Pi
        a = _apply(M, loc_pts[i])  # view i's points in view j's frame
        d, idx = loc_tree[j].query(a, k=1)
        nj = loc_nrm[j][idx]
        d = np.where(np.einsum("ij,ij->i", loc_nrm[i] @ M[:3, :3].T, nj) >= 0.5, d, np.inf)
        return d, np.abs(np.einsum("ij,ij->i", a - loc_pts[j][idx], nj))

    pairs = []
    for i in range(n_views):
        for j in range(i + 1, n_views):
            if (pair_distances(i, j, K[i], K[j])[0] < max_corr).mean() >= min_overlap:
                pairs.append((i, j))

    def residual(Ps):
        """RMS point-to-plane distance between overlapping views."""
        sq = []
        for i, j in pairs:
            d, dp = pair_distances(i, j, Ps[i], Ps[j])
            sq.append(dp[d < max_corr] ** 2)
        allsq = np.concatenate(sq) if sq else np.zeros(0)
        return float(np.sqrt(allsq.mean())) if len(allsq) else 0.0

    residual_before = residual(K)
    final = K.copy()
    reasons = []
    if refine and pairs:
        graph = _reg.PoseGraph()
        for i in range(n_views):
            graph.nodes.append(_reg.PoseGraphNode(K[i]))
        for i, j in tqdm(pairs, desc="fuse: pairs", disable=not progress, leave=False):
            T = np.linalg.inv(K[j]) @ K[i]  # view i's frame -> view j's frame, kinematic
            try:
                for dist in (max_corr, max_corr / 2.0, max_corr / 4.0):
                    T, _ = similarity_icp(loc_pts[i], loc_pts[j], loc_nrm[j], init=T, max_distance=dist,
                                          max_iterations=int(icp_iterations), tolerance=float(icp_tolerance),
                                          with_scale=False,
                                          target_tree=loc_tree[j], source_normals=loc_nrm[i])
            except ValueError:
                continue  # the pair drifted apart: no constraint
            info = _reg.get_information_matrix_from_point_clouds(down[i], down[j], max_corr / 4.0, T)
            graph.edges.append(_reg.PoseGraphEdge(i, j, T, info, uncertain=True))
        option = _reg.GlobalOptimizationOption(max_correspondence_distance=max_corr / 4.0,
                                               edge_prune_threshold=0.25, reference_node=0)
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            _reg.global_optimization(graph, _reg.GlobalOptimizationLevenbergMarquardt(),
                                     _reg.GlobalOptimizationConvergenceCriteria(), option)
        opt = np.stack([np.asarray(graph.nodes[i].pose) for i in range(n_views)])
        # gauge: the rigid motion of the whole set that best agrees with all kinematic poses at
        # once (their independent errors average out) rather than trusting one anchor view
        A = np.concatenate([_apply(opt[i], loc_pts[i]) for i in range(n_views)])
        B = np.concatenate([_apply(K[i], loc_pts[i]) for i in range(n_views)])
        G = umeyama(A, B, with_scale=False).transform
        opt = np.stack([G @ opt[i] for i in range(n_views)])
        for i in range(n_views):
            disp = np.linalg.norm(_apply(opt[i], views[i]) - world[i], axis=1).max()
            if disp > max_correction:
                reasons.append(f"view {i}: correction {disp:.4g} > {max_correction:.4g}, kept kinematic pose")
            else:
                final[i] = opt[i]
        if residual(final) > (1.0 - min_residual_gain) * residual_before:
            # not an error: the kinematic poses already agree to the noise level
            final = K.copy()
    corr_mm = np.array([np.linalg.norm(_apply(final[i], views[i]) - world[i], axis=1).max() * 1000.0
                        for i in range(n_views)])
    corr_deg = np.array([rotation_angle_deg(final[i][:3, :3], K[i][:3, :3]) for i in range(n_views)])
    pts = np.concatenate([_apply(final[i], views[i]) for i in range(n_views)])
    nrm = np.concatenate([normals_local[i] @ final[i][:3, :3].T for i in range(n_views)])
    merged_p, merged_n = _voxel_merge(pts, nrm, float(voxel_size))
    return FusionResult(points=merged_p, normals=merged_n, poses=final, initial_poses=K, corrections_mm=corr_mm,
                        corrections_deg=corr_deg, pairs=len(pairs), residual=residual(final),
                        residual_before=residual_before, voxel_size=float(voxel_size), ok=not reasons,
                        reason="; ".join(reasons))
