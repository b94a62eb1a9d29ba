"""viewpoint_planner_node over real DDS: plan views, move to each (built-in executor), hand the
reached sensor pose to the simulated scanner and check the scans cover what the plan promised;
published joint states, trajectories and poses; clear failures.
"""
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
        ros.add(ScannerNode(**ros.node_kwargs(autostart=True, sensor_options=yaml_opts,
                                              **{"sim.part_mesh": str(part_stl),
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
    from cosarad_ros.core.planning.candidates import cell_occluders

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


def test_go_to_view_action_feedback_and_cancel(part_stl):
    """``~/go_to_view``: progress feedback while the arm moves; a cancel stops it part-way."""
    from action_msgs.msg import GoalStatus

    from cosarad_ros.action import GoToView

    with RosHarness() as ros:
        node = ros.add(ViewpointPlannerNode(**ros.node_kwargs(coverage_dir="-", **dict(FAST, playback_speed=1.0))))
        plan = ros.call(PlanViews, PLAN, PlanViews.Request(mesh_path=str(part_stl)), timeout=120)
        assert plan.success, plan.message
        client = ros.action_client(GoToView, "/viewpoint_planner_node/go_to_view")

        def send(index, fb):
            return ros.wait_future(client.send_goal_async(GoToView.Goal(index=index), feedback_callback=fb), 10)

        progress = []
        handle = send(0, lambda m: progress.append(m.feedback.progress))
        assert handle.accepted
        res = ros.wait_future(handle.get_result_async(), 60)
        assert res.status == GoalStatus.STATUS_SUCCEEDED and res.result.success, res.result.message
        assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
        np.testing.assert_allclose(node.q, plan.joints[0].positions, atol=1e-9)

        # the next view, cancelled once the arm is on its way
        start = node.q.copy()
        moving = []
        handle = send(1, lambda m: moving.append(m.feedback))
        assert handle.accepted
        ros.wait_until(lambda: moving and moving[-1].progress > 0.05, timeout=30, what="the arm moving")
        ros.wait_future(handle.cancel_goal_async(), 10)
        res = ros.wait_future(handle.get_result_async(), 30)
        assert res.status == GoalStatus.STATUS_CANCELED and not res.result.success
        assert "cancelled" in res.result.message
        goal = np.asarray(plan.joints[1].positions)
        assert not np.allclose(node.q, goal, atol=1e-3) and not np.allclose(node.q, start, atol=1e-6)
        np.testing.assert_allclose(cv.pose_to_matrix(res.result.sensor_pose.pose), node.cell.fk(node.q), atol=1e-6)
        assert node.last_view is None
        # the blocking service still works afterwards
        m = ros.call(MoveToView, MOVE, MoveToView.Request(index=1), timeout=60)
        assert m.success, m.message


def test_joint_states_owned_by_the_driver_with_a_real_controller():
    """With a real arm (FollowJointTrajectory executor) the driver's joint_state_broadcaster owns
    ``joint_states``: the planner publishes none and follows the driver's.
    """
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from cosarad_ros.ros.trajectory_client import UR_CONTROLLER

    with RosHarness() as ros:
        node = ros.add(ViewpointPlannerNode(**ros.node_kwargs(executor="follow_joint_trajectory", coverage_dir="-",
                                                              **FAST)))
        assert node.p.controller_name == UR_CONTROLLER == "scaled_joint_trajectory_controller"
        assert not node.owns_joint_states
        assert "/joint_states" not in [p_.topic_name for p_ in node.publishers]
        assert "/joint_states" in [s_.topic_name for s_ in node.subscriptions]
        warn = ros.wait_for_message(DiagnosticArray, "/diagnostics", timeout=10,
                                    predicate=lambda m: m.status and m.status[0].name.startswith("viewpoint_planner"))
        assert warn.status[0].level == DiagnosticStatus.WARN and "joint_states" in warn.status[0].message
        # the driver publishes; the planner plans from where the real arm is
        driver = ros.client.create_publisher(JointState, "/joint_states", 10)
        q = node.cell.home.copy()
        q[0] += 0.3
        msg = JointState(name=list(CellModel.UR_JOINTS), position=[float(v) for v in q[node.cell.arm_indices]])
        ros.wait_until(lambda: driver.get_subscription_count() > 0, timeout=10, what="planner subscribed")
        driver.publish(msg)
        ros.wait_until(lambda: np.allclose(node.q, q, atol=1e-12), timeout=10, what="planner following the driver")

    with RosHarness() as ros:
        node = ros.add(ViewpointPlannerNode(**ros.node_kwargs(coverage_dir="-", **FAST)))   # builtin: simulated arm
        assert node.owns_joint_states
        assert "/joint_states" in [p_.topic_name for p_ in node.publishers]
        assert "/joint_states" not in [s_.topic_name for s_ in node.subscriptions]


def test_follow_joint_trajectory_executor_sends_the_arm_trajectory(part_stl):
    """The controller's goal is the built-in planner's trajectory for the arm joints. Where
    control_msgs is not installed (PyPI), the move is refused with the reason, the node lives.
    """
    from cosarad_ros.ros.trajectory_client import trajectory_msg

    with RosHarness() as ros:
        node = ros.add(ViewpointPlannerNode(**ros.node_kwargs(executor="follow_joint_trajectory", coverage_dir="-",
                                                              **FAST)))
        plan = ros.call(PlanViews, PLAN, PlanViews.Request(mesh_path=str(part_stl)), timeout=120)
        assert plan.success, plan.message
        move = node._builtin.plan_move(node.q, np.asarray(plan.joints[0].positions))
        msg = trajectory_msg(move.trajectory, node.cell.arm_joint_names)
        assert list(msg.joint_names) == list(CellModel.UR_JOINTS)
        goal = np.asarray(plan.joints[0].positions)
        np.testing.assert_allclose(msg.points[-1].positions, goal[node.cell.arm_indices])
        t = [cv.stamp_to_seconds(p.time_from_start) for p in msg.points]
        assert t[0] == 0.0 and np.all(np.diff(t) > 0)
        with pytest.raises(ValueError, match="not in the trajectory"):
            trajectory_msg(move.trajectory, ["elbow_joint", "gripper_joint"])
        try:
            import control_msgs  # noqa: F401
        except ImportError:
            r = ros.call(MoveToView, MOVE, MoveToView.Request(index=0))
            assert not r.success and "control_msgs" in r.message
            assert node.context.ok()
        else:
            pytest.skip("control_msgs installed: the client runs against a real controller (not here)")


def test_moveit_controller_defaults_to_the_ur_drivers():
    from cosarad_ros.core.planning.moveit import moveit_config

    cfg = moveit_config(CellModel.default())
    assert cfg["moveit_simple_controller_manager"]["controller_names"] == ["scaled_joint_trajectory_controller"]
    cfg = moveit_config(CellModel.default(), controller="joint_trajectory_controller")
    assert "joint_trajectory_controller" in cfg["moveit_simple_controller_manager"]


def test_cad_library_with_home_folder_is_expanded(part_stl, tmp_path, monkeypatch):
    lib = tmp_path / "home" / "cad"
    lib.mkdir(parents=True)
    (lib / "bracket.stl").write_bytes(part_stl.read_bytes())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with RosHarness() as ros:
        ros.add(ViewpointPlannerNode(**ros.node_kwargs(cad_library="~/cad", coverage_dir="-", **FAST)))
        r = ros.call(PlanViews, PLAN, PlanViews.Request(part_type="bracket", target_coverage=0.8), timeout=120)
        assert r.success, r.message
