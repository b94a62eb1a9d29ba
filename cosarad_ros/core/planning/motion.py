"""Collision-free joint paths between views.

:func:`plan_joint_path` tries, in order: the straight joint-space segment; a path through each
given via configuration (home); and RRT-Connect (Kuffner & LaValle, "RRT-Connect: An efficient
approach to single-query path planning", ICRA 2000) over the arm joints, followed by random
shortcutting (Geraerts & Overmars, "Creating high-quality paths for motion planning", IJRR
26(8), 2007). Every segment of the result is checked at ``check_step`` radians.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["PathBlockedError", "plan_joint_path", "path_length"]


class PathBlockedError(ValueError):
    """No collision-free joint path between two configurations was found."""


def path_length(waypoints) -> float:
    """Sum of the largest joint change of every segment [rad]."""
    W = np.asarray(waypoints, dtype=np.float64)
    return float(np.abs(np.diff(W, axis=0)).max(axis=1).sum()) if len(W) > 1 else 0.0


def _steer(a, b, step):
    d = b - a
    m = float(np.max(np.abs(d)))
    return b.copy() if m <= step else a + d * (step / m)


def plan_joint_path(checker, q_a, q_b, *, via: Sequence[np.ndarray] = (), max_iterations: int = 3000,
                    step: float = 0.25, check_step: float = 0.03, shortcut_tries: int = 60,
                    seed: int = 0) -> np.ndarray:
    """A collision-free joint path ``q_a -> q_b``.

    Args:
        checker: :class:`~cosarad_ros.core.planning.collision.CollisionChecker` (with the part).
        q_a, q_b: ``(n,)`` start and goal (all cell joints; only the arm joints move in RRT).
        via: configurations to try as a single intermediate waypoint before searching.
        max_iterations: RRT-Connect iterations.
        step: RRT extension step (largest joint change) [rad].
        check_step: collision-check resolution along segments [rad].
        shortcut_tries: random shortcut attempts on an RRT path.
        seed: random seed.

    Returns:
        ``(K, n)`` waypoints from ``q_a`` to ``q_b`` (K >= 2).

    Raises:
        ValueError: the start or the goal is in collision.
        PathBlockedError: nothing found within ``max_iterations``.
    """
    cell = checker.cell
    qa, qb = cell.check_q(q_a, name="start"), cell.check_q(q_b, name="goal")
    for name, q in (("start", qa), ("goal", qb)):
        if checker.in_collision(q):
            pairs = ", ".join(f"{a}/{b}" for a, b in checker.colliding_pairs(q)[:4])
            raise ValueError(f"the {name} configuration is in collision ({pairs})")

    def free(a, b):
        return checker.segment_free(a, b, max_step_rad=check_step)

    if free(qa, qb):
        return np.stack([qa, qb])
    for v in via:
        v = cell.check_q(v, name="via")
        if not checker.in_collision(v) and free(qa, v) and free(v, qb):
            return np.stack([qa, v, qb])
    path = _rrt_connect(checker, qa, qb, free, max_iterations=max_iterations, step=step, seed=seed)
    if path is None:
        raise PathBlockedError(f"no collision-free joint path found ({max_iterations} RRT-Connect iterations)")
    return _shortcut(path, free, shortcut_tries, np.random.default_rng(seed + 1))


def _rrt_connect(checker, qa, qb, free, *, max_iterations, step, seed):
    cell = checker.cell
    idx = cell.arm_indices
    lo = np.maximum(cell.lower[idx], -2 * np.pi)
    hi = np.minimum(cell.upper[idx], 2 * np.pi)
    # sample around the two ends first (a 2 pi window per joint), which keeps paths short
    centre = 0.5 * (qa[idx] + qb[idx])
    lo = np.maximum(lo, centre - np.pi)
    hi = np.minimum(hi, centre + np.pi)
    rng = np.random.default_rng(seed)
    trees = [([qa.copy()], [-1]), ([qb.copy()], [-1])]

    def nearest(tree, q):
        nodes = np.asarray(tree[0])[:, idx]
        return int(np.argmin(np.max(np.abs(nodes - q[idx]), axis=1)))

    def extend(tree, target):
        """One step from the nearest node towards target; returns (new node index, reached)."""
        k = nearest(tree, target)
        q_new = _steer(tree[0][k], target, step)
        if checker.in_collision(q_new) or not free(tree[0][k], q_new):
            return None, False
        tree[0].append(q_new)
        tree[1].append(k)
        return len(tree[0]) - 1, bool(np.max(np.abs(q_new - target)) < 1e-9)

    def connect(tree, target):
        while True:
            k, reached = extend(tree, target)
            if k is None:
                return None
            if reached:
                return k

    def branch(tree, k):
        out = []
        while k >= 0:
            out.append(tree[0][k])
            k = tree[1][k]
        return out

    base = qa.copy()
    for it in range(max_iterations):
        q_rand = base.copy()
        q_rand[idx] = rng.uniform(lo, hi)
        a, b = trees[it % 2], trees[(it + 1) % 2]
        k, _ = extend(a, q_rand)
        if k is None:
            continue
        j = connect(b, a[0][k])
        if j is not None:
            pa, pb = branch(a, k), branch(b, j)
            path = pa[::-1] + pb[1:]
            if it % 2 == 1:       # tree a grew from the goal
                path = path[::-1]
            return np.asarray(path)
    return None


def _shortcut(path, free, tries, rng):
    path = [p for p in path]
    for _ in range(tries):
        if len(path) <= 2:
            break
        i, j = sorted(rng.choice(len(path), size=2, replace=False))
        if j - i < 2:
            continue
        if free(path[i], path[j]):
            path = path[:i + 1] + path[j:]
    return np.asarray(path)
