"""Which points of a surface sample a sensor can see.

Hidden-point removal (Katz, Tal & Basri, "Direct visibility of point sets", SIGGRAPH 2007) from
one direction gives a partial view; the union over directions spread on the sphere gives the
outer surface, i.e. what any scan of the part can contain. Reference clouds sampled from CAD
meshes should be reduced to it: internal faces (bores, assemblies of bodies) never appear in a
scan and corrupt the local descriptors used by global registration.
"""
from __future__ import annotations

import numpy as np

from ..geometry import as_points
from .preprocess import part_size, to_o3d

__all__ = ["partial_view", "outer_shell"]


def partial_view(points, direction, *, radius_factor: float = 100.0) -> np.ndarray:
    """Indices of ``points`` visible from far away along ``direction`` (unit ``(3,)``)."""
    pts = as_points(points, min_points=4)
    d = np.asarray(direction, dtype=np.float64).reshape(3)
    d = d / np.linalg.norm(d)
    diag = part_size(pts)
    centre = pts.mean(axis=0)
    _, idx = to_o3d(pts).hidden_point_removal(centre + d * 3.0 * diag, diag * radius_factor)
    return np.asarray(idx, dtype=np.int64)


def outer_shell(points, *, views: int = 60, seed: int = 0) -> np.ndarray:
    """Boolean mask of the points visible from at least one of ``views`` directions spread over
    the sphere (Fibonacci lattice): the outer surface a sensor can ever scan.

    CAD meshes often contain internal faces (bores, assemblies of bodies) that no scan can see; a
    reference cloud sampled from them has descriptors a scan never matches, so drop them first.
    """
    pts = as_points(points, min_points=4)
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    i = np.arange(views) + 0.5
    phi = np.arccos(1.0 - 2.0 * i / views)
    theta = np.pi * (1.0 + 5.0 ** 0.5) * i + np.random.default_rng(seed).uniform(0, 2 * np.pi)
    dirs = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)
    seen = np.zeros(len(pts), dtype=bool)
    for d in dirs:
        seen[partial_view(pts, d)] = True
    return seen
