"""Registration of scans onto a part type's reference template, with retries.

COSARAD registers templates and the test scan into one frame, retrying and keeping the result
with the lowest one-sided Chamfer distance (scan -> reference). This wraps the project's
:func:`cosarad_ros.core.registration.register` (FPFH + RANSAC + ICP with checks) in that retry
loop: further seeds are tried while the result fails its checks, then a plain Open3D FPFH + RANSAC
+ point-to-plane ICP (Rusu et al., ICRA 2009; Fischler & Bolles, CACM 1981; Chen & Medioni, IVC
1992) is tried as a second opinion, and the lowest-Chamfer candidate wins.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["Alignment", "align_to_reference"]


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align_to_reference`.

    Attributes:
        transform: ``(4, 4)`` source -> reference frame.
        chamfer: one-sided Chamfer distance (mean nearest-neighbour distance source -> reference).
        fitness: share of source points within the inlier distance.
        ok: passed the checks (``fitness >= 0.8`` and ``chamfer <= max(0.3 x voxel, 1.5 x the
            reference's point spacing)``, voxel = reference box diagonal / 50).
        reason: why not ``ok``.
        tries: registrations run.
    """

    transform: np.ndarray
    chamfer: float
    fitness: float
    ok: bool
    reason: str
    tries: int


def _measure(src: np.ndarray, tree: cKDTree, T: np.ndarray, inlier: float) -> tuple[float, float]:
    d, _ = tree.query(src @ T[:3, :3].T + T[:3, 3], k=1)
    return float(d.mean()), float((d <= inlier).mean())


def _open3d_fpfh_ransac_icp(src: np.ndarray, tgt: np.ndarray, voxel: float, seed: int) -> np.ndarray:
    import open3d as o3d

    reg = o3d.pipelines.registration

    def prep(p):
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p)).voxel_down_sample(voxel)
        pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=2 * voxel, max_nn=30))
        f = reg.compute_fpfh_feature(pc, o3d.geometry.KDTreeSearchParamHybrid(radius=5 * voxel, max_nn=100))
        return pc, f

    o3d.utility.random.seed(int(seed))
    a, fa = prep(src)
    b, fb = prep(tgt)
    r = reg.registration_ransac_based_on_feature_matching(
        a, b, fa, fb, True, 1.5 * voxel, reg.TransformationEstimationPointToPoint(False), 3,
        [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(1.5 * voxel)],
        reg.RANSACConvergenceCriteria(100000, 0.999))
    T = r.transformation
    for dist in (2 * voxel, voxel, 0.5 * voxel):
        T = reg.registration_icp(a, b, dist, T, reg.TransformationEstimationPointToPlane()).transformation
    return np.asarray(T)


def align_to_reference(source, target, *, attempts: int = 3, retries: int = 3, seed: int = 0,
                       target_tree: cKDTree | None = None) -> Alignment:
    """Register ``source (N, 3)`` onto ``target (M, 3)``; retry until the checks pass.

    Args:
        attempts: global hypotheses per :func:`~cosarad_ros.core.registration.register` call.
        retries: further seeds tried while the result fails its checks (each also tries the
            plain Open3D pipeline).
        seed: first seed.
        target_tree: a ``cKDTree`` of ``target`` (optional, saves rebuilding it).
    """
    import warnings

    from ..registration import register

    src = np.asarray(source, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    tree = target_tree if target_tree is not None else cKDTree(tgt)
    voxel = float(np.linalg.norm(tgt.max(0) - tgt.min(0))) / 50.0
    # two independent samples of one surface lie about half their spacing apart, so sparse
    # clouds get a looser Chamfer bound than 0.3 voxel
    probe = tgt[np.random.default_rng(seed).choice(len(tgt), min(len(tgt), 2000), replace=False)]
    spacing = float(np.median(tree.query(probe, k=2)[0][:, 1]))
    max_chamfer = max(0.3 * voxel, 1.5 * spacing)
    # 20k random source points are plenty for a rigid pose and keep 50k-1M point scans fast
    sub = src if len(src) <= 20_000 else src[np.random.default_rng(seed).choice(len(src), 20_000, replace=False)]
    best = None
    tries = 0
    for k in range(1 + max(0, retries)):
        cands = []
        try:
            r = register(sub, tgt, attempts=attempts, seed=seed + k)
            cands.append(np.asarray(r.transform))
        except ValueError:
            pass
        if k > 0 or not cands:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    cands.append(_open3d_fpfh_ransac_icp(sub, tgt, voxel, seed + k))
                except RuntimeError:
                    pass
        for T in cands:
            tries += 1
            ch, fit = _measure(sub, tree, T, voxel)
            if best is None or ch < best[1]:
                best = (T, ch, fit)
        if best is not None and best[1] <= max_chamfer and best[2] >= 0.8:
            break
    if best is None:
        raise ValueError("registration produced no transform (clouds too small or degenerate?)")
    T, ch, fit = best
    reasons = []
    if fit < 0.8:
        reasons.append(f"fitness {fit:.3f} < 0.8")
    if ch > max_chamfer:
        reasons.append(f"chamfer {ch:.4g} > {max_chamfer:.4g}")
    return Alignment(T, ch, fit, not reasons, "; ".join(reasons), tries)
