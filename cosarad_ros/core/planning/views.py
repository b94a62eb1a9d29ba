"""View planning: the fewest reachable, collision-free sensor poses that cover the part.

Pipeline of :func:`plan_views` (a model-based "generate and test" planner in the sense of Scott,
Roth & Rivest, ACM Computing Surveys 35(1), 2003, sec. 4):

1. sample the CAD surface (area-weighted, :func:`~.visibility.sample_surface`);
2. generate candidate sensor poses at the sensor's optimal stand-off: on a Fibonacci sphere
   around the part looking at its centre (Gonzalez, "Measurement of areas on a sphere using
   Fibonacci and latitude-longitude lattices", Math. Geosci. 42, 2010) and along the normals of
   surface patches chosen by farthest-point sampling, looking at the patch;
3. ray-cast the visibility of every sample from every candidate (FOV, range, incidence,
   occlusion by the part and the fixture);
4. keep the candidates the arm can reach: pinocchio IK of the sensor optical frame, free of
   collisions with the cell and the part (every pose is also tried rolled half a turn about its
   optical axis, which swaps the sides of the sensor body and the projector, and at every
   turntable angle when the cell has one);
5. partial set cover of ``target_coverage`` of the area visible from the reachable candidates
   (greedy / ILP, :mod:`.cover`);
6. several IK branches per chosen view, order shortening joint travel (:mod:`.ordering`) and a
   collision-free joint path for every move between views (:mod:`.motion`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cosarad_ros.core.planning.candidates import UnreachablePartError, evaluate_candidates, sensor_for_cell
from cosarad_ros.core.planning.cell import CellModel
from cosarad_ros.core.planning.cover import make_cover_solver
from cosarad_ros.core.planning.motion import PathBlockedError, plan_joint_path
from cosarad_ros.core.planning.ordering import order_views
from cosarad_ros.core.planning.visibility import SensorViewModel, SurfaceSamples

__all__ = ["View", "ViewPlan", "plan_views", "UnreachablePartError"]


@dataclass(frozen=True)
class View:
    """One planned sensor view.

    Attributes:
        sensor_pose: ``(4, 4)`` sensor optical frame -> world, forward kinematics of ``joints``.
        joints: ``(n,)`` configuration of all cell joints (``ViewPlan.joint_names`` order).
        coverage_gain: share of the visible area this view adds, in execution order (0-1).
        visible_indices: indices of the surface samples (``ViewPlan.samples``) this view measures.
        part_pose: ``(4, 4)`` part frame -> world during this view (moves with a turntable).
        candidate: index of the candidate pose it came from.
        path: ``(K, n)`` collision-free joint waypoints from the previous view (or the start)
            to this one, ends included; ``K == 2`` when the straight joint move is free. Empty
            ``(0, n)`` when transitions were not checked or none was found.
    """

    sensor_pose: np.ndarray
    joints: np.ndarray
    coverage_gain: float
    visible_indices: np.ndarray
    part_pose: np.ndarray
    candidate: int = -1
    path: np.ndarray | None = None

    @property
    def direct(self) -> bool:
        """The straight joint move from the previous view is collision-free."""
        return self.path is not None and len(self.path) == 2

    @property
    def visible_faces(self) -> np.ndarray:
        """Alias of :attr:`visible_indices` (sample indices; see ``ViewPlan.samples.faces``)."""
        return self.visible_indices

    def sensor_pose_in_part(self) -> np.ndarray:
        """``(4, 4)`` sensor optical frame -> part frame."""
        return np.linalg.inv(self.part_pose) @ self.sensor_pose


@dataclass(frozen=True)
class ViewPlan:
    """Result of :func:`plan_views`.

    Attributes:
        views: planned views in execution order.
        coverage: covered share of the surface area visible from any reachable candidate (0-1).
        planning_time: wall-clock seconds.
        joint_names: names of the entries of ``View.joints``.
        target_coverage: the requested share.
        samples: the surface samples (part frame).
        visible_fraction: share of the total surface area visible from reachable candidates.
        geometric_visible_fraction: share visible from any candidate, reachable or not.
        surface_coverage: covered share of the total surface area.
        n_candidates, n_feasible: candidate views generated / reachable without collision.
        blocked_transitions: moves between consecutive views for which no collision-free joint
            path was found (0 when every move is possible).
        travel_time: joint travel time of the ordered path from ``start`` [s].
        travel_time_unordered: the same in cover-pick order (before ordering) [s].
        start: ``(n,)`` configuration the path starts from.
        solver: cover solver used.
        timings: seconds per stage.
    """

    views: tuple
    coverage: float
    planning_time: float
    joint_names: tuple
    target_coverage: float
    samples: SurfaceSamples
    visible_fraction: float
    geometric_visible_fraction: float
    surface_coverage: float
    n_candidates: int
    n_feasible: int
    blocked_transitions: int
    travel_time: float
    travel_time_unordered: float
    start: np.ndarray
    solver: str
    timings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.views)

    def coverage_counts(self) -> np.ndarray:
        """``(N,)`` how many planned views measure each sample."""
        counts = np.zeros(len(self.samples), dtype=int)
        for v in self.views:
            counts[v.visible_indices] += 1
        return counts

    def to_dict(self) -> dict:
        """JSON-ready summary (poses as row-major 4x4 lists and position + quaternion)."""
        from cosarad_ros.core.geometry import matrix_to_pose

        views = []
        for k, v in enumerate(self.views):
            p, q = matrix_to_pose(v.sensor_pose)
            views.append({
                "index": k,
                "sensor_pose": {"frame_id": "world", "position": p.tolist(), "orientation_xyzw": q.tolist(),
                                "matrix": v.sensor_pose.tolist()},
                "joints": v.joints.tolist(),
                "coverage_gain": v.coverage_gain,
                "visible_samples": int(len(v.visible_indices)),
                "part_position": v.part_pose[:3, 3].tolist(),
                "path_waypoints": 0 if v.path is None else int(len(v.path)),
            })
        return {
            "coverage": self.coverage,
            "surface_coverage": self.surface_coverage,
            "visible_fraction": self.visible_fraction,
            "geometric_visible_fraction": self.geometric_visible_fraction,
            "target_coverage": self.target_coverage,
            "num_views": len(self.views),
            "planning_time": self.planning_time,
            "joint_names": list(self.joint_names),
            "views": views,
            "n_candidates": self.n_candidates,
            "n_feasible": self.n_feasible,
            "blocked_transitions": self.blocked_transitions,
            "travel_time": self.travel_time,
            "travel_time_unordered": self.travel_time_unordered,
            "solver": self.solver,
            "num_samples": len(self.samples),
            "timings": dict(self.timings),
        }


# ----------------------------------------------------------------------------------------------
# candidates
# ----------------------------------------------------------------------------------------------

def plan_views(mesh, *, cell: CellModel | None = None, sensor: SensorViewModel | None = None,
               target_coverage: float = 0.95, n_samples: int = 3000, n_candidates: int = 240,
               solver="ilp", max_views: int = 0, min_elevation_deg: float = -15.0,
               clearance: float = 0.05, turntable_angles_deg: Sequence[float] = (0.0, 90.0, 180.0, 270.0),
               ik_random_seeds: int = 4, ik_branches: int = 3, check_transitions: bool = True,
               start=None, part_collision: str = "hull", seed: int = 0, progress: bool = False) -> ViewPlan:
    """Plan sensor views covering ``target_coverage`` of a part's visible surface.

    Args:
        mesh: the part (``trimesh.Trimesh``, metres, part frame of the cell).
        cell: the cell (default ``CellModel.default()``).
        sensor: the sensor model (default: the preset the cell was built with).
        target_coverage: share (0-1] of the area visible from reachable candidates to cover.
        n_samples: surface samples (coverage resolution).
        n_candidates: candidate views generated.
        solver: cover solver name or config (``ilp`` (default: exact within 5 s, never worse
            than greedy), ``greedy``, ``random``; see :mod:`.cover`).
        max_views: cap on the number of views (0: none).
        min_elevation_deg: lowest viewing elevation of candidates.
        clearance: the sensor origin must stay this far from the cell's static bodies [m].
        turntable_angles_deg: turntable angles to try, in order (cells with a turntable).
        ik_random_seeds: random IK seeds on top of home and its flipped variants.
        ik_branches: IK solutions kept per chosen view for ordering.
        check_transitions: verify every joint move between consecutive views.
        start: ``(n,)`` configuration the path starts from (default ``cell.home``).
        part_collision: ``hull`` or ``mesh`` collision model of the part.
        seed: random seed (sampling, candidates, IK seeds).
        progress: tqdm progress bars.

    Returns:
        :class:`ViewPlan`.

    Raises:
        ValueError: bad mesh or arguments (a mesh larger than 3 m is refused as probably in mm).
        UnreachablePartError: no candidate view is reachable without collision (part out of
            reach, wrong placement...).
    """
    t0 = time.perf_counter()
    if not (0.0 < target_coverage <= 1.0):
        raise ValueError(f"target_coverage must be in (0, 1], got {target_coverage}")
    cell = CellModel.default() if cell is None else cell
    sensor = sensor_for_cell(cell) if sensor is None else sensor
    cover_solver = make_cover_solver(solver if not max_views else
                                     ({"type": solver, "max_views": max_views} if isinstance(solver, str) else solver))
    cs = evaluate_candidates(mesh, cell=cell, sensor=sensor, n_samples=n_samples, n_candidates=n_candidates,
                             min_elevation_deg=min_elevation_deg, clearance=clearance,
                             turntable_angles_deg=turntable_angles_deg, ik_random_seeds=ik_random_seeds,
                             start=start, part_collision=part_collision, seed=seed, progress=progress)
    timings = dict(cs.timings)
    samples, V, feasible_q, checker, vis_model, start = (cs.samples, cs.visibility, cs.feasible, cs.checker,
                                                         cs.visibility_model, cs.start)
    cands = cs.poses
    w = samples.areas
    total_area = samples.total_area
    geometric_visible = V.any(axis=0)
    ik = cell.ik_solver()
    ref = start[cell.arm_indices]

    def free(q):
        return not checker.in_collision(q)

    feas_idx = np.array(sorted(feasible_q), dtype=int)
    F = V[feas_idx]
    visible = F.any(axis=0)
    visible_area = float(w[visible].sum())
    target_area = target_coverage * visible_area

    # 5: set cover
    t = time.perf_counter()
    # tie-break: prefer views the arm reaches close to the start configuration
    cost = np.array([np.max(np.abs(feasible_q[c][0] - start) / cell.velocity_limits) for c in feas_idx])
    cov = cover_solver.solve(F, w, target_area, cost=cost)
    chosen = [int(feas_idx[k]) for k in cov.chosen]
    timings["cover"] = time.perf_counter() - t

    # 6: IK branches, ordering, transitions
    t = time.perf_counter()
    branches = []
    more_seeds = cell.ik_seeds(max(ik_random_seeds, 8), seed=seed + 1)
    for ci in chosen:
        q0, ang = feasible_q[ci]
        T_world = cell.part_pose(ang) @ cands[ci]
        sols = [q0]
        found = ik.solve_all(T_world, more_seeds, q_fixed=q0, max_solutions=ik_branches, accept=free, reference=ref)
        for r in found:
            if r.success and all(np.max(np.abs(r.q - s_)) > 0.2 for s_ in sols):
                sols.append(r.q)
        branches.append(sols[:max(1, ik_branches)])
    unordered = [b[0] for b in branches]
    order = order_views(branches, start, cell.velocity_limits)
    timings["ordering"] = time.perf_counter() - t

    t = time.perf_counter()
    views = []
    covered = np.zeros(len(samples), dtype=bool)
    prev = start
    blocked = 0
    for pos, (k, b) in enumerate(zip(order.order, order.branch)):
        ci = chosen[k]
        q = branches[k][b]
        path = None
        if check_transitions:
            try:
                path = plan_joint_path(checker, prev, q, via=(cell.home,), seed=seed + pos)
            except PathBlockedError:
                blocked += 1
        T_reached = cell.fk(q)
        part_pose = cell.part_pose(feasible_q[ci][1])
        # what the reached pose measures (IK is exact to 1e-6 m, so this is the candidate's set)
        seen = vis_model.visible(np.linalg.inv(part_pose) @ T_reached)
        gain = float(w[seen & ~covered].sum()) / visible_area
        covered |= seen
        views.append(View(sensor_pose=T_reached, joints=q.copy(), coverage_gain=gain,
                          visible_indices=np.flatnonzero(seen), part_pose=part_pose, candidate=ci,
                          path=path if path is not None else np.zeros((0, cell.nq))))
        prev = q
    timings["transitions"] = time.perf_counter() - t
    from cosarad_ros.core.planning.ordering import path_cost

    covered_area = float(w[covered].sum())
    return ViewPlan(
        views=tuple(views),
        coverage=covered_area / visible_area,
        planning_time=time.perf_counter() - t0,
        joint_names=cell.joint_names,
        target_coverage=float(target_coverage),
        samples=samples,
        visible_fraction=visible_area / total_area,
        geometric_visible_fraction=float(w[geometric_visible].sum()) / total_area,
        surface_coverage=covered_area / total_area,
        n_candidates=int(len(cands)),
        n_feasible=int(len(feas_idx)),
        blocked_transitions=blocked,
        travel_time=order.cost,
        travel_time_unordered=path_cost(unordered, start, cell.velocity_limits),
        start=start,
        solver=getattr(cover_solver, "name", type(cover_solver).__name__),
        timings=timings,
    )
