"""Global (initial-guess-free) alignment hypotheses.

Methods (config string -> class):

* ``"fpfh_ransac"``: Fast Point Feature Histograms (Rusu, Blodow & Beetz, "Fast Point Feature
  Histograms (FPFH) for 3D registration", ICRA 2009) matched in feature space, then RANSAC
  (Fischler & Bolles, CACM 1981) over 3-point samples with a mutual (reciprocal) nearest-neighbour
  filter and pruning by edge-length similarity and inlier distance before the model is scored.
* ``"fgr"``: Fast Global Registration (Zhou, Park & Koltun, ECCV 2016) on the same features.
* ``"identity"``: no global search; the hypothesis is the identity (or the caller's ``init``).

Every method proposes one hypothesis per attempt, with a different random seed, so that the
pipeline can refine several and keep the best. :func:`symmetry_hypotheses` adds the poses a
(near-)symmetric part could be confused with: the current pose followed by a half turn about each
principal axis of the target.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from ..geometry import as_points
from .preprocess import to_o3d

__all__ = [
    "Features",
    "compute_features",
    "GlobalAligner",
    "FpfhRansac",
    "FastGlobal",
    "IdentityAligner",
    "GLOBAL_ALIGNERS",
    "make_global_aligner",
    "symmetry_hypotheses",
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
    """Interface: propose one coarse ``(4, 4)`` transform (source -> target) per call."""

    name = "base"

    @abstractmethod
    def propose(self, source: Features, target: Features, *, seed: int) -> np.ndarray:
        """A hypothesis mapping ``source`` onto ``target`` (different seeds give different ones)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class FpfhRansac(GlobalAligner):
    """FPFH correspondences + RANSAC with mutual filter and edge-length / distance checks.

    Args:
        distance_factor: inlier distance in voxels for scoring and for the distance check.
        edge_length: similarity threshold of the edge-length checker (``0.9`` = edges of the
            sampled triangle must agree within 10 %).
        mutual_filter: keep only reciprocal feature matches.
        max_iterations: RANSAC iteration cap.
        confidence: RANSAC stop confidence.
        normal_angle_deg: optional normal-consistency check (``None`` disables it).
    """

    name = "fpfh_ransac"

    def __init__(self, *, distance_factor: float = 1.5, edge_length: float = 0.9, mutual_filter: bool = True,
                 max_iterations: int = 100_000, confidence: float = 0.999, normal_angle_deg: float | None = None):
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
        self.normal_angle_deg = normal_angle_deg

    def propose(self, source: Features, target: Features, *, seed: int) -> np.ndarray:
        dist = self.distance_factor * target.voxel_size
        checkers = [_reg.CorrespondenceCheckerBasedOnEdgeLength(self.edge_length),
                    _reg.CorrespondenceCheckerBasedOnDistance(dist)]
        if self.normal_angle_deg is not None:
            checkers.append(_reg.CorrespondenceCheckerBasedOnNormal(np.deg2rad(self.normal_angle_deg)))
        o3d.utility.random.seed(int(seed))
        res = _reg.registration_ransac_based_on_feature_matching(
            source.pcd(), target.pcd(), source.feature(), target.feature(), self.mutual_filter, dist,
            _reg.TransformationEstimationPointToPoint(False), 3, checkers,
            _reg.RANSACConvergenceCriteria(self.max_iterations, self.confidence))
        return np.asarray(res.transformation).copy()


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

    def propose(self, source: Features, target: Features, *, seed: int) -> np.ndarray:
        o3d.utility.random.seed(int(seed))
        opt = _reg.FastGlobalRegistrationOption(
            maximum_correspondence_distance=self.distance_factor * target.voxel_size,
            tuple_scale=self.tuple_scale, iteration_number=self.iterations, seed=int(seed))
        res = _reg.registration_fgr_based_on_feature_matching(source.pcd(), target.pcd(), source.feature(),
                                                              target.feature(), opt)
        return np.asarray(res.transformation).copy()


class IdentityAligner(GlobalAligner):
    """No global search: the clouds are assumed roughly aligned already."""

    name = "identity"

    def propose(self, source: Features, target: Features, *, seed: int) -> np.ndarray:
        return np.eye(4)


GLOBAL_ALIGNERS: dict[str, type[GlobalAligner]] = {
    cls.name: cls for cls in (FpfhRansac, FastGlobal, IdentityAligner)
}


def make_global_aligner(config: str | dict | GlobalAligner) -> GlobalAligner:
    """Build a global aligner from a name (``"fpfh_ransac"``), a dict ``{"method": name, **kwargs}``
    or pass an instance through."""
    if isinstance(config, GlobalAligner):
        return config
    if isinstance(config, str):
        config = {"method": config}
    if not isinstance(config, dict) or "method" not in config:
        raise ValueError(f"global aligner config must be a name or a dict with 'method', got {config!r}")
    kwargs = dict(config)
    name = kwargs.pop("method")
    if name not in GLOBAL_ALIGNERS:
        raise ValueError(f"unknown global registration method {name!r}; choose from {sorted(GLOBAL_ALIGNERS)}")
    return GLOBAL_ALIGNERS[name](**kwargs)


def symmetry_hypotheses(transform: np.ndarray, target_points: np.ndarray, *,
                        quarter_turns: bool = False) -> list[np.ndarray]:
    """Poses a (near-)symmetric part is easily confused with.

    Returns ``F_k @ transform`` for ``F_k`` a half turn (and, with ``quarter_turns``, the two
    quarter turns) about each principal axis of ``target_points`` through its centroid.

    Args:
        transform: ``(4, 4)`` current hypothesis (source -> target).
        target_points: ``(M, 3)`` target cloud.
        quarter_turns: add +-90 degree turns too (parts with 4-fold near symmetry).

    Returns:
        list of ``(4, 4)`` transforms.
    """
    pts = as_points(target_points, name="target_points", min_points=3)
    c = pts.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov((pts - c).T))
    angles = [np.pi] + ([np.pi / 2, -np.pi / 2] if quarter_turns else [])
    out = []
    for k in range(3):
        a = vecs[:, k]
        K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        for ang in angles:
            R = np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K
            F = np.eye(4)
            F[:3, :3] = R
            F[:3, 3] = c - R @ c
            out.append(F @ transform)
    return out
