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

__all__ = ["AlignmentScore", "score_alignment", "chamfer_one_sided"]


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
    d, _ = target_tree.query(src @ T[:3, :3].T + T[:3, 3], k=1)
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
