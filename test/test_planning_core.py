"""Building blocks of the view planner: visibility, sampling, set cover, IK, collisions,
ordering, time parameterisation, joint paths, MoveIt configuration.
"""
import itertools
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import trimesh
import yaml

from cosarad_ros.core.geometry import look_at
from cosarad_ros.core.planning import (
    CellModel,
    GreedyCover,
    IlpCover,
    RandomCover,
    SensorViewModel,
    VisibilityModel,
    make_cover_solver,
    order_views,
    sample_surface,
)
from cosarad_ros.core.planning.cell import example_robot_data_share
from cosarad_ros.core.planning.executor import BuiltinExecutor, time_parameterize, trapezoid_profile
from cosarad_ros.core.planning.kinematics import wrap_to_limits
from cosarad_ros.core.planning.motion import PathBlockedError, plan_joint_path
from cosarad_ros.core.planning.ordering import path_cost, travel_time

needs_robot = pytest.mark.skipif(example_robot_data_share() is None, reason="example-robot-data not installed")


@pytest.fixture(scope="module")
def cell():
    return CellModel.default()


def _plane(size=1.0):
    """A single square in z = 0 facing +z (two triangles)."""
    h = size / 2
    v = np.array([[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]])
    return trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3]], process=False)


# ----------------------------------------------------------------------------------------------
# sensor model and visibility

def test_sensor_presets_and_validation():
    s = SensorViewModel.preset("motioncam3d_m")
    assert (s.near, s.far, s.optimal_distance) == (0.50, 1.05, 0.75)
    assert s.scanner_kwargs()["working_range"] == (0.50, 1.05)
    w, h = SensorViewModel(fov_deg=(90.0, 60.0), near=0.2, far=0.6, optimal_distance=0.5).footprint()
    assert w == pytest.approx(1.0) and h == pytest.approx(2 * 0.5 * np.tan(np.deg2rad(30)))
    with pytest.raises(ValueError, match="near < far"):
        SensorViewModel(near=0.6, far=0.5)
    with pytest.raises(ValueError, match="optimal_distance"):
        SensorViewModel(optimal_distance=0.9)
    with pytest.raises(ValueError, match="unknown sensor preset 'nope'"):
        SensorViewModel.preset("nope")


def test_surface_samples_carry_the_mesh_area():
    m = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    s = sample_surface(m, 2000, seed=1)
    assert s.total_area == pytest.approx(m.area, rel=1e-9)
    assert abs(len(s) - 2000) < 60
    # per-face area shares are exact: summing the samples of a face gives its area
    per_face = np.bincount(s.faces, weights=s.areas, minlength=len(m.faces))
    has = per_face > 0
    assert has.mean() > 0.95
    np.testing.assert_allclose(per_face[has] / m.area_faces[has], per_face[has].sum() / m.area_faces[has].sum(),
                               rtol=1e-9)
    with pytest.raises(ValueError, match="empty"):
        sample_surface(trimesh.Trimesh(), 100)


def test_field_of_view_fraction_matches_the_footprint():
    sensor = SensorViewModel(fov_deg=(40.0, 30.0), near=0.3, far=0.7, optimal_distance=0.5, max_incidence_deg=89.0,
                             baseline=0.0)
    vm = VisibilityModel(_plane(2.0), sensor, n_samples=20000, seed=0)
    pose = look_at([0, 0, 0.5], [0, 0, 0], up=(0, 1, 0))
    seen = vm.visible(pose)
    w, h = sensor.footprint(0.5)
    frac = vm.samples.areas[seen].sum() / vm.samples.total_area
    assert frac == pytest.approx(w * h / 4.0, rel=0.05)     # footprint over plane area
    # seen from behind, nothing (back faces are never seen)
    assert not vm.visible(look_at([0, 0, -0.5], [0, 0, 0], up=(0, 1, 0))).any()


def test_working_range_incidence_and_occlusion():
    sensor = SensorViewModel(fov_deg=(40.0, 30.0), near=0.3, far=0.7, optimal_distance=0.5, max_incidence_deg=60.0,
                             baseline=0.0)
    vm = VisibilityModel(_plane(0.1), sensor, n_samples=2000)
    assert vm.visible(look_at([0, 0, 0.5], [0, 0, 0])).all()
    assert not vm.visible(look_at([0, 0, 0.8], [0, 0, 0])).any()          # beyond far
    assert not vm.visible(look_at([0, 0, 0.2], [0, 0, 0])).any()          # closer than near
    for angle, seen in ((50.0, True), (70.0, False)):                      # incidence limit 60 deg
        d = np.deg2rad(angle)
        eye = 0.5 * np.array([np.sin(d), 0.0, np.cos(d)])
        assert vm.visible(look_at(eye, [0, 0, 0])).any() == seen
    # a blocker between the sensor and the plane hides the plane
    blocker = trimesh.creation.box(extents=(0.3, 0.3, 0.01))
    blocker.apply_translation((0, 0, 0.2))
    vm2 = VisibilityModel(_plane(0.1), sensor, occluders=[blocker], samples=vm.samples)
    assert not vm2.visible(look_at([0, 0, 0.5], [0, 0, 0])).any()


def test_projector_baseline_adds_shadows():
    """Inside a slot, a triangulation sensor loses points the camera alone would see."""
    pytest.importorskip("manifold3d")  # trimesh's boolean engine

    slab = trimesh.creation.box(extents=(0.2, 0.2, 0.05))
    slot = trimesh.creation.box(extents=(0.02, 0.2, 0.04))
    slot.apply_translation((0, 0, 0.01))
    part = slab.difference(slot)
    camera_only = SensorViewModel(baseline=0.0, max_incidence_deg=85.0)
    with_projector = SensorViewModel(baseline=0.15, max_incidence_deg=85.0)
    s = sample_surface(part, 6000)
    pose = look_at([0, 0, 0.025 + 0.44], [0, 0, 0], up=(0, 1, 0))
    a = VisibilityModel(part, camera_only, samples=s).visible(pose)
    b = VisibilityModel(part, with_projector, samples=s).visible(pose)
    assert not (b & ~a).any()
    assert (a & ~b).sum() > 20


# ----------------------------------------------------------------------------------------------
# set cover

def _chvatal_instance():
    """Greedy takes the big middle set first and then needs both halves: 3 sets; the optimum
    is the 2 halves.
    """
    n = 14
    left = np.zeros(n, bool)
    left[:7] = True
    right = ~left
    middle = np.zeros(n, bool)
    middle[[0, 1, 2, 3, 7, 8, 9, 10]] = True
    return np.stack([left, right, middle]), np.ones(n)


def test_greedy_is_suboptimal_where_the_ilp_is_exact():
    vis, w = _chvatal_instance()
    g = GreedyCover(prune=False).solve(vis, w, w.sum())
    assert g.chosen[0] == 2 and len(g.chosen) == 3
    # reverse delete already repairs this one
    assert sorted(GreedyCover().solve(vis, w, w.sum()).chosen) == [0, 1]
    ilp = IlpCover(time_limit=5).solve(vis, w, w.sum())
    assert sorted(ilp.chosen) == [0, 1] and ilp.covered_area == w.sum()


def test_ilp_beats_greedy_with_pruning_on_a_random_instance():
    best_gap = 0
    for seed in (31, 34, 35):       # instances HiGHS solves in well under a second
        rng = np.random.default_rng(seed)
        vis = rng.random((40, 300)) < 0.08
        w = rng.random(300)
        seen = vis.any(axis=0)
        target = 0.95 * w[seen].sum()
        g = GreedyCover().solve(vis, w, target)
        i = IlpCover(time_limit=5).solve(vis, w, target)
        assert i.covered_area >= target - 1e-9
        assert len(i.chosen) <= len(g.chosen)
        best_gap = max(best_gap, len(g.chosen) - len(i.chosen))
    assert best_gap >= 1


def test_partial_cover_targets_gains_and_random_baseline():
    rng = np.random.default_rng(0)
    vis = rng.random((60, 500)) < 0.05
    w = rng.random(500)
    target = 0.8 * w[vis.any(axis=0)].sum()
    g = GreedyCover().solve(vis, w, target)
    assert g.covered_area >= target
    assert sum(g.gains) == pytest.approx(g.covered_area)
    r = [RandomCover(seed=s).solve(vis, w, target) for s in range(5)]
    assert all(x.covered_area >= target for x in r)
    assert np.mean([len(x.chosen) for x in r]) > len(g.chosen)
    assert len(GreedyCover(max_views=2).solve(vis, w, target).chosen) == 2
    assert isinstance(make_cover_solver({"type": "ilp", "time_limit": 3}), IlpCover)
    with pytest.raises(ValueError, match="unknown cover solver"):
        make_cover_solver("simplex")


# ----------------------------------------------------------------------------------------------
# ordering

def test_ordering_against_brute_force():
    rng = np.random.default_rng(7)
    vel = np.array([3.0, 3.0, 3.0, 3.2, 3.2, 3.2])
    start = np.zeros(6)
    ratios = []
    for _ in range(5):
        pts = rng.uniform(-2, 2, size=(6, 6))
        res = order_views([[p] for p in pts], start, vel)
        best = min(path_cost(pts[list(p)], start, vel) for p in itertools.permutations(range(6)))
        assert res.cost <= res.input_cost + 1e-12
        assert res.cost == pytest.approx(path_cost(pts[list(res.order)], start, vel))
        ratios.append(res.cost / best)
    assert max(ratios) < 1.15 and np.mean(ratios) < 1.05


def test_ordering_picks_the_ik_branch_that_shortens_travel():
    vel = np.ones(2)
    start = np.zeros(2)
    branches = [[np.array([3.0, 0.0]), np.array([0.5, 0.0])], [np.array([1.0, 0.0])]]
    res = order_views(branches, start, vel)
    assert res.order == (0, 1) and res.branch == (1, 0)
    assert res.cost == pytest.approx(1.0)
    assert travel_time([0, 0], [1, -2], [1, 4]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# kinematics and collisions

def test_wrap_to_limits():
    lo, hi = np.full(3, -2 * np.pi), np.full(3, 2 * np.pi)
    q = wrap_to_limits([3 * np.pi / 2, -3.0, 7.0], lo, hi, reference=[0.0, 0.0, 0.0])
    np.testing.assert_allclose(q, [-np.pi / 2, -3.0, 7.0 - 2 * np.pi])
    np.testing.assert_allclose(wrap_to_limits([3.0], [-1.0], [1.0]), [1.0])   # no equivalent: clipped


@needs_robot
def test_ik_reaches_forward_kinematics_poses(cell):
    rng = np.random.default_rng(0)
    ik = cell.ik_solver()
    n_ok = 0
    for _ in range(20):
        q = cell.home.copy()
        q[cell.arm_indices] += rng.uniform(-1.0, 1.0, 6)
        T = cell.fk(q)
        res = ik.solve(T, cell.ik_seeds(4, seed=1))
        if res.success:
            n_ok += 1
            T2 = cell.fk(res.q)
            assert np.linalg.norm(T2[:3, 3] - T[:3, 3]) < 2e-4
            assert np.all(res.q >= cell.lower - 1e-9) and np.all(res.q <= cell.upper + 1e-9)
    assert n_ok >= 18
    far = np.eye(4)
    far[:3, 3] = [3.0, 0, 0.5]
    res = ik.solve(far, cell.ik_seeds(2))
    assert not res.success and res.position_error > 1.0


@needs_robot
def test_collision_checker_names_the_bodies(cell):
    part = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    part.apply_translation((0, 0, 0.05))
    cc = cell.collision_checker(part)
    assert not cc.in_collision(cell.home)
    q = cell.home.copy()
    q[cell.joint_index("shoulder_lift_joint")] = 0.35          # upper arm down through the table
    assert cc.in_collision(q)
    assert any("table" in pair for pair in cc.colliding_pairs(q))
    # drive the sensor into the part: IK of a pose inside it
    inside = look_at(cell.part_pose()[:3, 3] + [0, 0, 0.06], cell.part_pose()[:3, 3] + [0.2, 0, 0.06])
    res = cell.ik_solver().solve(inside, cell.ik_seeds(6))
    assert res.success
    assert ("sensor_link", "part") in cc.colliding_pairs(res.q) or ("part", "sensor_link") in cc.colliding_pairs(res.q)
    # adjacent links are never checked, and nothing touches at home
    pairs = {frozenset(p) for p in cc.pairs}
    assert frozenset(("forearm_link", "wrist_1_link")) not in pairs
    assert frozenset(("upper_arm_link", "table")) in pairs


# ----------------------------------------------------------------------------------------------
# time parameterisation, paths, execution

def test_trapezoid_profile_shapes():
    T, ta, vp = trapezoid_profile(2.0, 10.0)      # reaches 2.0: trapezoid
    assert vp == 2.0 and ta == pytest.approx(0.2) and T == pytest.approx(0.7)
    T, ta, vp = trapezoid_profile(10.0, 4.0)      # triangle
    assert ta == pytest.approx(0.5) and T == pytest.approx(1.0) and vp == pytest.approx(2.0)


def test_time_parameterisation_respects_limits_and_waypoints():
    W = np.array([[0.0, 0.0, 0.0], [1.0, -0.5, 0.2], [1.0, 2.0, 0.2]])
    v = np.array([1.0, 2.0, 0.5])
    a = np.array([2.0, 3.0, 1.0])
    tr = time_parameterize(W, v, a, dt=0.005, joint_names=("a", "b", "c"))
    assert np.all(np.diff(tr.times) > 0)
    for w in W:
        assert np.min(np.abs(tr.positions - w).max(axis=1)) < 1e-12
    np.testing.assert_allclose(tr.velocities[[0, -1]], 0.0)
    assert np.all(np.abs(tr.velocities) <= v + 1e-9)
    assert np.all(np.abs(tr.accelerations) <= a + 1e-9)
    fd = np.diff(tr.positions, axis=0) / np.diff(tr.times)[:, None]
    assert np.all(np.abs(fd) <= v * 1.001 + 1e-9)
    # segment 1 is limited by joint a (1 rad at 1 rad/s, 2 rad/s^2): 1/1 + 1/2 = 1.5 s
    seg1_end = tr.times[np.argmin(np.abs(tr.positions - W[1]).max(axis=1))]
    assert seg1_end == pytest.approx(1.5, abs=1e-9)
    np.testing.assert_allclose(tr.sample(tr.duration), W[-1])
    with pytest.raises(ValueError):
        time_parameterize(W, -v, a)


@needs_robot
def test_rrt_connect_goes_around_an_obstacle(cell):
    # a pillar between two arm configurations on either side of it
    pillar = trimesh.creation.box(extents=(0.08, 0.08, 0.9))
    pillar.apply_translation((0, 0, 0.45))
    cc = cell.collision_checker(pillar, part_collision="mesh")
    qa = cell.home.copy()
    qb = cell.home.copy()
    qa[0], qb[0] = -0.9, 0.9
    for q in (qa, qb):
        q[1], q[2] = -0.9, 1.2      # arm reaching out over the table towards the part
    assert not cc.in_collision(qa) and not cc.in_collision(qb)
    assert not cc.segment_free(qa, qb)
    path = plan_joint_path(cc, qa, qb, via=(), seed=0)
    assert len(path) >= 3
    np.testing.assert_allclose(path[0], qa)
    np.testing.assert_allclose(path[-1], qb)
    assert all(cc.segment_free(a, b, max_step_rad=0.02) for a, b in zip(path[:-1], path[1:]))
    with pytest.raises(PathBlockedError):
        plan_joint_path(cc, qa, qb, via=(), max_iterations=1, seed=0)
    with pytest.raises(ValueError, match="goal configuration is in collision"):
        bad = cell.home.copy()
        bad[1] = 0.35
        plan_joint_path(cc, qa, bad)


@needs_robot
def test_builtin_executor_moves_collision_free(cell):
    part = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    part.apply_translation((0, 0, 0.05))
    cc = cell.collision_checker(part)
    ex = BuiltinExecutor(cell, cc, velocity_scale=0.5, acceleration=2.0, dt=0.02)
    goal = cell.home.copy()
    goal[0] += 0.8
    goal[3] -= 0.4
    move = ex.plan_move(cell.home, goal)
    assert move.direct
    tr = move.trajectory
    assert tr.joint_names == cell.joint_names
    np.testing.assert_allclose(tr.positions[-1], goal)
    np.testing.assert_allclose(move.sensor_pose, cell.fk(goal))
    assert np.all(np.abs(tr.velocities) <= 0.5 * cell.velocity_limits + 1e-9)
    assert not any(cc.in_collision(q) for q in tr.positions[::5])


# ----------------------------------------------------------------------------------------------
# MoveIt configuration (moveit_py itself is not installed here)

@needs_robot
def test_moveit_config_and_guarded_import(cell):
    from cosarad_ros.core.planning.moveit import (
        MoveItExecutor,
        MoveItUnavailableError,
        cell_srdf,
        moveit_available,
        moveit_config,
    )

    srdf = ET.fromstring(cell_srdf(cell))
    chain = srdf.find("group/chain")
    assert (chain.get("base_link"), chain.get("tip_link")) == ("base_link", "sensor_optical_frame")
    home = {j.get("name"): float(j.get("value")) for j in srdf.findall("group_state/joint")}
    assert list(home) == list(cell.arm_joint_names)
    disabled = {frozenset((d.get("link1"), d.get("link2"))): d.get("reason")
                for d in srdf.findall("disable_collisions")}
    assert disabled[frozenset(("forearm_link", "wrist_1_link"))] == "Adjacent"
    assert disabled[frozenset(("floor", "table"))] == "Never"
    assert frozenset(("upper_arm_link", "table")) not in disabled
    cfg = moveit_config(cell)
    yaml.safe_dump(cfg)   # plain data only (MoveItPy writes it to a parameter file)
    assert cfg["robot_description"] == cell.urdf
    assert cfg["moveit_simple_controller_manager"]["scaled_joint_trajectory_controller"]["joints"] == \
        list(cell.arm_joint_names)
    assert cfg["robot_description_kinematics"]["arm"]["kinematics_solver"].startswith("kdl")
    with pytest.raises(ValueError, match="velocity_scaling"):
        moveit_config(cell, velocity_scaling=1.5)
    if not moveit_available():
        with pytest.raises(MoveItUnavailableError, match="moveit_py is not installed"):
            MoveItExecutor(cell)
