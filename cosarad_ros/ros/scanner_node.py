"""``scanner_node``: one lifecycle node for every 3D sensor backend.

Backends (parameter ``sensor_type``): ``motioncam`` / ``ruler`` (simulated, ray-casting the
simulated cell), ``genicam`` (real cameras through a GenTL producer), ``replay`` (files, MCAP
recordings) and ``topic`` (relay any PointCloud2 topic, e.g. a Gazebo depth camera through
``ros_gz_bridge``, with an optional fixed frame correction).

Lifecycle (``rclpy.lifecycle``, managed nodes): *configure* builds the sensor and connects,
*activate* starts publishing (lifecycle publishers) and the continuous timer, *deactivate* stops
them, *cleanup* closes the device. The node starts unconfigured: ``scanner.launch.py`` starts it
as a launch_ros ``LifecycleNode`` and drives configure and activate (launch argument
``autostart``); ``autostart:=true`` as a node parameter does the same without launch.
``continuous`` can be switched at run time (``ros2 param set``) and takes effect at once.

Interfaces (``~`` = ``/scanner_node``):

* ``~/scan`` (``cosarad_ros/srv/Scan``): scan from the requested sensor pose (empty frame: the
  current pose); returns the cloud and the pose it was taken from, and publishes both;
* ``~/trigger`` (``std_srvs/Trigger``): software trigger, publishes one cloud;
* ``~/load_part`` (``cosarad_ros/srv/LoadPart``, simulation only): put a mesh on the fixture;
* ``~/points`` (``sensor_msgs/PointCloud2``, reliable as REP 2003 asks of drivers, so best-effort
  and reliable subscribers, RViz and ``ros2 bag`` all receive): metres, in ``frame_id`` (the
  sensor's REP 103 optical frame), stamped with the acquisition time;
* ``~/sensor_pose`` (``geometry_msgs/PoseStamped``): the pose each cloud was taken from;
* ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``): connection, counters, last error.

A device that is missing or stops answering does not crash the node: the failure is logged
and reported (diagnostics ERROR, ``success=False`` with the reason), and the node reconnects
every ``reconnect_period`` seconds; a scan request also tries one immediate reconnect per
``grab_retries``.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterType
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import PointCloud2
from std_srvs.srv import Trigger

from cosarad_ros.core.geometry import as_transform
from cosarad_ros.core.sensors import Sensor, SensorError, SensorFrame, SensorTimeoutError, SimulatedScene, make_sensor
from cosarad_ros.core.sensors.base import DEFAULT_FRAME_ID
from cosarad_ros.core.sensors.simulated import SimulatedSensor
from cosarad_ros.ros import conversions as cv
from cosarad_ros.ros.node_utils import (
    RELIABLE_QOS,
    SENSOR_PUB_QOS,
    SENSOR_QOS,
    GuardedCallbacks,
    NodeDiagnostics,
    Param,
    ParameterError,
    at_least,
    declare_parameters,
    non_negative,
    positive,
    run_node,
)
from cosarad_ros.srv import LoadPart, Scan

_DOUBLES = ParameterType.PARAMETER_DOUBLE_ARRAY
_STRINGS = ParameterType.PARAMETER_STRING_ARRAY


def _pose7(v) -> bool:
    return len(v) in (0, 7)


_pose7.text = "must be empty or 7 numbers [x, y, z, qx, qy, qz, qw]"  # type: ignore[attr-defined]


def _yaml_mapping(text) -> bool:
    return text == "" or isinstance(yaml.safe_load(text), dict)


_yaml_mapping.text = "must be a YAML mapping of sensor constructor arguments, e.g. '{resolution: [560, 400]}'"  # type: ignore[attr-defined]

PARAMS = (
    Param("sensor_type", "motioncam", "Backend: simulated structured light / laser profiler, GenICam camera, "
          "replay of recordings, or relay of a PointCloud2 topic",
          choices=("motioncam", "ruler", "genicam", "replay", "topic"), read_only=True),
    Param("sensor_options", "", "More sensor constructor arguments as a YAML mapping (keys as in "
          "cosarad_ros.core.sensors.make_sensor), e.g. '{resolution: [560, 400], noise_sigma: 0.0003}'",
          check=_yaml_mapping, read_only=True),
    Param("frame_id", DEFAULT_FRAME_ID, "Optical frame of the published clouds (REP 103: z forward, x right, y down)",
          read_only=True),
    Param("world_frame", "world", "Frame of requested and published sensor poses"),
    Param("sensor_pose", [], "Sensor pose [x y z qx qy qz qw] in world_frame used when a scan gives none "
          "(empty: the simulated device's working-distance view of the part; real devices: unknown)",
          check=_pose7, type_=_DOUBLES),
    Param("autostart", False, "Configure and activate on start-up without a lifecycle manager (launch files "
          "drive the transitions instead)", read_only=True),
    Param("continuous", False, "Publish clouds continuously at 'rate' while active (switchable at run time)"),
    Param("rate", 2.0, "Continuous acquisition rate [Hz]", check=positive, read_only=True),
    Param("reconnect_period", 2.0, "Seconds between reconnection attempts to a missing device",
          check=positive, read_only=True),
    Param("grab_retries", 1, "Immediate reconnect-and-retry attempts of a failed scan request", check=non_negative),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages", check=positive, read_only=True),
    Param("publish_normals", False, "Add normal_x/y/z fields to the cloud when the sensor provides normals"),
    Param("seed", 0, "Noise seed of the simulated sensors", check=non_negative, read_only=True),
    # simulation
    Param("sim.part_mesh", "", "Simulated part mesh file loaded at configure (empty: none until ~/load_part)"),
    Param("sim.mesh_scale", 1.0, "Scale applied to loaded meshes (0.001 for millimetre files)", check=positive),
    Param("sim.part_pose", [0.45, 0.0, 0.12, 0.0, 0.0, 0.0, 1.0], "Part pose [x y z qx qy qz qw] in world_frame "
          "(default: the fixture top of urdf/cosarad_cell.urdf.xacro)", check=_pose7, type_=_DOUBLES),
    Param("sim.rest_on_support", False, "Place loaded parts resting on the fixture at sim.part_pose's x, y "
          "(with its orientation) instead of at the exact pose"),
    Param("sim.cell", True, "Simulate the cell's table and fixture (urdf/cosarad_cell.urdf.xacro defaults)",
          read_only=True),
    Param("sim.fail_after", -1, "Fault injection: the simulated device stops answering after this many grabs "
          "(-1: never)", check=at_least(-1), read_only=True),
    Param("sim.recover_after", -1, "Fault injection: refused reconnections before the device comes back "
          "(-1: never)", check=at_least(-1), read_only=True),
    # genicam
    Param("genicam.cti_path", "", "GenTL producer (.cti file or folder); empty: $GENICAM_GENTL64_PATH", read_only=True),
    Param("genicam.device", "", "Serial number / id / name of the camera; empty: the first found", read_only=True),
    Param("genicam.settings", [], "Device features set at connect, in order, as 'Feature=Value'",
          type_=_STRINGS, read_only=True),
    Param("genicam.trigger", "auto", "Software trigger or free-running acquisition",
          choices=("auto", "software", "continuous"), read_only=True),
    Param("genicam.timeout", 5.0, "Seconds to wait for a frame before the device counts as lost",
          check=positive, read_only=True),
    # replay
    Param("replay.path", "", "File, folder, glob pattern, .mcap file or rosbag2 folder to replay", read_only=True),
    Param("replay.topic", "", "PointCloud2 topic inside the recording (empty: the only one)", read_only=True),
    Param("replay.loop", True, "Start over after the last cloud", read_only=True),
    Param("replay.restamp", True, "Stamp replayed clouds with the current time (else the recorded stamps)",
          read_only=True),
    # topic relay
    Param("topic.input", "/camera/points", "PointCloud2 topic to relay (topic backend)", read_only=True),
    Param("topic.frame_correction", "none", "Fixed rotation applied to relayed clouds: 'link_to_optical' turns a "
          "camera link frame (x forward, y left, z up; Gazebo) into the REP 103 optical frame",
          choices=("none", "link_to_optical"), read_only=True),
    Param("topic.timeout", 2.0, "Seconds a scan waits for the next cloud on topic.input", check=positive,
          read_only=True),
)

#: camera link frame (x forward, y left, z up) -> REP 103 optical frame (z forward, x right, y down)
LINK_TO_OPTICAL = np.array([[0.0, -1.0, 0.0, 0.0],
                            [0.0, 0.0, -1.0, 0.0],
                            [1.0, 0.0, 0.0, 0.0],
                            [0.0, 0.0, 0.0, 1.0]])


class TopicSensor(Sensor):
    """Relay of a PointCloud2 topic as a :class:`Sensor` (node layer: it needs rclpy).

    ``grab`` returns the next cloud that arrives after the call (waiting up to ``timeout``),
    its points mapped by ``correction`` (source frame -> optical frame) and relabelled
    ``frame_id``; the message stamp is kept.
    """

    type_name = "topic"

    def __init__(self, node, *, topic: str, correction=None, timeout: float = 2.0, frame_id: str = DEFAULT_FRAME_ID,
                 callback_group=None):
        super().__init__(frame_id=frame_id)
        self.node, self.topic, self.timeout = node, topic, float(timeout)
        self.correction = None if correction is None else as_transform(correction, name="correction")
        self._group = callback_group
        self._sub = None
        self._cond = threading.Condition()
        self._latest: PointCloud2 | None = None
        self._seq = 0
        self.on_cloud = None        # optional callback(frame) for continuous relaying

    def _connect(self) -> None:
        self._sub = self.node.create_subscription(PointCloud2, self.topic, self._cb, SENSOR_QOS,
                                                  callback_group=self._group)

    def _close(self) -> None:
        if self._sub is not None:
            self.node.destroy_subscription(self._sub)
        self._sub = None

    def _cb(self, msg: PointCloud2) -> None:
        with self._cond:
            self._latest, self._seq = msg, self._seq + 1
            self._cond.notify_all()
        if self.on_cloud is not None:
            self.on_cloud(msg)

    def to_frame(self, msg: PointCloud2, sensor_pose=None) -> SensorFrame:
        pts = cv.pointcloud2_to_xyz(msg, dtype=np.float64)
        if self.correction is not None:
            pts = pts @ self.correction[:3, :3].T + self.correction[:3, 3]
        return SensorFrame(points=pts, stamp=cv.stamp_to_seconds(msg.header.stamp), frame_id=self.frame_id,
                           sensor_pose=sensor_pose, meta={"sensor_type": self.type_name,
                                                          "source_frame": msg.header.frame_id})

    def _grab(self, sensor_pose):
        with self._cond:
            seq = self._seq
            if not self._cond.wait_for(lambda: self._seq > seq, timeout=self.timeout):
                raise SensorTimeoutError(f"no cloud on {self.topic} within {self.timeout} s")
            msg = self._latest
        return self.to_frame(msg, sensor_pose)

    def _mark_lost(self) -> None:
        # a silent topic is not a lost device: keep the subscription and wait for the next cloud
        pass


def _matrix_from7(v) -> np.ndarray:
    return cv.pose_to_matrix(_pose_msg(v))


def _pose_msg(v):
    from geometry_msgs.msg import Point, Pose, Quaternion

    return Pose(position=Point(x=float(v[0]), y=float(v[1]), z=float(v[2])),
                orientation=Quaternion(x=float(v[3]), y=float(v[4]), z=float(v[5]), w=float(v[6])))


class ScannerNode(GuardedCallbacks, LifecycleNode):
    """The scanner lifecycle node.

    Args:
        sensor: use this sensor instead of building one from the parameters (tests, the demo).
        scene: the simulated cell to scan (simulated backends; default: built from ``sim.*``).
        **node_kwargs: forwarded to ``rclpy`` (``context=``, ``parameter_overrides=``).
    """

    def __init__(self, sensor: Sensor | None = None, scene: SimulatedScene | None = None, **node_kwargs):
        super().__init__("scanner_node", **node_kwargs)
        self.p = declare_parameters(self, PARAMS)
        self._given_sensor, self._given_scene = sensor, scene
        self.sensor: Sensor | None = None
        self.scene: SimulatedScene | None = scene
        self.error_count = 0
        self.published = 0
        self.reconnect_attempts = 0
        self.last_error = ""
        self.last_frame_time = float("nan")
        self._active = False
        self._configured = False
        self._grab_lock = threading.Lock()
        self._srv_group = MutuallyExclusiveCallbackGroup()      # one scan at a time
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._sub_group = ReentrantCallbackGroup()
        self._continuous_timer = None
        self._reconnect_timer = None
        # lifecycle publishers: they publish only while the node is active
        self.points_pub = self.create_lifecycle_publisher(PointCloud2, "~/points", SENSOR_PUB_QOS)
        self.pose_pub = self.create_lifecycle_publisher(PoseStamped, "~/sensor_pose", RELIABLE_QOS)
        self.create_service(Scan, "~/scan", self._on_scan, callback_group=self._srv_group)
        self.create_service(Trigger, "~/trigger", self._on_trigger, callback_group=self._srv_group)
        self.create_service(LoadPart, "~/load_part", self._on_load_part, callback_group=self._srv_group)
        self.diagnostics = NodeDiagnostics(self, self.diagnostic_status, period=self.p.diagnostics_period,
                                           callback_group=self._timer_group)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self.get_logger().info(f"scanner_node created (sensor_type={self.p.sensor_type})")
        if self.p.autostart:
            self.trigger_configure()
            if self._configured:
                self.trigger_activate()

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.sensor = self._build_sensor()
        except (ValueError, FileNotFoundError, ParameterError) as exc:
            self.last_error = f"configure: {exc}"
            self.get_logger().error(f"cannot configure the sensor: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._configured = True
        self._try_connect("configure")
        self._reconnect_timer = self.create_timer(self.p.reconnect_period, self._reconnect_tick,
                                                  callback_group=self._timer_group)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)       # activates the lifecycle publishers
        self._active = True
        self._apply_continuous()
        self.get_logger().info("scanner_node active" + (" (continuous)" if self.p.continuous else ""))
        return result

    def _apply_continuous(self) -> None:
        """Start or stop the continuous timer to match ``continuous`` and the lifecycle state
        (the topic backend relays from its subscription instead of a timer).
        """
        want = self._active and self.p.continuous and self.p.sensor_type != "topic"
        if want and self._continuous_timer is None:
            self._continuous_timer = self.create_timer(1.0 / self.p.rate, self._continuous_tick,
                                                       callback_group=self._timer_group)
        elif not want:
            self._destroy_timer("_continuous_timer")

    def _on_parameters_set(self, params) -> None:
        if any(p.name == "continuous" for p in params):
            self._apply_continuous()
            self.get_logger().info(f"continuous acquisition {'on' if self.p.continuous else 'off'}")

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._destroy_timer("_continuous_timer")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        self._active = False
        self._destroy_timer("_continuous_timer")
        self._destroy_timer("_reconnect_timer")
        if self.sensor is not None:
            with self._grab_lock:
                self.sensor.close()
        self._configured = False

    def _destroy_timer(self, attr: str) -> None:
        t = getattr(self, attr)
        if t is not None:
            t.cancel()
            self.destroy_timer(t)
        setattr(self, attr, None)

    def destroy_node(self):
        if self.sensor is not None:
            self.sensor.close()
        return super().destroy_node()

    # --- sensor ----------------------------------------------------------------------------------

    def _build_sensor(self) -> Sensor:
        p = self.p
        if self._given_sensor is not None:
            sensor = self._given_sensor
            if isinstance(sensor, SimulatedSensor):
                self.scene = sensor.scene
            return sensor
        options = yaml.safe_load(p.sensor_options) if p.sensor_options else {}
        if p.sensor_type == "topic":
            corr = LINK_TO_OPTICAL if p.topic_frame_correction == "link_to_optical" else None
            sensor = TopicSensor(self, topic=p.topic_input, correction=corr, timeout=p.topic_timeout,
                                 frame_id=p.frame_id, callback_group=self._sub_group)
            sensor.on_cloud = self._on_relayed_cloud
            return sensor
        cfg: dict = {"type": p.sensor_type, "frame_id": p.frame_id}
        if p.sensor_type in ("motioncam", "ruler"):
            if self.scene is None:
                self.scene = SimulatedScene.inspection_cell() if p.sim_cell else SimulatedScene()
                if p.sim_part_mesh:
                    self.load_part(p.sim_part_mesh, part_id="")
            cfg.update({"scene": self.scene, "seed": p.seed,
                        "fail_after": None if p.sim_fail_after < 0 else p.sim_fail_after,
                        "recover_after": None if p.sim_recover_after < 0 else p.sim_recover_after})
            if p.sensor_pose:
                cfg["pose"] = _matrix_from7(p.sensor_pose)
        elif p.sensor_type == "genicam":
            cfg.update({"cti_path": p.genicam_cti_path or None, "device": p.genicam_device or None,
                        "settings": list(p.genicam_settings), "trigger": p.genicam_trigger,
                        "timeout": p.genicam_timeout})
        elif p.sensor_type == "replay":
            if not p.replay_path:
                raise ValueError("parameter 'replay.path' is empty: nothing to replay")
            cfg.update({"path": p.replay_path, "topic": p.replay_topic or None, "loop": p.replay_loop,
                        "restamp": p.replay_restamp})
        overlap = sorted(set(options) & {"type", "scene"})
        if overlap:
            raise ValueError(f"parameter 'sensor_options' cannot set {overlap}")
        cfg.update(options)
        return make_sensor(cfg)

    def _try_connect(self, why: str) -> bool:
        if self.sensor is None or self.sensor.is_connected:
            return self.sensor is not None
        self.reconnect_attempts += 1
        try:
            with self._grab_lock:
                self.sensor.connect()
        except SensorError as exc:
            self.last_error = f"{why}: {exc}"
            self.get_logger().error(f"sensor not available ({why}): {exc}; retrying every {self.p.reconnect_period} s")
            return False
        except Exception as exc:  # noqa: BLE001 - any driver failure must not kill the node
            self.last_error = f"{why}: {type(exc).__name__}: {exc}"
            self.get_logger().error(f"sensor connect failed ({why}): {self.last_error}")
            return False
        self.get_logger().info(f"sensor connected ({self.sensor.type_name}, {why})")
        return True

    def _reconnect_tick(self) -> None:
        if self._configured and self.sensor is not None and not self.sensor.is_connected:
            self._try_connect("reconnect")

    def grab(self, sensor_pose=None) -> SensorFrame:
        """Grab one frame, reconnecting up to ``grab_retries`` times on a device failure.

        Raises:
            SensorError: the device is not available (the reason is in the message).
        """
        attempts = 1 + int(self.p.grab_retries)
        last: Exception | None = None
        for i in range(attempts):
            if not self.sensor.is_connected and not self._try_connect("scan"):
                last = SensorError(self.last_error or "sensor not connected")
                continue
            try:
                with self._grab_lock:
                    frame = self.sensor.grab(sensor_pose)
                self.last_frame_time = time.time()
                return frame
            except SensorError as exc:
                last = exc
                self.error_count += 1
                self.last_error = f"grab: {exc}"
                self.get_logger().error(f"grab failed (attempt {i + 1}/{attempts}): {exc}")
        raise SensorError(str(last))

    def publish_frame(self, frame: SensorFrame):
        """Publish a frame's cloud (and its pose); returns ``(cloud_msg, pose_msg or None)``."""
        stamp = self._stamp(frame)
        extra = {"intensity": frame.intensity} if frame.intensity is not None else None
        cloud = cv.xyz_to_pointcloud2(frame.points, frame_id=frame.frame_id, stamp=stamp,
                                      normals=frame.normals if self.p.publish_normals else None, extra=extra)
        pose_msg = None
        if frame.sensor_pose is not None:
            pose_msg = PoseStamped()
            pose_msg.header.frame_id = self.p.world_frame
            pose_msg.header.stamp = cloud.header.stamp
            pose_msg.pose = cv.matrix_to_pose(frame.sensor_pose)
        if self._active:
            self.points_pub.publish(cloud)
            if pose_msg is not None:
                self.pose_pub.publish(pose_msg)
            self.published += 1
        return cloud, pose_msg

    def _stamp(self, frame: SensorFrame):
        # under simulated time the wall-clock acquisition time would not match TF: use the node's clock
        if self.get_parameter("use_sim_time").value:
            return self.get_clock().now().to_msg()
        return cv.seconds_to_stamp(frame.stamp)

    def _requested_pose(self, req_pose: PoseStamped):
        frame = req_pose.header.frame_id
        if not frame:
            return None
        T = cv.pose_to_matrix(req_pose.pose)
        if frame == self.p.world_frame:
            return T
        try:  # a pose in another frame needs TF (only on a full ROS install)
            import tf2_ros  # noqa: F401
        except ImportError:
            raise ValueError(f"sensor_pose is in frame '{frame}', not '{self.p.world_frame}', and tf2_ros is not "
                             "installed to convert it") from None
        return self._lookup_world(frame) @ T

    def _lookup_world(self, frame: str) -> np.ndarray:
        import tf2_ros
        from rclpy.duration import Duration
        from rclpy.time import Time

        if not hasattr(self, "_tf_buffer"):
            self._tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)
        try:
            tf = self._tf_buffer.lookup_transform(self.p.world_frame, frame, Time(), timeout=Duration(seconds=1.0))
        except Exception as exc:  # noqa: BLE001 - tf2 raises several lookup exceptions
            raise ValueError(f"no transform {self.p.world_frame} <- {frame}: {exc}") from exc
        return cv.transform_to_matrix(tf.transform)

    # --- callbacks -------------------------------------------------------------------------------

    def _not_ready(self) -> str:
        if not self._configured or self.sensor is None:
            return f"scanner_node is {self.lifecycle_state}, not configured (configure and activate it first)"
        if not self._active:
            return f"scanner_node is {self.lifecycle_state}, not active"
        return ""

    def _on_scan(self, req, resp):
        why = self._not_ready()
        if why:
            resp.success, resp.message = False, why
            return resp
        try:
            pose = self._requested_pose(req.sensor_pose)
            if pose is None and self.p.sensor_pose and not self.sensor.pose_driven:
                pose = _matrix_from7(self.p.sensor_pose)
            frame = self.grab(pose)
            cloud, pose_msg = self.publish_frame(frame)
        except (SensorError, ValueError) as exc:
            resp.success, resp.message = False, f"scan failed: {exc}"
            self.get_logger().error(resp.message)
            return resp
        resp.success = True
        resp.message = f"{len(frame)} points"
        resp.cloud = cloud
        if pose_msg is not None:
            resp.sensor_pose = pose_msg
        return resp

    def _on_trigger(self, req, resp):
        why = self._not_ready()
        if why:
            resp.success, resp.message = False, why
            return resp
        try:
            pose = None
            if self.p.sensor_pose and not self.sensor.pose_driven:
                pose = _matrix_from7(self.p.sensor_pose)
            frame = self.grab(pose)
            self.publish_frame(frame)
        except (SensorError, ValueError) as exc:
            resp.success, resp.message = False, f"trigger failed: {exc}"
            return resp
        resp.success, resp.message = True, f"published {len(frame)} points"
        return resp

    def load_part(self, mesh_path: str, part_id: str = "") -> np.ndarray:
        """Put a mesh (scaled by ``sim.mesh_scale``) in the simulated cell; returns its pose."""
        from cosarad_ros.core.io import read_mesh

        if self.scene is None:
            raise ValueError("load_part is simulation-only; sensor_type is " + self.p.sensor_type)
        from cosarad_ros.core.geometry import check_mesh

        mesh = read_mesh(mesh_path)
        if self.p.sim_mesh_scale != 1.0:
            mesh.apply_scale(self.p.sim_mesh_scale)
        check_mesh(mesh, name=str(mesh_path))
        T = _matrix_from7(self.p.sim_part_pose)
        if self.p.sim_rest_on_support:
            return self.scene.place_part(mesh, xy=T[:2, 3], rotation=T[:3, :3], part_id=part_id)
        self.scene.set_part(mesh, T, part_id=part_id)
        return T

    def _on_load_part(self, req, resp):
        try:
            if self.scene is None:
                raise ValueError(f"load_part is simulation-only (sensor_type is {self.p.sensor_type})")
            T = self.load_part(req.mesh_path, req.part_id)
        except (ValueError, FileNotFoundError) as exc:
            resp.success, resp.message = False, str(exc)
            self.get_logger().error(f"load_part: {exc}")
            return resp
        p = T[:3, 3]
        resp.success = True
        resp.message = f"part '{req.part_id or req.mesh_path}' placed at [{p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}]"
        self.get_logger().info(resp.message)
        return resp

    def _continuous_tick(self) -> None:
        if not self._active or self.sensor is None or not self.sensor.is_connected:
            return
        try:
            pose = None
            if self.p.sensor_pose and not self.sensor.pose_driven:
                pose = _matrix_from7(self.p.sensor_pose)
            with self._grab_lock:
                frame = self.sensor.grab(pose)
            self.last_frame_time = time.time()
            self.publish_frame(frame)
        except SensorError as exc:
            self.error_count += 1
            self.last_error = f"continuous grab: {exc}"
            self.get_logger().error(self.last_error)
        except Exception as exc:  # noqa: BLE001 - keep acquiring; report every failure
            self.error_count += 1
            self.last_error = f"continuous grab: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.last_error)

    def _on_relayed_cloud(self, msg: PointCloud2) -> None:
        if not (self._active and self.p.continuous):
            return
        try:
            pose = _matrix_from7(self.p.sensor_pose) if self.p.sensor_pose else None
            frame = self.sensor.to_frame(msg, pose)
            self.last_frame_time = time.time()
            self.publish_frame(frame)
        except ValueError as exc:
            self.error_count += 1
            self.last_error = f"relay: {exc}"
            self.get_logger().error(self.last_error)

    # --- diagnostics -----------------------------------------------------------------------------

    def diagnostic_status(self) -> DiagnosticStatus:
        st = DiagnosticStatus()
        st.name = f"{self.get_name()}: {self.p.sensor_type}"
        info = self.sensor.info() if self.sensor is not None else {}
        st.hardware_id = str(info.get("serial") or info.get("device") or
                             ("simulated" if info.get("simulated") else self.p.sensor_type))
        state = self.lifecycle_state
        if self.sensor is None or not self._configured:
            st.level, st.message = DiagnosticStatus.WARN, f"{state}: sensor not configured"
            if self.last_error:
                st.level, st.message = DiagnosticStatus.ERROR, f"{state}: {self.last_error}"
        elif not self.sensor.is_connected:
            st.level = DiagnosticStatus.ERROR
            st.message = f"device not connected, retrying every {self.p.reconnect_period} s: {self.last_error}"
        elif self.p.continuous and self._active and self.p.sensor_type != "topic" and \
                not (time.time() - self.last_frame_time < 3.0 / self.p.rate + 1.0):
            st.level, st.message = DiagnosticStatus.WARN, "no frame recently in continuous mode"
        else:
            st.level, st.message = DiagnosticStatus.OK, f"{state}, connected"
        values = {"lifecycle_state": state, "published": self.published, "errors": self.error_count,
                  "reconnect_attempts": self.reconnect_attempts, "last_error": self.last_error}
        values.update(info)
        st.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        return st

    def publish_diagnostics(self) -> None:
        self.diagnostics.publish()


def main(args=None) -> int:
    return run_node(ScannerNode, args)
