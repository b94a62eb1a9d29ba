"""Similarity alignment: rotation, translation and a single scale factor.

Used when a second sensor's scale drifts with respect to the first (a structured-light camera
and a laser profiler looking at the same part): the registration then has 7 degrees of freedom.

* :func:`umeyama` solves the closed-form least-squares similarity between corresponding points
  (S. Umeyama, "Least-squares estimation of transformation parameters between two point
  patterns", IEEE TPAMI 13(4), 1991), with optional per-point weights.
* :func:`similarity_icp` refines a similarity without known correspondences: closest points plus
  a linearised point-to-plane step with a scale term (the 7-parameter extension of Chen & Medioni,
  "Object modelling by registration of multiple range images", 1992; see also Low, "Linear
  least-squares optimization for point-to-plane ICP surface registration", TR04-004, UNC 2004).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import as_points, as_transform

__all__ = ["SimilarityTransform", "umeyama", "similarity_icp", "similarity_matrix", "decompose_similarity"]


@dataclass(frozen=True)
class SimilarityTransform:
    """``y = scale * rotation @ x + translation``.

    Attributes:
        transform: ``(4, 4)`` matrix ``[[s R, t], [0, 1]]``.
        rotation: ``(3, 3)`` proper rotation.
        translation: ``(3,)``.
        scale: positive scale factor (``1`` for a rigid fit).
        rmse: root-mean-square residual of the fitted pairs (weighted when weights were given).
    """

    transform: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: float
    rmse: float


def similarity_matrix(rotation, translation, scale: float = 1.0) -> np.ndarray:
    """Build the ``(4, 4)`` matrix ``[[scale * R, t], [0, 1]]``."""
    T = np.eye(4)
    T[:3, :3] = float(scale) * np.asarray(rotation, dtype=np.float64)
    T[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return T


def decompose_similarity(T) -> tuple[np.ndarray, np.ndarray, float]:
    """Split a ``(4, 4)`` similarity into ``(rotation (3, 3), translation (3,), scale)``.

    Raises:
        ValueError: the upper-left block is not a positive multiple of a rotation.
    """
    T = as_transform(T)
    A = T[:3, :3]
    det = np.linalg.det(A)
    if det <= 0:
        raise ValueError("transform is not a proper similarity (non-positive determinant)")
    s = float(np.cbrt(det))
    R = A / s
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-6):
        raise ValueError("transform is not a similarity (the 3x3 block is not scale * rotation)")
    return R, T[:3, 3].copy(), s


def umeyama(source, target, *, with_scale: bool = True, weights=None) -> SimilarityTransform:
    """Least-squares similarity (or rigid) transform taking ``source`` points onto ``target``.

    Minimises ``sum_i w_i || s R x_i + t - y_i ||^2`` in closed form via the SVD of the weighted
    cross-covariance, with the reflection correction of Umeyama (1991).

    Args:
        source: ``(N, 3)`` points ``x_i``.
        target: ``(N, 3)`` corresponding points ``y_i``.
        with_scale: estimate ``s``; ``False`` fixes ``s = 1`` (Kabsch / Arun et al.).
        weights: optional ``(N,)`` non-negative weights.

    Returns:
        :class:`SimilarityTransform` mapping ``source`` onto ``target``.

    Raises:
        ValueError: shape mismatch, fewer than 3 pairs, non-finite values, negative or all-zero
            weights, or degenerate (collinear / coincident) source points.
    """
    X = as_points(source, name="source", min_points=3)
    Y = as_points(target, name="target", min_points=3)
    if X.shape != Y.shape:
        raise ValueError(f"source and target must have the same shape, got {X.shape} and {Y.shape}")
    if weights is None:
        w = np.full(len(X), 1.0 / len(X))
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (len(X),):
            raise ValueError(f"weights must have shape ({len(X)},), got {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("weights must be finite and non-negative")
        if w.sum() <= 0:
            raise ValueError("weights sum to zero")
        w = w / w.sum()
    mx = w @ X
    my = w @ Y
    Xc = X - mx
    Yc = Y - my
    var_x = float(w @ np.einsum("ij,ij->i", Xc, Xc))
    if var_x <= 1e-300:
        raise ValueError("source points coincide; the transform is undefined")
    cov = (Yc * w[:, None]).T @ Xc  # (3, 3) = sum w y x^T
    U, D, Vt = np.linalg.svd(cov)
    if D[1] <= 1e-12 * max(D[0], 1e-300):
        raise ValueError("source points are collinear; the rotation is undefined")
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / var_x) if with_scale else 1.0
    t = my - s * R @ mx
    resid = Y - (s * X @ R.T + t)
    rmse = float(np.sqrt(w @ np.einsum("ij,ij->i", resid, resid)))
    return SimilarityTransform(transform=similarity_matrix(R, t, s), rotation=R, translation=t, scale=s,
                               rmse=rmse)


def _rodrigues(w: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(w))
    if theta < 1e-15:
        return np.eye(3)
    k = w / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def similarity_icp(source, target, target_normals, *, init=None, max_distance: float,
                   max_iterations: int = 50, tolerance: float = 1e-7, with_scale: bool = True,
                   max_scale_step: float = 0.01, target_tree: cKDTree | None = None,
                   scale_bounds: tuple[float, float] | None = None,
                   lateral_limit: float | None = None, source_normals=None,
                   max_normal_angle_deg: float = 60.0) -> tuple[np.ndarray, int]:
    """Point-to-plane ICP with an optional scale degree of freedom.

    Each iteration pairs every transformed source point with its nearest target point within
    ``max_distance`` and solves the linearised problem for a small rotation ``w``, translation
    ``dt`` and relative scale ``ds`` about the source centroid ``c``::

        r_i = n_i . ((1 + ds) (p_i - c) + w x (p_i - c) + c + dt - q_i)

    Args:
        source: ``(N, 3)`` points to move.
        target: ``(M, 3)`` fixed points.
        target_normals: ``(M, 3)`` unit normals of ``target``.
        init: ``(4, 4)`` initial similarity (default identity).
        max_distance: correspondence rejection distance.
        max_iterations: iteration cap.
        tolerance: stop when the update moves no point by more than ``tolerance * extent``.
        with_scale: include ``ds`` (otherwise rigid point-to-plane ICP).
        max_scale_step: largest ``|ds|`` per iteration. Point-to-plane distances do not penalise
            sliding along the surface, so an unbounded scale step can shrink a partial view
            towards a point; small steps keep the iteration in the basin of the true scale.
        target_tree: a prebuilt ``cKDTree`` of ``target``.
        scale_bounds: ``(min, max)`` of the accumulated scale; the iteration is clamped there
            (from a wrong pose the scale can otherwise drift towards zero).
        lateral_limit: drop pairs whose offset along the target's tangent plane exceeds this
            (use the target's point spacing). The nearest sample's tangent plane departs from a
            curved surface by about ``curvature * lateral**2 / 2``, always on the same side of a
            convex part, which biases the scale (by 0.3 % on an 80 mm part sampled every 0.5 mm);
            pairs within one spacing keep that bias below 0.05 %.
        source_normals: optional ``(N, 3)`` unit normals of ``source``; pairs whose normals
            differ by more than ``max_normal_angle_deg`` are rejected (the two faces of a thin
            wall, scanned from opposite sides, must not be pulled together).
        max_normal_angle_deg: normal compatibility limit.

    Returns:
        ``(transform (4, 4), iterations)``.

    Raises:
        ValueError: bad shapes, or fewer than 7 correspondences at some iteration.
    """
    P0 = as_points(source, name="source", min_points=7)
    Q = as_points(target, name="target", min_points=3)
    N = as_points(target_normals, name="target_normals")
    if N.shape != Q.shape:
        raise ValueError("target_normals must match target in shape")
    if not max_distance > 0:
        raise ValueError(f"max_distance must be > 0, got {max_distance}")
    N0 = None
    if source_normals is not None:
        N0 = as_points(source_normals, name="source_normals")
        if N0.shape != P0.shape:
            raise ValueError("source_normals must match source in shape")
    cos_max = float(np.cos(np.deg2rad(max_normal_angle_deg)))
    T = np.eye(4) if init is None else as_transform(init, name="init").copy()
    tree = target_tree if target_tree is not None else cKDTree(Q)
    extent = float(np.linalg.norm(P0.max(0) - P0.min(0))) or 1.0
    it = 0
    for it in range(1, max_iterations + 1):
        P = P0 @ T[:3, :3].T + T[:3, 3]
        d, idx = tree.query(P, k=1, distance_upper_bound=max_distance)
        m = np.isfinite(d)
        if N0 is not None:
            Rn = T[:3, :3] / np.cbrt(np.linalg.det(T[:3, :3]))
            ok = np.zeros(len(P), dtype=bool)
            ok[m] = np.einsum("ij,ij->i", N0[m] @ Rn.T, N[idx[m]]) >= cos_max
            m = ok
        if m.sum() < 7:
            raise ValueError(f"similarity ICP: only {int(m.sum())} correspondences within {max_distance:g}")
        p, q, n = P[m], Q[idx[m]], N[idx[m]]
        if lateral_limit is not None:
            off = p - q
            lat = np.linalg.norm(off - np.einsum("ij,ij->i", off, n)[:, None] * n, axis=1)
            near = lat <= lateral_limit
            if near.sum() >= 7:
                p, q, n = p[near], q[near], n[near]
        c = p.mean(axis=0)
        pc = p - c
        r = np.einsum("ij,ij->i", n, p - q)
        cols = [np.cross(pc, n), n]
        if with_scale:
            cols.append(np.einsum("ij,ij->i", n, pc)[:, None])
        J = np.hstack(cols)
        # normal equations (6 or 7 unknowns): much faster than an SVD of the N x 7 Jacobian
        H = J.T @ J
        x = np.linalg.solve(H + 1e-12 * np.trace(H) * np.eye(len(H)), -(J.T @ r))
        w, dt = x[:3], x[3:6]
        s = 1.0 + (float(np.clip(x[6], -max_scale_step, max_scale_step)) if with_scale else 0.0)
        if with_scale and scale_bounds is not None:
            s_now = float(np.cbrt(np.linalg.det(T[:3, :3])))
            s = float(np.clip(s * s_now, scale_bounds[0], scale_bounds[1])) / s_now
        R = _rodrigues(w)
        inc = np.eye(4)
        inc[:3, :3] = s * R
        inc[:3, 3] = c + dt - s * R @ c
        T = inc @ T
        step = np.linalg.norm(w) * extent + np.linalg.norm(dt) + abs(s - 1.0) * extent
        if step < tolerance * extent:
            break
    return T, it
