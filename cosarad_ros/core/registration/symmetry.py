"""The poses a (near-)symmetric part is confused with: one generator for every registration path.

A box-like part registers as readily onto a turned copy of its true pose as onto the pose
itself: global features match either way. Each registration path therefore tests such copies,
all drawn from the rotations here:

* :func:`box_rotations`: the proper rotations that map one box onto another (signed axis
  permutations, the 24 rotations of the cube when the extents allow); the CAD aligner seeds a
  scan's pose from its box frame with them;
* :func:`symmetry_rotations`: those 24 plus turns in steps about each axis (surfaces of
  revolution), in a part's principal frame; the template aligner screens them;
* :func:`symmetry_hypotheses`: half (and quarter) turns of a pose about the target's principal
  axes through its centroid; the registration pipeline adds them to its candidates.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..geometry import as_points
from .similarity import _rodrigues

__all__ = ["turn", "box_rotations", "symmetry_rotations", "symmetry_hypotheses"]


def turn(axis, angle: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``angle`` [rad] about the unit vector ``axis`` ``(3,)`` (Rodrigues)."""
    return _rodrigues(np.asarray(axis, dtype=np.float64) * float(angle))


def box_rotations(dims_a=None, dims_b=None, *, tolerance: float = 0.0) -> list[np.ndarray]:
    """Proper rotations ``(3, 3)`` of the box frame that map box ``a`` onto box ``b``.

    Always the four sign flips that keep the axes (the identity first, then the three half
    turns); an axis permutation too when the extents of ``a``, permuted, are within ``tolerance``
    (a scalar or ``(3,)`` per axis of ``b``) of ``b``'s. Without ``dims_a``: all 24 rotations of
    the cube.

    Args:
        dims_a, dims_b: ``(3,)`` box extents (``dims_b`` defaults to ``dims_a``).
        tolerance: how far permuted extents may differ [same unit as the extents].
    """
    a = None if dims_a is None else np.asarray(dims_a, dtype=np.float64)
    b = a if dims_b is None else np.asarray(dims_b, dtype=np.float64)
    tol = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), (3,))
    out = []
    for perm in itertools.permutations(range(3)):
        if a is not None and perm != (0, 1, 2) and np.any(np.abs(a[list(perm)] - b) > tol):
            continue
        P = np.eye(3)[list(perm)]  # row i picks axis perm[i] of a
        for signs in itertools.product((1.0, -1.0), repeat=3):
            R = np.diag(signs) @ P
            if np.linalg.det(R) > 0:
                out.append(R)
    return out


def symmetry_rotations(step_deg: float = 30.0) -> np.ndarray:
    """Candidate symmetries of a part, as rotations in its principal-axis frame: ``(K, 3, 3)``.

    The 24 rotations of :func:`box_rotations` (quarter and half turns about the axes, thirds of
    a turn about the body diagonals, half turns about the face diagonals), plus turns by
    multiples of ``step_deg`` about each axis (surfaces of revolution). The identity comes first;
    duplicates are removed.

    Raises:
        ValueError: ``step_deg`` outside (0, 180].
    """
    if not 0 < step_deg <= 180:
        raise ValueError(f"step_deg must be in (0, 180], got {step_deg}")
    out = box_rotations()
    for axis in np.eye(3):
        out += [turn(axis, np.radians(a)) for a in np.arange(step_deg, 360.0 - 1e-6, step_deg)]
    uniq: list[np.ndarray] = []
    for R in out:
        if all(np.abs(R - U).max() > 1e-6 for U in uniq):
            uniq.append(R)
    return np.stack(uniq)


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
        for ang in angles:
            R = turn(vecs[:, k], ang)
            F = np.eye(4)
            F[:3, :3] = R
            F[:3, 3] = c - R @ c
            out.append(F @ transform)
    return out
