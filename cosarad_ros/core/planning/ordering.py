"""Ordering views to shorten joint travel.

The move between two configurations is timed as a synchronised point-to-point move limited by
the slowest joint, ``t(a, b) = max_j |b_j - a_j| / v_j`` (the Chebyshev metric of joint space
scaled by the velocity limits). Visiting the views is then an open travelling-salesman path from
the current configuration; each view may also offer several IK branches (a generalised TSP).

Heuristic (Lin, "Computer solutions of the traveling salesman problem", Bell Syst. Tech. J.
44(10), 1965 for 2-opt): nearest-neighbour construction over (view, branch) pairs, then
alternate (a) dynamic programming over the branch of every view for the fixed order (exact for
that order, Viterbi-style) and (b) 2-opt moves on the order, until neither improves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["OrderResult", "travel_time", "order_views", "path_cost"]


def travel_time(q_a, q_b, velocity) -> float:
    """Duration [s] of a synchronised joint move ``q_a -> q_b`` at the velocity limits."""
    return float(np.max(np.abs(np.asarray(q_b) - np.asarray(q_a)) / np.asarray(velocity)))


def path_cost(configs: Sequence[np.ndarray], start, velocity, *, return_to_start: bool = False) -> float:
    """Total :func:`travel_time` of ``start -> configs[0] -> ... (-> start)``."""
    pts = [np.asarray(start)] + [np.asarray(c) for c in configs]
    if return_to_start:
        pts.append(np.asarray(start))
    return float(sum(travel_time(a, b, velocity) for a, b in zip(pts[:-1], pts[1:])))


@dataclass(frozen=True)
class OrderResult:
    """A visiting order.

    Attributes:
        order: view indices in visiting order.
        branch: chosen IK branch of each view, aligned with ``order``.
        cost: travel time of the ordered path [s] (at the velocity limits).
        input_cost: travel time visiting the views as given, first branch each [s].
    """

    order: tuple
    branch: tuple
    cost: float
    input_cost: float


def order_views(branches: Sequence[Sequence[np.ndarray]], start, velocity, *,
                return_to_start: bool = False, max_rounds: int = 20) -> OrderResult:
    """Order views (each with one or more IK solutions) to shorten joint travel from ``start``.

    Args:
        branches: per view, a non-empty list of ``(n,)`` configurations reaching it.
        start: ``(n,)`` configuration the arm starts from.
        velocity: ``(n,)`` joint velocity limits [rad/s].
        return_to_start: count the move back to ``start`` (closed tour).
        max_rounds: improvement rounds.

    Returns:
        :class:`OrderResult`.
    """
    velocity = np.asarray(velocity, dtype=np.float64)
    start = np.asarray(start, dtype=np.float64)
    if np.any(velocity <= 0):
        raise ValueError("velocity limits must be > 0")
    br = [[np.asarray(q, dtype=np.float64) for q in b] for b in branches]
    if any(len(b) == 0 for b in br):
        raise ValueError("every view needs at least one configuration")
    n = len(br)
    input_cost = path_cost([b[0] for b in br], start, velocity, return_to_start=return_to_start)
    if n == 0:
        return OrderResult((), (), 0.0, 0.0)

    def t(a, b):
        return travel_time(a, b, velocity)

    # nearest neighbour over (view, branch)
    left = set(range(n))
    order, branch = [], []
    cur = start
    while left:
        best = min(((t(cur, q), v, k) for v in left for k, q in enumerate(br[v])), key=lambda x: x[0])
        _, v, k = best
        order.append(v)
        branch.append(k)
        cur = br[v][k]
        left.remove(v)

    def cost_of(order, branch):
        return path_cost([br[v][k] for v, k in zip(order, branch)], start, velocity,
                         return_to_start=return_to_start)

    def best_branches(order):
        """Exact branch choice for a fixed order (dynamic programming)."""
        prev_cost = np.array([t(start, q) for q in br[order[0]]])
        back = []
        for a, b in zip(order[:-1], order[1:]):
            step = np.array([[t(qa, qb) for qb in br[b]] for qa in br[a]])   # (Ka, Kb)
            tot = prev_cost[:, None] + step
            back.append(np.argmin(tot, axis=0))
            prev_cost = tot.min(axis=0)
        if return_to_start:
            prev_cost = prev_cost + np.array([t(q, start) for q in br[order[-1]]])
        k = int(np.argmin(prev_cost))
        ks = [k]
        for bk in reversed(back):
            k = int(bk[k])
            ks.append(k)
        return list(reversed(ks))

    best_cost = cost_of(order, branch)
    for _ in range(max_rounds):
        improved = False
        branch = best_branches(order)
        c = cost_of(order, branch)
        if c < best_cost - 1e-12:
            best_cost, improved = c, True
        # 2-opt on the fixed branches
        nodes = [br[v][k] for v, k in zip(order, branch)]
        m = len(nodes)
        for i in range(m - 1):
            for j in range(i + 1, m):
                new_nodes = nodes[:i] + nodes[i:j + 1][::-1] + nodes[j + 1:]
                c = path_cost(new_nodes, start, velocity, return_to_start=return_to_start)
                if c < best_cost - 1e-12:
                    order = order[:i] + order[i:j + 1][::-1] + order[j + 1:]
                    branch = branch[:i] + branch[i:j + 1][::-1] + branch[j + 1:]
                    nodes = new_nodes
                    best_cost, improved = c, True
        if not improved:
            break
    return OrderResult(tuple(int(v) for v in order), tuple(int(k) for k in branch), float(best_cost), input_cost)
