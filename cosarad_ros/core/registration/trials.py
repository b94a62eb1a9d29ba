"""Synthetic registration trials: a surface sample seen from one side, moved by a random pose.

Used by the tests and ``benchmarks/bench_registration.py`` to measure how often registration
recovers a known transform. A *partial view* keeps the points of a dense surface sample that are
visible from a random direction (hidden-point removal, see :mod:`.visibility`), then adds isotropic
Gaussian noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import as_points, random_rotation, rotation_angle_deg
from .preprocess import part_size
from .visibility import outer_shell, partial_view

__all__ = ["Trial", "partial_view", "outer_shell", "make_trial", "pose_error"]


@dataclass(frozen=True)
class Trial:
    """One registration problem with its answer.

    Attributes:
        source: ``(N, 3)`` moved, noisy partial view.
        target: ``(M, 3)`` reference cloud.
        transform: ``(4, 4)`` ground truth mapping ``source`` onto ``target``.
        scale: ground-truth scale included in ``transform``.
    """

    source: np.ndarray
    target: np.ndarray
    transform: np.ndarray
    scale: float = 1.0


def make_trial(dense_surface, target, rng: np.random.Generator, *, noise: float = 0.0, partial: bool = True,
               translation: float | None = None, scale: float = 1.0, max_angle_deg: float | None = None) -> Trial:
    """Build a trial from a dense surface sample of a part.

    Args:
        dense_surface: ``(K, 3)`` dense sample of the part surface (the source is drawn from it).
        target: ``(M, 3)`` reference cloud (usually an independent sample of the same surface).
        rng: random generator.
        noise: standard deviation of Gaussian noise added to the source, in cloud units.
        partial: keep only the side visible from a random direction.
        translation: std of the random translation (default: the part size).
        scale: the source is shrunk by ``1/scale`` so that the true transform has scale ``scale``.
        max_angle_deg: limit the rotation angle (default: uniform over SO(3)).

    Returns:
        :class:`Trial`.
    """
    dense = as_points(dense_surface, name="dense_surface", min_points=4)
    tgt = as_points(target, name="target")
    pts = dense
    if partial:
        d = rng.normal(size=3)
        pts = dense[partial_view(dense, d / np.linalg.norm(d))]
    if noise > 0:
        pts = pts + rng.normal(scale=noise, size=pts.shape)
    size = part_size(tgt)
    R = random_rotation(rng, max_angle_deg)
    t = rng.normal(scale=size if translation is None else translation, size=3)
    # source = (R pts + t) / scale, so target-frame pts = scale * R^T (source - t / scale) ...
    moved = (pts @ R.T + t) / scale
    T = np.eye(4)
    T[:3, :3] = scale * R.T
    T[:3, 3] = -R.T @ t
    return Trial(source=moved, target=tgt, transform=T, scale=float(scale))


def pose_error(estimate, truth, points) -> tuple[float, float]:
    """``(max point displacement over points, rotation error in degrees)`` between two
    ``(4, 4)`` transforms (scale-normalised for the angle).
    """
    E = np.asarray(estimate, dtype=np.float64)
    G = np.asarray(truth, dtype=np.float64)
    pts = as_points(points)
    a = pts @ E[:3, :3].T + E[:3, 3]
    b = pts @ G[:3, :3].T + G[:3, 3]
    se = np.cbrt(np.linalg.det(E[:3, :3]))
    sg = np.cbrt(np.linalg.det(G[:3, :3]))
    return float(np.linalg.norm(a - b, axis=1).max()), rotation_angle_deg(E[:3, :3] / se, G[:3, :3] / sg)
