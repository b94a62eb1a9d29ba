"""scanner_node over real DDS: lifecycle (unconfigured at start, lifecycle publishers), scan /
trigger / load_part services, the published cloud (reliable per REP 2003: best-effort and reliable
subscribers both receive it), pose and diagnostics, continuous mode switched at run time, a device
that disappears, the topic relay and GenICam.
"""
import os
import time

import numpy as np
import pytest
import trimesh

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.lifecycle import LifecyclePublisher  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from cosarad_ros.core.geometry import look_at, transform_points  # noqa: E402
from cosarad_ros.core.sensors import SimulatedScene, make_sensor  # noqa: E402
from cosarad_ros.ros import conversions as cv  # noqa: E402
from cosarad_ros.ros.node_utils import RELIABLE_QOS, SENSOR_QOS  # noqa: E402
from cosarad_ros.ros.scanner_node import LINK_TO_OPTICAL, ScannerNode  # noqa: E402
from cosarad_ros.srv import LoadPart, Scan  # noqa: E402
from ros_utils import RosHarness  # noqa: E402

pytestmark = pytest.mark.ros
SMALL = "{resolution: [160, 114]}"


@pytest.fixture
def box_stl(tmp_path):
    path = tmp_path / "box.stl"
    trimesh.creation.box((0.08, 0.06, 0.04)).export(path)
    return str(path)


def _state(ros):
    return ros.call(GetState, "/scanner_node/get_state", GetState.Request()).current_state.label


def _change(ros, tid):
    return ros.call(ChangeState, "/scanner_node/change_state",
                    ChangeState.Request(transition=Transition(id=tid))).success


def _scan_req(T=None, frame="world"):
    req = Scan.Request()
    if T is not None:
        req.sensor_pose = PoseStamped()
        req.sensor_pose.header.frame_id = frame
        req.sensor_pose.pose = cv.matrix_to_pose(T)
    return req


def _set_param(ros, node_name, name, value: bool):
    req = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
        type=ParameterType.PARAMETER_BOOL, bool_value=value))])
    return ros.call(SetParameters, f"/{node_name}/set_parameters", req).results[0]


def test_lifecycle_scan_load_part_and_published_cloud(box_stl):
    with RosHarness() as ros:
        # no autostart by default: a lifecycle manager (launch_ros LifecycleNode) drives it
        node = ros.add(ScannerNode(**ros.node_kwargs(sensor_options=SMALL, **{"sim.rest_on_support": True})))
        assert _state(ros) == "unconfigured"
        assert isinstance(node.points_pub, LifecyclePublisher) and isinstance(node.pose_pub, LifecyclePublisher)
        assert not node.points_pub.is_activated
        r = ros.call(Scan, "/scanner_node/scan", _scan_req())
        assert not r.success and "not configured" in r.message
        assert _change(ros, Transition.TRANSITION_CONFIGURE) and _state(ros) == "inactive"
        assert node.sensor.is_connected                      # configure connects
        assert not ros.call(Scan, "/scanner_node/scan", _scan_req()).success   # inactive: refused
        assert _change(ros, Transition.TRANSITION_ACTIVATE) and _state(ros) == "active"
        assert node.points_pub.is_activated
        # REP 2003: the driver publishes reliable, so both kinds of subscriber are matched
        assert node.points_pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        offered = ros.client.get_publishers_info_by_topic("/scanner_node/points")
        assert offered and {i.qos_profile.reliability for i in offered} == {ReliabilityPolicy.RELIABLE}

        r = ros.call(LoadPart, "/scanner_node/load_part", LoadPart.Request(mesh_path=box_stl, part_id="box-1"))
        assert r.success, r.message
        part = node.scene.bounds("part")
        np.testing.assert_allclose(part[0, 2], 0.12, atol=1e-9)               # resting on the fixture top
        T = look_at(part.mean(axis=0) + [0.0, -0.35, 0.65], part.mean(axis=0))
        clouds = ros.collect(PointCloud2, "/scanner_node/points", SENSOR_QOS)            # best effort
        reliable = ros.collect(PointCloud2, "/scanner_node/points", RELIABLE_QOS)        # RViz / ros2 bag
        poses = ros.collect(PoseStamped, "/scanner_node/sensor_pose", RELIABLE_QOS)
        ros.wait_until(lambda: node.points_pub.get_subscription_count() == 2, timeout=10, what="both matched")
        t0 = time.time()
        r = ros.call(Scan, "/scanner_node/scan", _scan_req(T))
        t1 = time.time()
        assert r.success, r.message
        assert r.cloud.header.frame_id == "sensor_optical_frame"
        assert t0 <= cv.stamp_to_seconds(r.cloud.header.stamp) <= t1
        assert r.sensor_pose.header.frame_id == "world"
        np.testing.assert_allclose(cv.pose_to_matrix(r.sensor_pose.pose), T, atol=1e-9)
        pts = cv.pointcloud2_to_xyz(r.cloud, dtype=np.float64)
        assert len(pts) > 1000 and 0.5 < pts[:, 2].min() and pts[:, 2].max() < 1.05   # optical z = depth
        w = transform_points(T, pts)
        on_part = (w >= part[0] - 2e-3).all(axis=1) & (w <= part[1] + 2e-3).all(axis=1)
        assert on_part.sum() > 200                                              # the box is seen
        top = w[on_part & (w[:, 2] > part[1, 2] - 1e-3)]
        assert np.abs(top[:, 2] - part[1, 2]).max() < 2e-3                      # its top face at 0.16 m
        ros.wait_until(lambda: clouds and poses and reliable, timeout=10, what="published cloud and pose")
        assert clouds[0].width == r.cloud.width and poses[0].header.stamp == r.cloud.header.stamp
        assert reliable[0].width == r.cloud.width
        # deactivate / cleanup close the device; the lifecycle publishers stop
        assert _change(ros, Transition.TRANSITION_DEACTIVATE)
        assert not node.points_pub.is_activated
        assert _change(ros, Transition.TRANSITION_CLEANUP) and not node.sensor.is_connected
        r = ros.call(LoadPart, "/scanner_node/load_part", LoadPart.Request(mesh_path="/no/such.stl"))
        assert not r.success and "no such file" in r.message


def test_device_that_disappears_is_reported_and_retried():
    scene = SimulatedScene.inspection_cell()
    scene.place_part(trimesh.creation.box((0.08, 0.06, 0.04)))
    sensor = make_sensor({"type": "motioncam", "scene": scene, "resolution": [96, 68], "fail_after": 1,
                          "recover_after": 2})
    with RosHarness() as ros:
        node = ros.add(ScannerNode(sensor=sensor, **ros.node_kwargs(autostart=True, reconnect_period=0.4,
                                                                    grab_retries=1, diagnostics_period=0.2)))
        assert ros.call(Scan, "/scanner_node/scan", _scan_req()).success
        r = ros.call(Scan, "/scanner_node/scan", _scan_req())
        assert not r.success and "not found" in r.message     # timed out, the immediate retry was refused
        assert node.error_count >= 1 and node.context.ok()     # the node is alive
        diag = ros.wait_for_message(DiagnosticArray, "/diagnostics", timeout=10,
                                    predicate=lambda m: m.status and m.status[0].level == DiagnosticStatus.ERROR)
        assert "not connected" in diag.status[0].message
        # the reconnect timer brings it back without a restart
        ros.wait_for_message(DiagnosticArray, "/diagnostics", timeout=15,
                             predicate=lambda m: m.status and m.status[0].level == DiagnosticStatus.OK)
        r = ros.call(Scan, "/scanner_node/scan", _scan_req())
        assert r.success and r.cloud.width > 0
        values = {kv.key: kv.value for kv in node.diagnostic_status().values}
        assert int(values["failures"]) >= 1 and int(values["reconnect_attempts"]) >= 3


def test_trigger_and_continuous_mode():
    with RosHarness() as ros:
        ros.add(ScannerNode(**ros.node_kwargs(autostart=True, sensor_type="ruler", continuous=True, rate=4.0,
                                              sensor_options="{columns: 64, travel: 0.02, step: 0.002}")))
        clouds = ros.collect(PointCloud2, "/scanner_node/points", SENSOR_QOS)
        ros.wait_until(lambda: len(clouds) >= 3, timeout=20, what="three continuous clouds")
        stamps = [cv.stamp_to_seconds(c.header.stamp) for c in clouds[:3]]
        assert stamps[0] < stamps[1] < stamps[2]
        r = ros.call(Trigger, "/scanner_node/trigger", Trigger.Request())
        assert r.success and "points" in r.message


def test_continuous_switched_at_run_time():
    with RosHarness() as ros:
        ros.add(ScannerNode(**ros.node_kwargs(autostart=True, sensor_type="ruler", rate=5.0,
                                              sensor_options="{columns: 64, travel: 0.02, step: 0.002}")))
        clouds = ros.collect(PointCloud2, "/scanner_node/points", SENSOR_QOS)
        time.sleep(1.0)
        assert not clouds                                     # active, but not continuous: nothing
        assert _set_param(ros, "scanner_node", "continuous", True).successful
        ros.wait_until(lambda: len(clouds) >= 3, timeout=20, what="clouds after `ros2 param set continuous true`")
        assert _set_param(ros, "scanner_node", "continuous", False).successful
        time.sleep(0.6)                                       # a tick in flight may still land
        n = len(clouds)
        time.sleep(1.2)
        assert len(clouds) == n                               # stopped


def test_topic_relay_with_frame_correction():
    rng = np.random.default_rng(0)
    link_pts = rng.uniform([0.5, -0.2, -0.1], [0.9, 0.2, 0.1], size=(300, 3))   # x forward, y left, z up
    with RosHarness() as ros:
        ros.add(ScannerNode(**ros.node_kwargs(autostart=True, sensor_type="topic", **{"topic.input": "/gz/depth/points",
                                              "topic.frame_correction": "link_to_optical"})))
        pub = ros.client.create_publisher(PointCloud2, "/gz/depth/points", SENSOR_QOS)
        stop = []

        def publish():
            msg = cv.xyz_to_pointcloud2(link_pts, frame_id="camera_link", stamp=123.5)
            while not stop:
                pub.publish(msg)
                time.sleep(0.05)

        import threading
        th = threading.Thread(target=publish, daemon=True)
        th.start()
        try:
            r = ros.call(Scan, "/scanner_node/scan", _scan_req())
        finally:
            stop.append(1)
            th.join()
        assert r.success, r.message
        pts = cv.pointcloud2_to_xyz(r.cloud, dtype=np.float64)
        np.testing.assert_allclose(pts, transform_points(LINK_TO_OPTICAL, link_pts), atol=1e-6)
        assert r.cloud.header.frame_id == "sensor_optical_frame"
        assert cv.stamp_to_seconds(r.cloud.header.stamp) == pytest.approx(123.5)
        assert (pts[:, 2] > 0.49).all()                                         # optical z = link x


def test_bad_configuration_fails_configure_and_genicam_through_the_node():
    import genicam

    viky = os.path.join(os.path.dirname(genicam.__file__), "viky.cti")
    with RosHarness() as ros:
        node = ros.add(ScannerNode(**ros.node_kwargs(autostart=True, sensor_type="replay")))   # no replay.path
        assert node.lifecycle_state == "unconfigured" and "replay.path" in node.last_error
        assert node.diagnostic_status().level == DiagnosticStatus.ERROR
        node.destroy_node()
        if not os.path.isfile(viky):
            pytest.skip("viky.cti not shipped with this genicam wheel")
        ros.add(ScannerNode(**ros.node_kwargs(autostart=True, sensor_type="genicam", **{"genicam.cti_path": viky,
                                              "genicam.timeout": 2.0})))
        r = ros.call(Scan, "/scanner_node/scan", _scan_req())
        assert r.success and r.cloud.width == 400 * 400
        assert r.sensor_pose.header.frame_id == ""                              # a real camera: pose unknown
