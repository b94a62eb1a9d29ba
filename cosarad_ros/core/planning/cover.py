"""Choosing the fewest views that cover a target share of the surface (partial set cover).

Views are sets of surface samples, each sample weighted by its area. Three interchangeable
solvers, chosen by name (``make_cover_solver``):

* ``greedy``: repeatedly take the view adding the most uncovered area (Johnson, "Approximation
  algorithms for combinatorial problems", JCSS 9, 1974; Chvatal, "A greedy heuristic for the
  set-covering problem", Math. Oper. Res. 4(3), 1979: within ``H(n) <= ln n + 1`` of the
  optimum), then drop views the target no longer needs ("reverse delete").
* ``ilp``: the exact partial set cover integer program, solved with HiGHS through
  ``scipy.optimize.milp`` within a time limit, warm-bounded by the greedy answer; samples seen by
  exactly the same views are merged into one row first. Falls back to greedy when HiGHS finds
  nothing better in time.
* ``random``: views in random order until the target (the baseline of random view sampling).

All return the chosen view indices in the order they were picked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["CoverResult", "CoverSolver", "GreedyCover", "IlpCover", "RandomCover", "make_cover_solver",
           "COVER_SOLVERS"]


@dataclass(frozen=True)
class CoverResult:
    """A chosen set of views.

    Attributes:
        chosen: indices of the chosen views (rows of the visibility matrix), in pick order.
        covered_area: area covered by them [same unit as the weights].
        gains: ``(k,)`` area newly covered by each chosen view, in pick order.
        optimal: the solver proved the count minimal (ILP only).
    """

    chosen: tuple
    covered_area: float
    gains: tuple
    optimal: bool = False


def _check(vis, weights, target_area):
    vis = np.asarray(vis, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)
    if vis.ndim != 2:
        raise ValueError(f"visibility must be a (V, N) matrix, got shape {vis.shape}")
    if w.shape != (vis.shape[1],):
        raise ValueError(f"weights must have shape ({vis.shape[1]},), got {w.shape}")
    if target_area < 0:
        raise ValueError("target area must be >= 0")
    return vis, w


def _gains_in_order(vis, w, order):
    covered = np.zeros(vis.shape[1], dtype=bool)
    gains = []
    for j in order:
        new = vis[j] & ~covered
        gains.append(float(w[new].sum()))
        covered |= vis[j]
    return tuple(gains), float(w[covered].sum())


def _greedy_order(vis, w, idx):
    """Order the views ``idx`` by repeatedly taking the one adding the most uncovered area."""
    remaining = [int(j) for j in idx]
    covered = np.zeros(vis.shape[1], dtype=bool)
    order = []
    while remaining:
        gains = [float(w[vis[j] & ~covered].sum()) for j in remaining]
        j = remaining.pop(int(np.argmax(gains)))
        order.append(j)
        covered |= vis[j]
    return tuple(order)


class GreedyCover:
    """Greedy partial set cover with reverse-delete pruning.

    Args:
        max_views: stop after this many views (0: no limit).
        prune: drop views not needed for the target once it is reached.
    """

    name = "greedy"

    def __init__(self, max_views: int = 0, prune: bool = True):
        self.max_views = int(max_views)
        self.prune = bool(prune)

    def solve(self, vis, weights, target_area: float, *, cost=None) -> CoverResult:
        """Cover ``target_area`` of ``weights`` with rows of ``vis``.

        Args:
            vis: ``(V, N)`` bool.
            weights: ``(N,)`` sample areas.
            target_area: area to reach.
            cost: optional ``(V,)`` tie-breaker (smaller preferred among equal gains).
        """
        vis, w = _check(vis, weights, target_area)
        V = vis.shape[0]
        tie = np.zeros(V) if cost is None else np.asarray(cost, dtype=np.float64)
        covered = np.zeros(vis.shape[1], dtype=bool)
        chosen: list[int] = []
        area = 0.0
        visw = vis * w[None, :]
        while area < target_area - 1e-15 and (self.max_views <= 0 or len(chosen) < self.max_views):
            gain = visw[:, ~covered].sum(axis=1)
            if chosen:
                gain[chosen] = -1.0
            best = float(gain.max()) if V else 0.0
            if best <= 0.0:
                break
            # among (near-)equal gains prefer the cheaper view
            near = np.flatnonzero(gain >= best * (1.0 - 1e-9))
            j = int(near[np.argmin(tie[near])])
            chosen.append(j)
            covered |= vis[j]
            area = float(w[covered].sum())
        if self.prune and area >= target_area - 1e-15:
            chosen = self._reverse_delete(vis, w, chosen, target_area)
        gains, area = _gains_in_order(vis, w, chosen)
        return CoverResult(tuple(chosen), area, gains)

    @staticmethod
    def _reverse_delete(vis, w, chosen, target_area):
        """Drop, smallest contribution first, every view whose removal keeps the target."""
        chosen = list(chosen)
        changed = True
        while changed and len(chosen) > 1:
            changed = False
            counts = vis[chosen].sum(axis=0)
            # area only this view sees, per view
            unique = [float(w[vis[j] & (counts == 1)].sum()) for j in chosen]
            for k in np.argsort(unique):
                rest = chosen[:k] + chosen[k + 1:]
                if float(w[vis[rest].any(axis=0)].sum()) >= target_area - 1e-15:
                    chosen = rest
                    changed = True
                    break
        return chosen


class IlpCover:
    """Exact partial set cover by integer programming (HiGHS via ``scipy.optimize.milp``).

    minimise ``sum_j x_j`` subject to ``sum_g a_g y_g >= target``, ``y_g <= sum_{j sees g} x_j``,
    ``x in {0, 1}``, ``0 <= y <= 1``; ``g`` runs over groups of samples seen by the same views.

    Args:
        time_limit: seconds for HiGHS.
        max_views: upper bound on the count (0: none).
    """

    name = "ilp"

    def __init__(self, time_limit: float = 5.0, max_views: int = 0):
        if time_limit <= 0:
            raise ValueError("time_limit must be > 0")
        self.time_limit = float(time_limit)
        self.max_views = int(max_views)

    def solve(self, vis, weights, target_area: float, *, cost=None) -> CoverResult:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import csr_matrix, hstack, identity

        vis, w = _check(vis, weights, target_area)
        greedy = GreedyCover(max_views=self.max_views).solve(vis, w, target_area, cost=cost)
        if greedy.covered_area < target_area - 1e-15 or len(greedy.chosen) <= 1:
            return greedy  # infeasible target, or nothing to improve
        seen = vis.any(axis=0)
        cols, inv = np.unique(vis[:, seen].T, axis=0, return_inverse=True)   # (G, V) view signatures
        a = np.bincount(inv.reshape(-1), weights=w[seen], minlength=len(cols))
        G, V = cols.shape
        eps = 1e-6 if cost is None else 1e-6 * np.asarray(cost, dtype=np.float64) / max(1e-12, float(np.max(cost)))
        c = np.concatenate([np.ones(V) + eps, np.zeros(G)])
        # y_g - sum_j A_gj x_j <= 0
        link = hstack([-csr_matrix(cols.astype(np.float64)), identity(G, format="csr")], format="csr")
        cons = [LinearConstraint(link, -np.inf, 0.0),
                LinearConstraint(np.concatenate([np.zeros(V), a])[None, :], target_area, np.inf),
                LinearConstraint(np.concatenate([np.ones(V), np.zeros(G)])[None, :], 0,
                                 len(greedy.chosen) if self.max_views <= 0
                                 else min(len(greedy.chosen), self.max_views))]
        integrality = np.concatenate([np.ones(V), np.zeros(G)])
        res = milp(c, constraints=cons, integrality=integrality, bounds=Bounds(0, 1),
                   options={"time_limit": self.time_limit, "disp": False})
        if res.x is None:
            return greedy
        x = res.x[:V] > 0.5
        picked = np.flatnonzero(x)
        if len(picked) >= len(greedy.chosen):
            return CoverResult(greedy.chosen, greedy.covered_area, greedy.gains, optimal=bool(res.status == 0))
        chosen = _greedy_order(vis, w, picked)  # report in order of decreasing gain
        gains, area = _gains_in_order(vis, w, chosen)
        if area < target_area - 1e-9:
            return greedy
        return CoverResult(chosen, area, gains, optimal=bool(res.status == 0))


class RandomCover:
    """Random views until the target: the baseline a planner must beat.

    Args:
        seed: random seed.
        max_views: stop after this many (0: no limit).
    """

    name = "random"

    def __init__(self, seed: int = 0, max_views: int = 0):
        self.seed = int(seed)
        self.max_views = int(max_views)

    def solve(self, vis, weights, target_area: float, *, cost=None) -> CoverResult:
        vis, w = _check(vis, weights, target_area)
        order = np.random.default_rng(self.seed).permutation(vis.shape[0])
        covered = np.zeros(vis.shape[1], dtype=bool)
        chosen = []
        for j in order:
            if float(w[covered].sum()) >= target_area - 1e-15:
                break
            if self.max_views > 0 and len(chosen) >= self.max_views:
                break
            chosen.append(int(j))
            covered |= vis[j]
        gains, area = _gains_in_order(vis, w, chosen)
        return CoverResult(tuple(chosen), area, gains)


@runtime_checkable
class CoverSolver(Protocol):
    """What :func:`~.views.plan_views` needs of a cover solver."""

    def solve(self, vis, weights, target_area: float, *, cost=None) -> CoverResult: ...


COVER_SOLVERS = {"greedy": GreedyCover, "ilp": IlpCover, "random": RandomCover}


def make_cover_solver(config="greedy"):
    """A cover solver from a name (``greedy``, ``ilp``, ``random``) or a dict
    ``{"type": name, **constructor_arguments}`` (:func:`~cosarad_ros.core.settings.build_named`);
    an object with a ``solve`` method is used as it is.
    """
    from cosarad_ros.core.settings import build_named

    return build_named(config, COVER_SOLVERS, base=CoverSolver, config_name="cover solver config",
                       kind="cover solver", key="type")
