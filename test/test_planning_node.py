"""viewpoint_planner_node over real DDS: plan views, move to each (built-in executor), hand the
reached sensor pose to the simulated scanner and check the scans cover what the plan promised;
published joint states, trajectories and poses; clear failures."""
import numpy as np
import pytest
import trimesh

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from cosarad_ros.core.geometry import transform_points  # noqa: E402
from cosarad_ros.core.planning import CellModel, SensorViewModel  # noqa: E402
from cosarad_ros.core.planning.cell import example_robot_data_share  # noqa: E402
from cosarad_ros.ros import conversions as cv  # noqa: E402
from cosarad_ros.ros.node_utils import LATCHED_QOS, RELIABLE_QOS  # noqa: E402
from cosarad_ros.ros.viewpoint_planner_node import ViewpointPlannerNode  # noqa: E402
from cosarad_ros.srv import MoveToView, PlanViews, Scan  # noqa: E402
from ros_utils import RosHarness  # noqa: E402

pytestmark = [pytest.mark.ros,
              pytest.mark.skipif(example_robot_data_share() is None, reason="example-robot-data not installed")]
FAST = dict(n_candidates=100, n_samples=1200, playback_speed=0.0)
PLAN = "/viewpoint_planner_node/plan_views"
MOVE = "/viewpoint_planner_node/move_to_view"


@pytest.fixture
def part_stl(tmp_path):
    from cosarad_ros.core.data.parts import make_part

    path = tmp_path / "bracket.stl"
    make_part("bracket", seed=1).mesh.export(path)
    return path


def test_plan_move_and_scan_cover_the_part(part_stl, tmp_path):
    from cosarad_ros.ros.scanner_node import ScannerNode

    sensor = SensorViewModel.preset("motioncam3d_s")
    opts = dict(sensor.scanner_kwargs(), resolution=[280, 220], noise_sigma=0.0)
    yaml_opts = "{" + ", ".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in opts.items()) + "}"
    with RosHarness() as ros:
        ros.add(ViewpointPlannerNode(**ros.node_kwargs(coverage_dir=str(tmp_path), **FAST)))
        # the part exactly at the part frame of the cell (no re-centring on the fixture)
        ros.add(ScannerNode(**ros.node_kwargs(sensor_options=yaml_opts, **{"sim.part_mesh": str(part_stl),
                                                                          "sim.rest_on_support": False})))
        traj = ros.collect(JointTrajectory, "/viewpoint_planner_node/joint_trajectory", RELIABLE_QOS)

        r = ros.call(MoveToView, MOVE, MoveToView.Request(index=0))
        assert not r.success and "call ~/plan_views first" in r.message
        plan = ros.call(PlanViews, PLAN, PlanViews.Request(mesh_path=str(part_stl)), timeout=120)
        assert plan.success, plan.message
        n = len(plan.views.poses)
        assert n >= 2 and plan.coverage >= 0.95
        assert len(plan.joints) == n and len(plan.coverage_per_view) == n
        assert sum(plan.coverage_per_view) == pytest.approx(plan.coverage, rel=1e-5)
        assert list(plan.joint_names) == list(CellModel.UR_JOINTS)
        assert plan.views.header.frame_id == "world" and plan.planning_time > 0
        assert (tmp_path / "coverage_bracket.png").is_file() and "coverage picture" in plan.message

        cell = CellModel.default()
        part_pose = cv.pose_to_matrix(ros.wait_for_message(PoseStamped, "/viewpoint_planner_node/part_pose",
                                                           LATCHED_QOS).pose)
        np.testing.assert_allclose(part_pose, cell.part_pose(), atol=1e-6)
        scans, reached = [], []
        for k in range(n):
            m = ros.call(MoveToView, MOVE, MoveToView.Request(index=k))
            assert m.success, m.message
            T = cv.pose_to_matrix(m.sensor_pose.pose)
            reached.append(T)
            # the pose reached is the forward kinematics of the planned joints
            np.testing.assert_allclose(T, cell.fk(np.asarray(plan.joints[k].positions)), atol=1e-5)
            np.testing.assert_allclose(T, cv.pose_to_matrix(plan.views.poses[k]), atol=1e-5)
            s = ros.call(Scan, "/scanner_node/scan", Scan.Request(sensor_pose=m.sensor_pose))
            assert s.success, s.message
            pts = cv.pointcloud2_to_xyz(s.cloud).astype(np.float64)
            scans.append(transform_points(np.linalg.inv(part_pose) @ T, pts))
        r = ros.call(MoveToView, MOVE, MoveToView.Request(index=n + 3))
        assert not r.success and "out of range" in r.message
        # the same part again (the next inspection): the plan is reused, not recomputed
        again = ros.call(PlanViews, PLAN, PlanViews.Request(mesh_path=str(part_stl)), timeout=120)
        assert again.success and "cached plan" in again.message
        assert [cv.pose_to_matrix(p_).tolist() for p_ in again.views.poses] == \
            [cv.pose_to_matrix(p_).tolist() for p_ in plan.views.poses]
        assert again.planning_time == plan.planning_time

        js = ros.wait_for_message(JointState, "/joint_states")
        assert list(js.name) == list(CellModel.UR_JOINTS)
        np.testing.assert_allclose(js.position, plan.joints[-1].positions, atol=1e-9)
        ros.wait_until(lambda: len(traj) >= n, what="one trajectory per move")
        last = traj[-1]
        t = [cv.stamp_to_seconds(p.time_from_start) for p in last.points]
        assert np.all(np.diff(t) > 0)
        np.testing.assert_allclose(last.points[-1].positions, plan.joints[-1].positions, atol=1e-9)
        pose = ros.wait_for_message(PoseStamped, "/viewpoint_planner_node/sensor_pose", LATCHED_QOS)
        np.testing.assert_allclose(cv.pose_to_matrix(pose.pose), T, atol=1e-6)

    # the simulated scans measure what the planner's visibility model predicts for the reached poses
    from scipy.spatial import cKDTree

    from cosarad_ros.core.planning import VisibilityModel, sample_surface
    from cosarad_ros.core.planning.views import cell_occluders

    mesh = trimesh.load(part_stl, force="mesh")
    samples = sample_surface(mesh, 4000, seed=3)
    vm = VisibilityModel(mesh, sensor, occluders=cell_occluders(cell, part_pose), samples=samples)
    predicted = np.zeros(len(samples), bool)
    for pose in reached:
        predicted |= vm.visible(np.linalg.inv(part_pose) @ pose)
    tree = cKDTree(np.vstack(scans))
    scanned = tree.query(samples.points, distance_upper_bound=0.002)[0] < np.inf
    assert predicted.mean() > 0.4
    assert scanned[predicted].mean() > 0.9
    lo, hi = mesh.bounds
    inner = np.all((samples.points[:, :2] > lo[:2] + 0.004) & (samples.points[:, :2] < hi[:2] - 0.004), axis=1)
    bottom = (samples.normals[:, 2] < -0.99) & (samples.points[:, 2] < 1e-6) & inner   # on the fixture
    assert bottom.sum() > 50 and not predicted[bottom].any() and not scanned[bottom].any()


def test_unreachable_part_bad_requests_and_cad_library(part_stl, tmp_path):
    lib = tmp_path / "library"
    lib.mkdir()
    (lib / "bracket.stl").write_bytes(part_stl.read_bytes())
    with RosHarness() as ros:
        ros.add(ViewpointPlannerNode(**ros.node_kwargs(cad_library=str(lib), coverage_dir="-", **FAST)))
        r = ros.call(PlanViews, PLAN, PlanViews.Request(mesh_path=str(tmp_path / "missing.stl")))
        assert not r.success and "not found" in r.message
        r = ros.call(PlanViews, PLAN, PlanViews.Request(part_type="gear"))
        assert not r.success and "not in the CAD library" in r.message and "bracket" in r.message
        r = ros.call(PlanViews, PLAN, PlanViews.Request(part_type="bracket", target_coverage=0.8), timeout=120)
        assert r.success, r.message
        assert r.coverage >= 0.8
        r = ros.call(PlanViews, PLAN, PlanViews.Request(mesh_path=str(part_stl), target_coverage=1.5))
        assert not r.success and "target_coverage" in r.message

    with RosHarness() as ros:
        ros.add(ViewpointPlannerNode(**ros.node_kwargs(fixture_xyz=[2.2, 0.0, 0.12], coverage_dir="-", **FAST)))
        r = ros.call(PlanViews, PLAN, PlanViews.Request(mesh_path=str(part_stl)), timeout=120)
        assert not r.success
        assert "out of reach" in r.message and "(2.20, 0.00, 0.12)" in r.message


def test_invalid_parameters_are_refused_naming_the_parameter():
    from cosarad_ros.ros.node_utils import ParameterError

    with RosHarness() as ros:
        with pytest.raises(ParameterError, match="target_coverage"):
            ViewpointPlannerNode(**ros.node_kwargs(target_coverage=0.0))
        with pytest.raises(ParameterError, match="solver"):
            ViewpointPlannerNode(**ros.node_kwargs(solver="simplex"))
