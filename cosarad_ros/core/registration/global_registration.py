"""Global (initial-guess-free) alignment hypotheses.

Methods (config string -> class):

* ``"fpfh_ransac"`` (default): Fast Point Feature Histograms (Rusu, Blodow & Beetz, "Fast Point
  Feature Histograms (FPFH) for 3D registration", ICRA 2009) matched in feature space with a mutual
  (reciprocal) nearest-neighbour filter, then a vectorised multi-hypothesis RANSAC (Fischler &
  Bolles, CACM 1981) over 3-point samples pruned by edge-length similarity; it returns several
  *distinct* good poses rather than one.
* ``"o3d_ransac"``: Open3D's single-hypothesis FPFH RANSAC, run once per seed.
* ``"fgr"``: Fast Global Registration (Zhou, Park & Koltun, ECCV 2016) on the same features.
* ``"identity"``: no global search; the hypothesis is the identity (or the caller's ``init``).

The pipeline refines every hypothesis and keeps the best, so a method should propose several
plausible poses for (near-)symmetric parts; :func:`.symmetry.symmetry_hypotheses` adds the poses
such a part is easily confused with.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from ..geometry import as_points
from ..settings import build_named
from .preprocess import to_o3d

__all__ = [
    "Features",
    "compute_features",
    "GlobalAligner",
    "FpfhRansac",
    "Open3dRansac",
    "feature_correspondences",
    "FastGlobal",
    "IdentityAligner",
    "GLOBAL_ALIGNERS",
    "make_global_aligner",
]

_reg = o3d.pipelines.registration


@dataclass(frozen=True)
class Features:
    """Down-sampled cloud with normals and FPFH descriptors.

    Attributes:
        points: ``(M, 3)``.
        normals: ``(M, 3)``.
        fpfh: ``(M, 33)`` FPFH histograms.
        voxel_size: the down-sampling voxel the features were computed for.
    """

    points: np.ndarray
    normals: np.ndarray
    fpfh: np.ndarray
    voxel_size: float

    def pcd(self) -> o3d.geometry.PointCloud:
        return to_o3d(self.points, self.normals)

    def feature(self):
        f = _reg.Feature()
        f.data = np.ascontiguousarray(self.fpfh.T)
        return f


def compute_features(points, normals, *, voxel_size: float, radius_factor: float = 5.0,
                     max_nn: int = 100) -> Features:
    """FPFH descriptors of a down-sampled cloud.

    Args:
        points: ``(M, 3)`` down-sampled points.
        normals: ``(M, 3)`` their unit normals.
        voxel_size: the down-sampling voxel; the feature radius is ``radius_factor * voxel_size``.
        radius_factor: feature radius in voxels (5 is the usual choice).
        max_nn: neighbour cap of the feature search.

    Returns:
        :class:`Features`.
    """
    pts = as_points(points, name="points", min_points=3)
    nrm = as_points(normals, name="normals")
    if nrm.shape != pts.shape:
        raise ValueError(f"normals shape {nrm.shape} does not match points {pts.shape}")
    if not voxel_size > 0 or not radius_factor > 0:
        raise ValueError("voxel_size and radius_factor must be > 0")
    fpfh = _reg.compute_fpfh_feature(
        to_o3d(pts, nrm), o3d.geometry.KDTreeSearchParamHybrid(radius=radius_factor * voxel_size, max_nn=max_nn))
    return Features(points=pts, normals=nrm, fpfh=np.asarray(fpfh.data).T.copy(), voxel_size=float(voxel_size))


class GlobalAligner(ABC):
    """Interface: propose up to ``count`` coarse ``(4, 4)`` transforms (source -> target), best first."""

    name = "base"

    @abstractmethod
    def propose(self, source: Features, target: Features, *, count: int, seed: int,
                with_scale: bool = False) -> list[np.ndarray]:
        """Up to ``count`` distinct hypotheses mapping ``source`` onto ``target`` (similarities
        when ``with_scale`` and the method supports it).
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _fit_from_moments(H: np.ndarray, mp: np.ndarray, mq: np.ndarray, var: np.ndarray | None):
    """Rotation (times scale when ``var``, the source spread, is given) and translation from the
    cross-covariances ``H (B, 3, 3)`` and means ``mp``, ``mq`` ``(B, 3)`` (Arun et al. 1987 /
    Umeyama 1991; reflections excluded).
    """
    U, S, Vt = np.linalg.svd(H)
    V = np.swapaxes(Vt, 1, 2)
    Ut = np.swapaxes(U, 1, 2)
    d = np.sign(np.linalg.det(V @ Ut))
    d[d == 0] = 1.0
    D = np.zeros((len(H), 3, 3))
    D[:, 0, 0] = 1.0
    D[:, 1, 1] = 1.0
    D[:, 2, 2] = d
    R = V @ D @ Ut
    if var is not None:
        sc = (S[:, 0] + S[:, 1] + d * S[:, 2]) / np.maximum(var, 1e-300)
        R = R * sc[:, None, None]
    t = mq - np.einsum("bij,bj->bi", R, mp)
    return R, t


def _kabsch_batch(P: np.ndarray, Q: np.ndarray, with_scale: bool = False):
    """Rigid (or similarity) fits for a batch of point sets: ``P``, ``Q`` ``(B, n, 3)`` ->
    ``R (B, 3, 3)`` including the scale, ``t (B, 3)`` (Arun et al. 1987 / Umeyama 1991).
    """
    mp = P.mean(axis=1)
    mq = Q.mean(axis=1)
    Pc = P - mp[:, None]
    H = np.einsum("bni,bnj->bij", Pc, Q - mq[:, None])
    return _fit_from_moments(H, mp, mq, np.einsum("bni,bni->b", Pc, Pc) if with_scale else None)


def _kabsch_weighted(P: np.ndarray, Q: np.ndarray, W: np.ndarray, with_scale: bool = False):
    """:func:`_kabsch_batch` with per-point weights ``W (B, n)`` (0 leaves a point out): the fit of
    each batch member to its weighted points only.
    """
    sw = W.sum(1)
    mp = np.einsum("bn,bni->bi", W, P) / sw[:, None]
    mq = np.einsum("bn,bni->bi", W, Q) / sw[:, None]
    Pc = P - mp[:, None]
    H = np.einsum("bn,bni,bnj->bij", W, Pc, Q - mq[:, None])
    return _fit_from_moments(H, mp, mq, np.einsum("bn,bni,bni->b", W, Pc, Pc) if with_scale else None)


def _to_matrix(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def feature_correspondences(source: Features, target: Features, *, k: int = 2, mutual_filter: bool = True,
                            min_mutual: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Putative matches in FPFH space.

    Each source point is matched to its ``k`` nearest target descriptors. With ``mutual_filter``
    only reciprocal nearest neighbours are kept, unless fewer than ``min_mutual`` survive (a small
    partial view), in which case all ``k`` matches per point are used.

    Returns:
        ``(src_idx (C,), tgt_idx (C,))`` index pairs.
    """
    from scipy.spatial import cKDTree

    k = max(1, min(int(k), len(target.fpfh)))
    _, nn = cKDTree(target.fpfh).query(source.fpfh, k=k, workers=-1)
    nn = nn.reshape(len(source.fpfh), k)
    if mutual_filter:
        _, back = cKDTree(source.fpfh).query(target.fpfh, k=1, workers=-1)
        src_idx = np.arange(len(source.fpfh))
        mutual = back[nn[:, 0]] == src_idx
        if mutual.sum() >= min_mutual:
            return src_idx[mutual], nn[mutual, 0]
    src_idx = np.repeat(np.arange(len(source.fpfh)), k)
    return src_idx, nn.reshape(-1)


class FpfhRansac(GlobalAligner):
    """FPFH correspondences + RANSAC with mutual filter and edge-length checks, multi-hypothesis.

    The RANSAC is vectorised: ``iterations`` random triplets of putative matches are drawn at once;
    triplets whose three edge lengths disagree between source and target by more than the
    ``edge_length`` ratio (or whose edges are shorter than ``min_edge_factor`` voxels) are pruned
    before fitting, as in the edge-length checker of Open3D / the pruning of Zhou et al. 2016; the
    survivors are fitted (Kabsch) and scored by how many putative matches they explain within
    ``distance_factor`` voxels. The best ``candidates`` are then scored geometrically (inlier
    fraction of the whole down-sampled source against the target) and reduced to distinct poses
    (non-maximum suppression), so that symmetric parts yield several hypotheses instead of one.

    Args:
        distance_factor: inlier distance in voxels.
        edge_length: least ratio of corresponding edge lengths (``0.9``).
        min_edge_factor: shortest triangle edge, in voxels (degenerate triplets are skipped).
        mutual_filter: keep only reciprocal feature matches (with fallback, see
            :func:`feature_correspondences`).
        k_matches: target descriptors matched per source point when not mutual.
        iterations: triplets drawn.
        candidates: hypotheses re-scored geometrically.
        seed: default seed (``propose`` overrides it).
    """

    name = "fpfh_ransac"

    def __init__(self, *, distance_factor: float = 1.5, edge_length: float = 0.9, min_edge_factor: float = 2.0,
                 mutual_filter: bool = True, k_matches: int = 2, iterations: int = 20_000, candidates: int = 200):
        if not distance_factor > 0:
            raise ValueError(f"distance_factor must be > 0, got {distance_factor}")
        if not 0 < edge_length < 1:
            raise ValueError(f"edge_length must be in (0, 1), got {edge_length}")
        if iterations < 1 or candidates < 1 or k_matches < 1:
            raise ValueError("iterations, candidates and k_matches must be >= 1")
        self.distance_factor = float(distance_factor)
        self.edge_length = float(edge_length)
        self.min_edge_factor = float(min_edge_factor)
        self.mutual_filter = bool(mutual_filter)
        self.k_matches = int(k_matches)
        self.iterations = int(iterations)
        self.candidates = int(candidates)

    def propose(self, source: Features, target: Features, *, count: int, seed: int,
                with_scale: bool = False) -> list[np.ndarray]:
        from scipy.spatial import cKDTree

        rng = np.random.default_rng(seed)
        v = target.voxel_size
        thr = self.distance_factor * v
        si, ti = feature_correspondences(source, target, k=self.k_matches, mutual_filter=self.mutual_filter)
        if len(si) < 3:
            return [np.eye(4)]
        ps, pt = source.points[si], target.points[ti]
        # sample triplets of distinct matches; keep those passing the edge-length checks
        tri = rng.integers(0, len(si), size=(self.iterations, 3))
        tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])]
        A, B = ps[tri], pt[tri]
        ok = np.ones(len(tri), dtype=bool)
        for a, b in ((0, 1), (1, 2), (0, 2)):
            la = np.linalg.norm(A[:, a] - A[:, b], axis=1)
            lb = np.linalg.norm(B[:, a] - B[:, b], axis=1)
            ok &= (np.minimum(la, lb) >= self.edge_length * np.maximum(la, lb)) & (la >= self.min_edge_factor * v)
        A, B = A[ok], B[ok]
        if len(A) == 0:
            return [np.eye(4)]
        R, t = _kabsch_batch(A, B, with_scale)
        if with_scale:  # triplets implying an absurd scale are wrong matches
            sc = np.cbrt(np.linalg.det(R))
            ok = (sc > 0.5) & (sc < 2.0)
            R, t = R[ok], t[ok]
            if len(R) == 0:
                return [np.eye(4)]
        # consensus over the putative matches: |R p + t - q|^2 expanded into matrix products
        # (p^T R^T R p + |t|^2 + |q|^2 + 2 (R^T t).p - 2 R:(q p^T) - 2 t.q), in chunks to bound memory
        pp = np.einsum("ni,nj->nij", ps, ps).reshape(-1, 9)
        qp = np.einsum("ni,nj->nij", pt, ps).reshape(-1, 9)
        qq = np.einsum("ni,ni->n", pt, pt)
        counts = np.empty(len(R), dtype=np.int64)
        chunk = max(1, 4_000_000 // max(len(ps), 1))
        for c0 in range(0, len(R), chunk):
            Rc, tc = R[c0:c0 + chunk], t[c0:c0 + chunk]
            RtR = np.einsum("bki,bkj->bij", Rc, Rc).reshape(-1, 9)
            Rtt = np.einsum("bki,bk->bi", Rc, tc)
            d2 = (RtR @ pp.T + (tc * tc).sum(1)[:, None] + qq[None] + 2.0 * (Rtt @ ps.T)
                  - 2.0 * (Rc.reshape(-1, 9) @ qp.T) - 2.0 * (tc @ pt.T))
            counts[c0:c0 + chunk] = (d2 < thr * thr).sum(axis=1)
        top = np.argsort(-counts, kind="stable")[: self.candidates]
        # geometric score of the best ones: inlier fraction of the whole source (one batched
        # query), each re-fitted on its geometric inliers and their nearest target points
        tree = cKDTree(target.points)
        src = source.points
        moved = np.einsum("bij,nj->bni", R[top], src) + t[top][:, None]
        d, idx = tree.query(moved.reshape(-1, 3), k=1, distance_upper_bound=thr, workers=-1)
        inl = np.isfinite(d).reshape(len(top), len(src))
        idx = np.minimum(idx.reshape(len(top), len(src)), len(target.points) - 1)
        w = inl.astype(np.float64)
        nw = w.sum(1)
        refit = nw >= 3
        Rr, tr = R[top].copy(), t[top].copy()
        if refit.any():
            Rr[refit], tr[refit] = _kabsch_weighted(np.broadcast_to(src, (int(refit.sum()),) + src.shape),
                                                    target.points[idx[refit]], w[refit], with_scale)
        scored = [(float(inl[i].mean()), _to_matrix(Rr[i], tr[i])) for i in range(len(top))]
        scored.sort(key=lambda x: -x[0])
        extent = float(np.linalg.norm(source.points.max(0) - source.points.min(0)))
        out: list[np.ndarray] = []
        for _, T in scored:
            if all(_pose_gap(T, U, extent) > 2.0 * v for U in out):
                out.append(T)
            if len(out) >= count:
                break
        return out


def _pose_gap(A: np.ndarray, B: np.ndarray, extent: float) -> float:
    """Approximate largest displacement between poses ``A`` and ``B`` over an object of size ``extent``."""
    Ra = A[:3, :3] / np.cbrt(np.linalg.det(A[:3, :3]))
    Rb = B[:3, :3] / np.cbrt(np.linalg.det(B[:3, :3]))
    c = np.clip((np.trace(Ra.T @ Rb) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.linalg.norm(A[:3, 3] - B[:3, 3]) + np.arccos(c) * extent)


class Open3dRansac(GlobalAligner):
    """Open3D's FPFH + RANSAC (one hypothesis per seed; mutual filter, edge-length and distance checks).

    Args:
        distance_factor: inlier distance in voxels.
        edge_length: edge-length checker similarity.
        mutual_filter: reciprocal feature matches only.
        max_iterations: RANSAC iteration cap.
        confidence: RANSAC stop confidence.
    """

    name = "o3d_ransac"

    def __init__(self, *, distance_factor: float = 1.5, edge_length: float = 0.9, mutual_filter: bool = True,
                 max_iterations: int = 100_000, confidence: float = 0.999):
        if not distance_factor > 0:
            raise ValueError(f"distance_factor must be > 0, got {distance_factor}")
        if not 0 < edge_length < 1:
            raise ValueError(f"edge_length must be in (0, 1), got {edge_length}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        self.distance_factor = float(distance_factor)
        self.edge_length = float(edge_length)
        self.mutual_filter = bool(mutual_filter)
        self.max_iterations = int(max_iterations)
        self.confidence = float(confidence)

    def propose(self, source: Features, target: Features, *, count: int, seed: int,
                with_scale: bool = False) -> list[np.ndarray]:
        dist = self.distance_factor * target.voxel_size
        checkers = [_reg.CorrespondenceCheckerBasedOnEdgeLength(self.edge_length),
                    _reg.CorrespondenceCheckerBasedOnDistance(dist)]
        out = []
        src_pcd, tgt_pcd = source.pcd(), target.pcd()
        src_f, tgt_f = source.feature(), target.feature()
        for k in range(count):
            o3d.utility.random.seed(int(seed) + k)
            res = _reg.registration_ransac_based_on_feature_matching(
                src_pcd, tgt_pcd, src_f, tgt_f, self.mutual_filter, dist,
                _reg.TransformationEstimationPointToPoint(with_scale), 3, checkers,
                _reg.RANSACConvergenceCriteria(self.max_iterations, self.confidence))
            out.append(np.asarray(res.transformation).copy())
        return out


class FastGlobal(GlobalAligner):
    """Fast Global Registration (graduated non-convexity on feature matches).

    Args:
        distance_factor: final correspondence distance in voxels.
        tuple_scale: FGR tuple-test similarity.
        iterations: optimisation iterations.
    """

    name = "fgr"

    def __init__(self, *, distance_factor: float = 0.5, tuple_scale: float = 0.95, iterations: int = 64):
        if not distance_factor > 0:
            raise ValueError(f"distance_factor must be > 0, got {distance_factor}")
        self.distance_factor = float(distance_factor)
        self.tuple_scale = float(tuple_scale)
        self.iterations = int(iterations)

    def propose(self, source: Features, target: Features, *, count: int, seed: int,
                with_scale: bool = False) -> list[np.ndarray]:
        o3d.utility.random.seed(int(seed))
        opt = _reg.FastGlobalRegistrationOption(
            maximum_correspondence_distance=self.distance_factor * target.voxel_size, use_absolute_scale=True,
            tuple_scale=self.tuple_scale, iteration_number=self.iterations)
        res = _reg.registration_fgr_based_on_feature_matching(source.pcd(), target.pcd(), source.feature(),
                                                              target.feature(), opt)
        return [np.asarray(res.transformation).copy()]  # FGR is deterministic: one hypothesis


class IdentityAligner(GlobalAligner):
    """No global search: the clouds are assumed roughly aligned already."""

    name = "identity"

    def propose(self, source: Features, target: Features, *, count: int, seed: int,
                with_scale: bool = False) -> list[np.ndarray]:
        return [np.eye(4)]


GLOBAL_ALIGNERS: dict[str, type[GlobalAligner]] = {
    cls.name: cls for cls in (FpfhRansac, Open3dRansac, FastGlobal, IdentityAligner)
}


def make_global_aligner(config: str | dict | GlobalAligner) -> GlobalAligner:
    """Build a global aligner from a name (``"fpfh_ransac"``), a dict ``{"method": name, **kwargs}``
    or pass an instance through.
    """
    return build_named(config, GLOBAL_ALIGNERS, base=GlobalAligner, config_name="global aligner config",
                       kind="global registration")
