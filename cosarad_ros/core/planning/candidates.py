"""Candidate sensor poses of the view planner and what each measures: generation (Fibonacci
sphere and surface-patch normals), visibility by ray casting, reachability by IK and collision
checks (steps 2-4 of :func:`~.views.plan_views`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cosarad_ros.core.geometry import look_at
from cosarad_ros.core.planning.cell import CellModel
from cosarad_ros.core.planning.visibility import SensorViewModel, SurfaceSamples, VisibilityModel, _check_mesh

__all__ = ["UnreachablePartError", "CandidateSet", "evaluate_candidates", "generate_candidates",
           "fibonacci_sphere", "cell_occluders", "sensor_for_cell"]


class UnreachablePartError(ValueError):
    """No candidate view of the part can be reached by the arm without collision."""


def fibonacci_sphere(n: int) -> np.ndarray:
    """``(n, 3)`` nearly uniform unit vectors (golden-angle spiral)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _farthest_points(feat: np.ndarray, k: int, rng) -> np.ndarray:
    n = len(feat)
    k = min(k, n)
    chosen = [int(rng.integers(n))]
    d = np.linalg.norm(feat - feat[chosen[0]], axis=1)
    for _ in range(k - 1):
        j = int(np.argmax(d))
        chosen.append(j)
        d = np.minimum(d, np.linalg.norm(feat - feat[j], axis=1))
    return np.asarray(chosen)


def generate_candidates(mesh, samples: SurfaceSamples, sensor: SensorViewModel, *, n_candidates: int = 240,
                        up=(0.0, 0.0, 1.0), min_elevation_deg: float = -15.0, distance: float | None = None,
                        seed: int = 0) -> np.ndarray:
    """Candidate sensor poses around a part, in the part frame.

    Half on a Fibonacci sphere around the bounding-box centre (looking at it, placed so the
    nearest surface along the line of sight is at ``distance``), half along the normals of
    surface patches chosen by farthest-point sampling (looking at the patch from ``distance``).
    Views from below ``min_elevation_deg`` (relative to the plane normal to ``up``) are dropped.

    Args:
        mesh: trimesh (part frame).
        samples: its surface samples.
        sensor: gives the stand-off (``optimal_distance``).
        n_candidates: about how many poses to return.
        up: world "up" in the part frame (the table normal).
        min_elevation_deg: lowest viewing elevation.
        distance: stand-off [m] (default ``sensor.optimal_distance``).
        seed: random seed.

    Returns:
        ``(V, 4, 4)`` optical frame -> part frame poses (image x axis horizontal).
    """
    d = sensor.optimal_distance if distance is None else float(distance)
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    rng = np.random.default_rng(seed)
    sin_min = np.sin(np.deg2rad(min_elevation_deg))
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    c = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
    poses = []
    n_sphere = max(1, n_candidates // 2)
    # oversample the sphere so about n_sphere survive the elevation cut
    frac = max(0.05, (1.0 - sin_min) / 2.0)
    dirs = fibonacci_sphere(int(np.ceil(n_sphere / frac)))
    dirs = dirs[dirs @ up >= sin_min]
    for u in dirs:
        support = float(np.max((verts - c) @ u))
        eye = c + (support + d) * u
        poses.append(look_at(eye, c, up=up))
    n_normal = max(0, n_candidates - len(poses))
    if n_normal:
        scale = float(np.linalg.norm(verts.max(axis=0) - verts.min(axis=0))) or 1.0
        ok = samples.normals @ up >= sin_min
        idx = np.flatnonzero(ok)
        if idx.size:
            feat = np.concatenate([samples.points[idx] / scale, 0.5 * samples.normals[idx]], axis=1)
            pick = idx[_farthest_points(feat, n_normal, rng)]
            for i in pick:
                p, n = samples.points[i], samples.normals[i]
                poses.append(look_at(p + d * n, p, up=up))
    return np.asarray(poses)


def _roll180(T: np.ndarray) -> np.ndarray:
    """The pose turned half a turn about its optical (z) axis: same frustum, same samples."""
    out = T.copy()
    out[:3, 0] *= -1.0
    out[:3, 1] *= -1.0
    return out


def cell_occluders(cell: CellModel, part_pose: np.ndarray) -> list:
    """The cell's static bodies (fixture, table, ...) as trimeshes in the part frame."""
    import trimesh

    inv = np.linalg.inv(part_pose)
    out = []
    for _link, kind, size, T in cell.environment_boxes():
        if kind == "box":
            m = trimesh.creation.box(extents=size)
        else:
            m = trimesh.creation.cylinder(radius=float(size[0]), height=float(size[1]), sections=48)
        m.apply_transform(inv @ T)
        out.append(m)
    return out


def sensor_for_cell(cell: CellModel) -> SensorViewModel:
    """The sensor preset the cell's URDF was built with (default model when unknown)."""
    from cosarad_ros.core.planning.visibility import load_sensor_presets

    try:
        presets = load_sensor_presets(cell.config.sensors_file or None) if cell.config else load_sensor_presets()
    except (FileNotFoundError, ValueError):
        return SensorViewModel()
    if cell.sensor_type in presets:
        return SensorViewModel.preset(cell.sensor_type, cell.config.sensors_file or None if cell.config else None)
    return SensorViewModel()


def _inside_boxes(point: np.ndarray, boxes, clearance: float) -> str | None:
    for link, kind, size, T in boxes:
        p = np.linalg.inv(T) @ np.append(point, 1.0)
        if kind == "box":
            if np.all(np.abs(p[:3]) <= size / 2 + clearance):
                return link
        else:
            if np.hypot(p[0], p[1]) <= size[0] + clearance and abs(p[2]) <= size[1] / 2 + clearance:
                return link
    return None


# ----------------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------------

def _prepare_mesh(mesh):
    """Validate (at least a tetrahedron: a flat mesh has no convex hull for the collision model);
    drop degenerate faces; make a closed mesh's normals point outwards.
    """
    from cosarad_ros.core.geometry import check_mesh

    mesh = check_mesh(_check_mesh(mesh), metres=False).copy()
    keep = mesh.area_faces > 0
    if not keep.all():
        mesh.update_faces(keep)
        mesh.remove_unreferenced_vertices()
    if mesh.is_watertight and mesh.is_winding_consistent and mesh.volume < 0:
        mesh.invert()
    return mesh


@dataclass(frozen=True)
class CandidateSet:
    """Candidate views of a part, their visibility and which the arm reaches.

    Attributes:
        mesh: the (validated) part mesh.
        samples: surface samples (part frame).
        poses: ``(V, 4, 4)`` candidate optical -> part poses (the second half are the first
            half rolled half a turn about the optical axis).
        visibility: ``(V, N)`` bool, samples each candidate measures.
        feasible: ``{candidate: (q (n,), turntable angle [rad])}`` collision-free IK solutions.
        visibility_model: the :class:`~.visibility.VisibilityModel` used.
        checker: the collision checker (cell + part).
        start: ``(n,)`` start configuration.
        reasons: counts of rejected candidates by reason.
        timings: seconds per stage.
    """

    mesh: object
    samples: SurfaceSamples
    poses: np.ndarray
    visibility: np.ndarray
    feasible: dict
    visibility_model: object
    checker: object
    start: np.ndarray
    reasons: dict
    timings: dict

    @property
    def feasible_indices(self) -> np.ndarray:
        return np.array(sorted(self.feasible), dtype=int)

    @property
    def visible_area(self) -> float:
        """Area visible from the reachable candidates."""
        F = self.visibility[self.feasible_indices]
        return float(self.samples.areas[F.any(axis=0)].sum())


def evaluate_candidates(mesh, *, cell: CellModel, sensor: SensorViewModel, n_samples: int = 3000,
                        n_candidates: int = 240, min_elevation_deg: float = -15.0, clearance: float = 0.05,
                        turntable_angles_deg: Sequence[float] = (0.0, 90.0, 180.0, 270.0),
                        ik_random_seeds: int = 4, start=None, part_collision: str = "hull", seed: int = 0,
                        progress: bool = False) -> CandidateSet:
    """Steps 1-4 of :func:`plan_views`: samples, candidates, visibility and reachability
    (arguments as there).

    Raises:
        ValueError: bad mesh, or the start configuration collides with the part.
        UnreachablePartError: no candidate is reachable without collision.
    """
    timings = {}
    mesh = _prepare_mesh(mesh)
    extent = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    if extent > 3.0:
        raise ValueError(f"mesh is {extent:.1f} m across; meshes are in metres (scale a millimetre mesh by 0.001)")
    if n_candidates < 4:
        raise ValueError(f"n_candidates must be >= 4, got {n_candidates}")
    start = cell.home.copy() if start is None else cell.check_q(start, name="start")
    angles = [0.0] if cell.turntable_index is None else [np.deg2rad(a) for a in turntable_angles_deg]
    if not angles:
        raise ValueError("turntable_angles_deg is empty")

    # 1-3: samples, candidates, visibility (all in the part frame)
    part_pose0 = cell.part_pose(angles[0])
    up_part = part_pose0[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    t = time.perf_counter()
    vis_model = VisibilityModel(mesh, sensor, occluders=cell_occluders(cell, part_pose0), n_samples=n_samples,
                                seed=seed)
    samples = vis_model.samples
    base = generate_candidates(mesh, samples, sensor, n_candidates=n_candidates, up=up_part,
                               min_elevation_deg=min_elevation_deg, seed=seed)
    # every pose also rolled half a turn about its optical axis (a wrist_3 turn for the arm):
    # the same frustum, but the sensor body (and a projector beside the camera) swap sides
    nb = len(base)
    cands = np.concatenate([base, np.stack([_roll180(T) for T in base])])
    V0 = vis_model.visibility_matrix(base, progress=progress)
    V = np.concatenate([V0, V0 if sensor.baseline <= 0 else vis_model.visibility_matrix(cands[nb:])])
    timings["visibility"] = time.perf_counter() - t

    # 4: reachability (IK + collision) of every useful candidate
    t = time.perf_counter()
    checker = cell.collision_checker(mesh, part_collision=part_collision)
    if checker.in_collision(start):
        pairs = ", ".join(f"{a}/{b}" for a, b in checker.colliding_pairs(start)[:4])
        raise ValueError(f"the start configuration collides ({pairs}); move the arm clear of the part or give "
                         f"another start")
    ik = cell.ik_solver()
    boxes = cell.environment_boxes()
    shoulder = cell.shoulder_position()
    reach = cell.reach()
    base_seeds = cell.ik_seeds(ik_random_seeds, seed=seed)
    feasible_q: dict[int, tuple] = {}   # candidate -> (q, turntable angle)
    reasons = {"out_of_reach": 0, "inside_cell_body": 0, "no_ik_or_collision": 0}
    nearest_gap = np.inf
    useful = [ci for ci in range(nb) if V[ci].any() or V[ci + nb].any()]
    last_q = None
    ref = start[cell.arm_indices]
    w3 = cell.arm_indices[-1]

    def free(q):
        return not checker.in_collision(q)

    it = useful
    if progress:
        from tqdm import tqdm

        it = tqdm(useful, desc="reachability", unit="view", leave=False)
    for ci in it:
        for ang in angles:
            Tp = cell.part_pose(ang)
            T_world = Tp @ cands[ci]
            eye = T_world[:3, 3]
            gap = float(np.linalg.norm(eye - shoulder)) - reach
            nearest_gap = min(nearest_gap, gap)
            if gap > 0:
                reasons["out_of_reach"] += 1
                continue
            if _inside_boxes(eye, boxes, clearance) is not None:
                reasons["inside_cell_body"] += 1
                continue
            q_fixed = start.copy()
            if cell.turntable_index is not None:
                q_fixed[cell.turntable_index] = ang
            seeds = base_seeds if last_q is None else np.vstack([last_q[cell.arm_indices], base_seeds])
            res = ik.solve(T_world, seeds, q_fixed=q_fixed, accept=free, reference=ref)
            if res.success:
                feasible_q[int(ci)] = (res.q, ang)
                last_q = res.q
            if res.converged == 0:
                # the rolled pose is a wrist_3 turn away: without IK for one, none for the other
                reasons["no_ik_or_collision"] += 1
                continue
            flipped = []
            for dq in (np.pi, -np.pi):
                s_ = res.q.copy()
                s_[w3] += dq
                flipped.append(s_[cell.arm_indices])
            res2 = ik.solve(_roll180(T_world), np.vstack([flipped, seeds]), q_fixed=q_fixed, accept=free,
                            reference=ref)
            if res2.success:
                feasible_q[int(ci + nb)] = (res2.q, ang)
            if res.success or res2.success:
                break
            reasons["no_ik_or_collision"] += 1
    timings["reachability"] = time.perf_counter() - t
    if not feasible_q:
        pp = cell.part_pose(angles[0])[:3, 3]
        where = ", ".join(f"{x:.2f}" for x in pp)
        if reasons["out_of_reach"] and not reasons["no_ik_or_collision"] and not reasons["inside_cell_body"]:
            why = (f"every candidate sensor position is beyond the arm's reach "
                   f"({reach:.2f} m from the shoulder; the nearest is {nearest_gap:.2f} m too far)")
        else:
            why = (f"of {len(useful)} candidate views, {reasons['out_of_reach']} are beyond reach, "
                   f"{reasons['inside_cell_body']} inside cell bodies and {reasons['no_ik_or_collision']} "
                   f"have no collision-free IK solution")
        raise UnreachablePartError(
            f"part '{cell.part_frame}' at ({where}) m in '{cell.base_frame}' is out of reach: {why}; "
            f"move the fixture closer or use a longer arm")

    return CandidateSet(mesh, samples, cands, V, feasible_q, vis_model, checker, start, reasons, timings)
