"""Alignment quality measures shared by the registration pipeline.

* fitness: fraction of source points whose nearest target point lies within ``inlier_distance``
  (as in Open3D's ``RegistrationResult.fitness``),
* rmse: root mean square of those inlier distances,
* chamfer: one-sided Chamfer distance, the mean nearest-neighbour distance from every transformed
  source point to the target. This is the criterion COSARAD uses to choose among registration
  attempts, because it is small only when the test scan lies on the reference everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import as_points, as_transform

__all__ = ["AlignmentScore", "score_alignment", "chamfer_one_sided", "constraint_strength", "scale_information"]


@dataclass(frozen=True)
class AlignmentScore:
    """Quality of ``source`` mapped by ``transform`` onto ``target``.

    Attributes:
        fitness: inlier fraction of the source, in ``[0, 1]``.
        rmse: RMS nearest-neighbour distance of the inliers (``inf`` when there are none).
        chamfer: mean nearest-neighbour distance of all source points.
        median: median nearest-neighbour distance.
    """

    fitness: float
    rmse: float
    chamfer: float
    median: float


def score_alignment(source, target_tree: cKDTree, transform, *, inlier_distance: float) -> AlignmentScore:
    """Score ``source`` (``(N, 3)``) mapped by ``transform`` against a k-d tree of the target."""
    src = as_points(source, name="source")
    T = as_transform(transform)
    if not inlier_distance > 0:
        raise ValueError(f"inlier_distance must be > 0, got {inlier_distance}")
    d, _ = target_tree.query(src @ T[:3, :3].T + T[:3, 3], k=1, workers=-1)
    inl = d <= inlier_distance
    fitness = float(inl.mean())
    rmse = float(np.sqrt(np.mean(d[inl] ** 2))) if inl.any() else float("inf")
    return AlignmentScore(fitness=fitness, rmse=rmse, chamfer=float(d.mean()), median=float(np.median(d)))


def chamfer_one_sided(source, target) -> float:
    """Mean distance from each ``(N, 3)`` source point to its nearest ``(M, 3)`` target point."""
    src = as_points(source, name="source")
    tgt = as_points(target, name="target")
    d, _ = cKDTree(tgt).query(src, k=1)
    return float(d.mean())


def _plane_hessian(source, target_tree: cKDTree, target_normals, transform, *, max_distance: float,
                   with_scale: bool) -> np.ndarray | None:
    """``J^T J / N`` of the normalised point-to-plane Jacobian (see :func:`constraint_strength`);
    None when fewer matched points than degrees of freedom.
    """
    src = as_points(source, name="source")
    T = as_transform(transform)
    N = np.asarray(target_normals, dtype=np.float64)
    P = src @ T[:3, :3].T + T[:3, 3]
    d, idx = target_tree.query(P, k=1, distance_upper_bound=max_distance)
    m = np.isfinite(d)
    if m.sum() < (7 if with_scale else 6):
        return None
    p, n = P[m], N[idx[m]]
    pc = p - p.mean(axis=0)
    L = float(np.sqrt(np.mean(np.einsum("ij,ij->i", pc, pc)))) or 1.0
    cols = [np.cross(pc, n) / L, n]
    if with_scale:
        cols.append(np.einsum("ij,ij->i", n, pc)[:, None] / L)
    J = np.hstack(cols)
    return J.T @ J / len(J)


def constraint_strength(source, target_tree: cKDTree, target_normals, transform, *, max_distance: float,
                        with_scale: bool = False) -> np.ndarray:
    """How well the overlap pins down each degree of freedom of the registration.

    Builds the point-to-plane Jacobian at ``transform`` (rows ``[(p - c) x n / L, n, n . (p - c) / L]``
    for every source point with a target point within ``max_distance``; ``c`` the centroid and ``L``
    the RMS radius of the matched points, so rotations and scale are measured as displacements at
    the part's size) and returns the eigenvalues of ``J^T J / N``, ascending. An eigenvalue near
    zero is a motion that changes no point-to-plane distance: sliding along a plane or a cylinder,
    turning about a surface of revolution, or scaling a view that only shows parallel planes
    (Gelfand, Ikemoto, Rusinkiewicz & Levoy, "Geometrically stable sampling for the ICP
    algorithm", 3DIM 2003). A registration along such a direction is a guess.

    Returns:
        ``(6,)`` or ``(7,)`` (with ``with_scale``) eigenvalues; zeros when nothing overlaps.
    """
    k = 7 if with_scale else 6
    H = _plane_hessian(source, target_tree, target_normals, transform, max_distance=max_distance,
                       with_scale=with_scale)
    return np.zeros(k) if H is None else np.linalg.eigvalsh(H)


def scale_information(source, target_tree: cKDTree, target_normals, transform, *, max_distance: float) -> float:
    """Marginal information on the scale of a 7-dof point-to-plane registration, normalised.

    ``1 / (H^-1)_ss`` of the normalised Hessian ``H = J^T J / N`` of :func:`constraint_strength`
    (with scale): the information on the scale left after the best compensation by rotation and
    translation. Views that show mostly planes (a plane is invariant under scaling about any of its
    points) have little; then a residual bias of a few micrometres moves the scale estimate by
    tenths of a percent. About 0.15 for a curved part, under 0.07 for a view of a bracket's faces.
    """
    H = _plane_hessian(source, target_tree, target_normals, transform, max_distance=max_distance,
                       with_scale=True)
    if H is None:
        return 0.0
    try:
        return float(1.0 / np.linalg.inv(H)[6, 6])
    except np.linalg.LinAlgError:
        return 0.0
