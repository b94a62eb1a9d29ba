"""``viewpoint_planner_node``: plans sensor views of a part and moves the arm to them.

Services:
    ``~/plan_views`` (cosarad_ros/srv/PlanViews): plan views for ``mesh_path`` (metres, part
        frame) or ``part_type`` (a label of the CAD library ``cad_library``). Writes a coverage
        PNG (``coverage_dir``) and publishes the views.
    ``~/move_to_view`` (cosarad_ros/srv/MoveToView): move to planned view ``index`` and answer
        when the arm is there. The response carries the sensor optical frame pose reached
        (forward kinematics of the reached joints), in ``world``.

Actions:
    ``~/go_to_view`` (cosarad_ros/action/GoToView): the same move with feedback (share of the
        trajectory done, commanded joints) and cancel (the arm stops where it is).

Executors (``executor``): ``builtin`` (collision-checked joint path, trapezoidal time
parameterisation, played back as joint states: the simulated arm), ``follow_joint_trajectory``
(the same trajectory sent to a ros2_control controller, ``controller_name``, through
``control_msgs/action/FollowJointTrajectory``: a real arm) or ``moveit`` (MoveIt 2's
``moveit_py``, executing through the same controller); ``auto``: MoveIt where installed.

Joint states: the node publishes ``joint_states`` only when it owns the robot model (the
built-in executor moves a simulated arm); with a real arm or MoveIt the driver's
joint_state_broadcaster owns that topic and the node subscribes to it (``joint_states``
parameter: ``auto`` | ``publish`` | ``subscribe``).

Topics (published):
    ``joint_states`` (sensor_msgs/JointState) the cell's joints, at ``joint_state_rate`` (built-in
        executor; else subscribed).
    ``~/joint_trajectory`` (trajectory_msgs/JointTrajectory) every trajectory executed.
    ``~/sensor_pose`` (geometry_msgs/PoseStamped, latched) sensor pose after each move.
    ``~/part_pose`` (geometry_msgs/PoseStamped, latched) the part frame in ``world`` (updated
        after every move when the cell has a turntable).
    ``~/views`` (geometry_msgs/PoseArray, latched) the planned sensor poses.
    ``~/robot_description`` (std_msgs/String, latched) the cell URDF (for robot_state_publisher).
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cosarad_ros.action import GoToView
from cosarad_ros.core.geometry import check_mesh
from cosarad_ros.core.names import check_name
from cosarad_ros.ros import conversions as cv
from cosarad_ros.ros.node_utils import (
    LATCHED_QOS,
    RELIABLE_QOS,
    GuardedCallbacks,
    NodeDiagnostics,
    Param,
    at_least,
    declare_parameters,
    in_range,
    non_negative,
    positive,
    run_node,
)
from cosarad_ros.ros.trajectory_client import UR_CONTROLLER, duration_msg, trajectory_msg
from cosarad_ros.srv import MoveToView, PlanViews

PARAMS = (
    Param("ur_type", "ur10", "UR arm model (example-robot-data: ur3, ur5, ur10; ur_description: ur5e, ...)",
          read_only=True),
    Param("arm_source", "example_robot_data", "Where the arm description comes from",
          choices=("example_robot_data", "ur_description"), read_only=True),
    Param("sensor_type", "motioncam3d_s", "Sensor preset of urdf/sensors.yaml (body in the URDF, view model)",
          read_only=True),
    Param("turntable", False, "The fixture carries a turntable (extra joint turntable_joint)", read_only=True),
    Param("fixture_xyz", [0.45, 0.0, 0.12], "Fixture position x y on the table and its height [m]",
          check=lambda v: len(v) == 3 and v[2] > 0, check_text="must be 3 numbers, height > 0", read_only=True),
    Param("part_xyz", [0.0, 0.0, 0.0], "Part frame position on the fixture top [m]",
          check=lambda v: len(v) == 3, check_text="must be 3 numbers", read_only=True),
    Param("part_rpy", [0.0, 0.0, 0.0], "Part frame orientation on the fixture top, roll pitch yaw [rad]",
          check=lambda v: len(v) == 3, check_text="must be 3 numbers", read_only=True),
    Param("mount_xyz", [0.0, 0.0, 0.01], "Sensor mount position in tool0 [m]",
          check=lambda v: len(v) == 3, check_text="must be 3 numbers", read_only=True),
    Param("mount_rpy", [0.0, -1.5707963267948966, 0.0], "Sensor mount orientation in tool0, rpy [rad]",
          check=lambda v: len(v) == 3, check_text="must be 3 numbers", read_only=True),
    Param("target_coverage", 0.95, "Share of the reachable visible surface to cover (0-1]",
          check=in_range(0.0, 1.0, lo_open=True)),
    Param("n_samples", 3000, "Surface samples (coverage resolution)", check=at_least(100)),
    Param("n_candidates", 240, "Candidate views generated", check=at_least(4)),
    Param("solver", "ilp", "Set-cover solver (ilp: exact within 5 s, falls back to greedy)",
          choices=("ilp", "greedy", "random")),
    Param("max_views", 0, "Cap on the number of views (0: none)", check=non_negative),
    Param("seed", 0, "Random seed of sampling, candidates and IK seeds", check=non_negative),
    Param("mesh_scale", 1.0, "Scale applied to loaded meshes (0.001 for millimetre files)", check=positive),
    Param("cad_library", "", "CAD library folder to find part_type meshes (<folder>/<label>.stl|ply|obj)"),
    Param("executor", "auto", "How moves are executed: builtin (simulated arm), follow_joint_trajectory (a "
          "ros2_control controller of a real arm), moveit (moveit_py); auto: moveit when installed, else builtin",
          choices=("auto", "builtin", "follow_joint_trajectory", "moveit"), read_only=True),
    Param("controller_name", UR_CONTROLLER, "Joint trajectory controller that executes moves (its "
          "<name>/follow_joint_trajectory action; MoveIt's controller too); the UR driver's default",
          read_only=True),
    Param("joint_states", "auto", "publish: this node owns the robot model and publishes joint_states; subscribe: "
          "the driver's joint_state_broadcaster does and this node follows it; auto: publish with the builtin "
          "executor only", choices=("auto", "publish", "subscribe"), read_only=True),
    Param("velocity_scale", 0.5, "Share of the joint velocity limits used by the built-in executor",
          check=in_range(0.0, 1.0, lo_open=True)),
    Param("acceleration", 2.0, "Joint acceleration limit of the built-in executor [rad/s^2]", check=positive),
    Param("trajectory_dt", 0.05, "Sampling period of published trajectories [s]", check=positive),
    Param("playback_speed", 1.0, "Built-in executor playback speed (1: real time, 0: jump to the goal)",
          check=non_negative),
    Param("joint_state_rate", 20.0, "Joint state publishing rate [Hz]", check=positive),
    Param("cache_plans", True, "Reuse the plan of a part already planned (same mesh and target coverage); "
          "its view order was optimised from the arm configuration of the first request"),
    Param("coverage_dir", "", "Folder for coverage PNGs (empty: <tmp>/cosarad_planner; '-' disables)"),
    Param("world_frame", "world", "Frame of the published poses", read_only=True),
)


def _pose_stamped(T, frame_id: str, stamp) -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id = frame_id
    msg.header.stamp = stamp
    msg.pose = cv.matrix_to_pose(T)
    return msg


def _mesh_hash(mesh) -> str:
    """Identity of a mesh's geometry (vertices and faces)."""
    import hashlib

    h = hashlib.sha1(np.ascontiguousarray(mesh.vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(mesh.faces, dtype=np.int64).tobytes())
    return h.hexdigest()


def cell_config(params) -> dict:
    """The cell model's arguments (:class:`~cosarad_ros.core.planning.cell.CellConfig` fields, which
    are the xacro arguments of ``urdf/cosarad_cell.urdf.xacro``) from this node's parameters
    (a mapping or a namespace with ``ur_type``, ``arm_source``, ``sensor_type``, ``turntable``,
    ``fixture_xyz``, ``part_xyz``, ``part_rpy``, ``mount_xyz``, ``mount_rpy``). The node builds its
    cell from it and ``viewpoint_planner.launch.py`` runs xacro with it for
    robot_state_publisher, so RViz / TF and the planner show the same cell.
    """
    get = params.get if isinstance(params, dict) else (lambda k: getattr(params, k))
    fx, fy, fh = (float(v) for v in get("fixture_xyz"))
    return dict(ur_type=get("ur_type"), arm_source=get("arm_source"), sensor_type=get("sensor_type"),
                turntable=bool(get("turntable")), fixture_x=fx, fixture_y=fy, fixture_height=fh,
                part_xyz=[float(v) for v in get("part_xyz")], part_rpy=[float(v) for v in get("part_rpy")],
                mount_xyz=[float(v) for v in get("mount_xyz")], mount_rpy=[float(v) for v in get("mount_rpy")])


class MoveCancelled(RuntimeError):
    """A move was cancelled; ``q`` is where the arm stopped."""

    def __init__(self, q, message: str = "cancelled"):
        super().__init__(message)
        self.q = q


class ViewpointPlannerNode(GuardedCallbacks, Node):
    """The view planner node (see the module docstring)."""

    def __init__(self, **node_kwargs):
        super().__init__("viewpoint_planner_node", **node_kwargs)
        from cosarad_ros.core.planning import CellModel, SensorViewModel

        self.error_count = 0
        self.last_error = ""
        p = self.p = declare_parameters(self, PARAMS)
        self.cell = CellModel.default(cell_config(p))
        self.sensor = SensorViewModel.preset(p.sensor_type)
        self._lock = threading.RLock()          # plan / move / state
        self.q = self.cell.home.copy()           # current configuration
        self.plan = None
        self.mesh = None
        self.checker = self.cell.collision_checker()
        self.last_view = None                    # index of the view the arm is at
        self.last_png: Path | None = None
        self._moveit = None
        self._fjt = None
        self._motion = threading.Lock()          # one move at a time (service or action)
        self._plans: dict = {}                   # (mesh hash, target) -> (plan, collision checker)
        self.executor_kind = self._executor_kind()
        self.owns_joint_states = p.joint_states == "publish" or (p.joint_states == "auto"
                                                                 and self.executor_kind == "builtin")
        self.joint_state_time = None             # last joint state received (subscribe mode)

        self.js_pub = self.create_publisher(JointState, "joint_states", 10) if self.owns_joint_states else None
        if not self.owns_joint_states:
            self.create_subscription(JointState, "joint_states", self._on_joint_state, 10,
                                     callback_group=MutuallyExclusiveCallbackGroup())
        self.traj_pub = self.create_publisher(JointTrajectory, "~/joint_trajectory", RELIABLE_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, "~/sensor_pose", LATCHED_QOS)
        self.part_pub = self.create_publisher(PoseStamped, "~/part_pose", LATCHED_QOS)
        self.views_pub = self.create_publisher(PoseArray, "~/views", LATCHED_QOS)
        self.urdf_pub = self.create_publisher(String, "~/robot_description", LATCHED_QOS)
        stamp = self.get_clock().now().to_msg()
        self.part_pub.publish(_pose_stamped(self.cell.part_pose(), p.world_frame, stamp))
        self.urdf_pub.publish(String(data=self.cell.urdf))
        self.pose_pub.publish(_pose_stamped(self.cell.fk(self.q), p.world_frame, stamp))

        srv_group = MutuallyExclusiveCallbackGroup()
        self._client_group = ReentrantCallbackGroup()
        self.create_service(PlanViews, "~/plan_views", self._on_plan, callback_group=srv_group)
        self.create_service(MoveToView, "~/move_to_view", self._on_move, callback_group=srv_group)
        self.go_action = ActionServer(self, GoToView, "~/go_to_view", execute_callback=self._execute_go,
                                      goal_callback=self._on_go_goal, cancel_callback=lambda _g: CancelResponse.ACCEPT,
                                      callback_group=ReentrantCallbackGroup())
        if self.owns_joint_states:
            self.create_timer(1.0 / p.joint_state_rate, self._publish_joint_state,
                              callback_group=MutuallyExclusiveCallbackGroup())
        self.diagnostics = NodeDiagnostics(self, self._diagnostic_status, what="arm and plan")
        self.get_logger().info(
            f"viewpoint_planner_node ready: {p.ur_type} + {p.sensor_type}, part at "
            f"{np.round(self.cell.part_pose()[:3, 3], 3).tolist()} m in {p.world_frame}, executor "
            f"{self.executor_kind} ({p.controller_name if self.executor_kind != 'builtin' else 'simulated arm'}), "
            f"joint_states {'published' if self.owns_joint_states else 'subscribed'}; "
            "services ~/plan_views, ~/move_to_view; action ~/go_to_view")

    # ------------------------------------------------------------------------------------------
    def _executor_kind(self) -> str:
        from cosarad_ros.core.planning.moveit import moveit_available

        if self.p.executor == "auto":
            return "moveit" if moveit_available() else "builtin"
        return self.p.executor

    def _diagnostic_status(self):
        from diagnostic_msgs.msg import DiagnosticStatus

        values = {"executor": self.executor_kind, "controller": self.p.controller_name,
                  "joint_states": "published" if self.owns_joint_states else "subscribed",
                  "plan_views": len(self.plan.views) if self.plan is not None else 0,
                  "at_view": "" if self.last_view is None else self.last_view, "errors": self.error_count,
                  "last_error": self.last_error}
        if not self.owns_joint_states and self.joint_state_time is None:
            return DiagnosticStatus.WARN, "no joint_states received from the robot driver yet", values
        if self.error_count:
            return DiagnosticStatus.WARN, f"{self.error_count} failure(s); last: {self.last_error}", values
        return DiagnosticStatus.OK, "ready" if self.plan is None else f"plan of {len(self.plan.views)} views", values

    def _on_joint_state(self, msg: JointState) -> None:
        """Follow the robot driver's joint states (joints of the cell by name; others ignored)."""
        names = list(self.cell.joint_names)
        with self._lock:
            q = self.q.copy()
            for name, pos in zip(msg.name, msg.position):
                if name in names:
                    q[names.index(name)] = float(pos)
            self.q = q
        self.joint_state_time = time.monotonic()

    def _publish_joint_state(self):
        if self.js_pub is None:
            return
        with self._lock:
            q = self.q.copy()
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(self.cell.joint_names)
        msg.position = [float(v) for v in q]
        self.js_pub.publish(msg)

    # ------------------------------------------------------------------------------------------
    def _load_mesh(self, request):
        import trimesh

        if request.mesh_path:
            path = Path(os.path.expandvars(request.mesh_path)).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"mesh not found: {path}")
            try:
                from cosarad_ros.core.io import read_mesh

                mesh = read_mesh(path)
            except ImportError:
                mesh = trimesh.load(path, force="mesh")
            name = path.stem
        elif request.part_type:
            check_name(request.part_type, what="part type")
            if not self.p.cad_library:
                raise ValueError(f"part_type '{request.part_type}' given but parameter 'cad_library' is empty; "
                                 "set it or send mesh_path")
            from cosarad_ros.core.cad.library import CadLibrary

            lib = CadLibrary(os.path.expanduser(os.path.expandvars(self.p.cad_library)), strict=False)
            if request.part_type not in lib:
                raise ValueError(f"part_type '{request.part_type}' is not in the CAD library {self.p.cad_library} "
                                 f"(labels: {', '.join(lib.labels) or 'none'})")
            mesh = lib.get(request.part_type).mesh
            name = request.part_type
        else:
            raise ValueError("give mesh_path or part_type")
        if self.p.mesh_scale != 1.0:
            mesh = mesh.copy()
            mesh.apply_scale(self.p.mesh_scale)
        check_mesh(mesh, name=f"mesh {name!r}")  # a flat or degenerate mesh would crash the convex hull
        return mesh, name

    def _on_plan(self, request, response):
        from cosarad_ros.core.planning import plan_views
        from cosarad_ros.core.planning.executor import BuiltinExecutor

        t0 = time.perf_counter()
        mesh, name = self._load_mesh(request)
        target = float(request.target_coverage) or float(self.p.target_coverage)
        if not (0.0 < target <= 1.0):
            raise ValueError(f"target_coverage must be in (0, 1], got {target}")
        with self._lock:
            start = self.q.copy()
        key = (_mesh_hash(mesh), round(target, 6))
        cached = self._plans.get(key) if self.p.cache_plans else None
        if cached is None:
            plan = plan_views(mesh, cell=self.cell, sensor=self.sensor, target_coverage=target,
                              n_samples=self.p.n_samples, n_candidates=self.p.n_candidates,
                              solver=self.p.solver, max_views=self.p.max_views, start=start, seed=self.p.seed)
            checker = self.cell.collision_checker(mesh)
            if self.p.cache_plans:
                self._plans[key] = (plan, checker)
        else:
            plan, checker = cached
        with self._lock:
            self.plan, self.mesh, self.checker, self.last_view = plan, mesh, checker, None
            self._builtin = BuiltinExecutor(self.cell, checker, velocity_scale=self.p.velocity_scale,
                                            acceleration=self.p.acceleration, dt=self.p.trajectory_dt)
            if self._moveit is not None:
                try:
                    self._moveit.add_part(mesh)
                except Exception as exc:  # noqa: BLE001 - MoveIt scene errors must not kill planning
                    self.get_logger().warning(f"could not add the part to MoveIt's scene: {exc}")
        stamp = self.get_clock().now().to_msg()
        response.success = True
        response.coverage = float(plan.coverage)
        response.views = PoseArray()
        response.views.header.frame_id = self.p.world_frame
        response.views.header.stamp = stamp
        response.views.poses = [cv.matrix_to_pose(v.sensor_pose) for v in plan.views]
        response.coverage_per_view = [float(v.coverage_gain) for v in plan.views]
        response.joint_names = list(plan.joint_names)
        t_acc = 0.0
        prev = plan.start
        for v in plan.views:
            t_acc += float(np.max(np.abs(v.joints - prev) / (self.cell.velocity_limits * self.p.velocity_scale)))
            prev = v.joints
            response.joints.append(JointTrajectoryPoint(positions=[float(x) for x in v.joints],
                                                        time_from_start=duration_msg(t_acc)))
        response.planning_time = float(plan.planning_time)
        png = self._write_png(mesh, plan, name) if cached is None else None
        response.message = (f"{len(plan.views)} views cover {100 * plan.coverage:.1f} % of the reachable visible "
                            f"surface ({100 * plan.surface_coverage:.1f} % of all)"
                            + (f"; {plan.blocked_transitions} move(s) without a collision-free path"
                               if plan.blocked_transitions else "")
                            + (f"; coverage picture {png}" if png else "")
                            + ("; cached plan" if cached is not None else ""))
        self.views_pub.publish(response.views)
        self.get_logger().info(f"plan_views '{name}': {response.message} ({time.perf_counter() - t0:.1f} s)")
        return response

    def _write_png(self, mesh, plan, name: str) -> Path | None:
        if self.p.coverage_dir == "-":
            return None
        from cosarad_ros.core.planning.render import save_coverage_png

        folder = Path(self.p.coverage_dir or os.path.join(tempfile.gettempdir(), "cosarad_planner"))
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "part"
        try:
            self.last_png = save_coverage_png(mesh, plan, folder / f"coverage_{safe}.png", title=name)
        except Exception as exc:  # noqa: BLE001 - a picture must not fail the plan
            self.get_logger().warning(f"coverage picture not written: {exc}")
            return None
        return self.last_png

    # ------------------------------------------------------------------------------------------
    def _on_move(self, request, response):
        ok, message, pose = self.move_to_view(int(request.index))
        response.success, response.message = ok, message
        if pose is not None:
            response.sensor_pose = pose
        return response

    def _on_go_goal(self, _goal):
        return GoalResponse.REJECT if self._motion.locked() else GoalResponse.ACCEPT

    def _execute_go(self, goal_handle):
        def feedback(fraction, q):
            goal_handle.publish_feedback(GoToView.Feedback(
                progress=float(fraction), joint_names=list(self.cell.joint_names), positions=[float(x) for x in q]))

        cancel = threading.Event()
        watcher_done = threading.Event()

        def watch():   # the cancel request arrives on the action server's own service
            while not watcher_done.wait(0.02):
                if goal_handle.is_cancel_requested:
                    cancel.set()
                    return

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        try:
            ok, message, pose = self.move_to_view(int(goal_handle.request.index), feedback=feedback, cancel=cancel)
        finally:
            watcher_done.set()
            th.join()
        result = GoToView.Result(success=ok, message=message)
        if pose is not None:
            result.sensor_pose = pose
        if cancel.is_set() and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif ok:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def move_to_view(self, k: int, *, feedback=None, cancel: threading.Event | None = None):
        """Move to view ``k`` of the current plan with the configured executor.

        Args:
            feedback: optional ``callback(fraction, q)`` while moving.
            cancel: set it to stop the arm where it is.

        Returns:
            ``(success, message, PoseStamped of the sensor where the arm is, or None)``.
        """
        if not self._motion.acquire(blocking=False):
            return False, "the arm is already moving (one move at a time)", None
        try:
            with self._lock:
                plan = self.plan
                start = self.q.copy()
            if plan is None:
                return False, "no plan yet: call ~/plan_views first", None
            if k >= len(plan.views):
                return False, f"view index {k} out of range (the plan has {len(plan.views)} views)", None
            view = plan.views[k]
            kind = self.executor_kind
            try:
                if kind == "moveit":
                    q_reached = self._move_moveit(view.joints, feedback)
                elif kind == "follow_joint_trajectory":
                    q_reached = self._move_controller(start, view, feedback, cancel)
                else:
                    q_reached = self._move_builtin(start, view, feedback, cancel)
            except MoveCancelled as exc:
                pose = self._publish_reached(exc.q)
                with self._lock:
                    self.last_view = None
                return False, f"move to view {k} cancelled: {exc}", pose
            except Exception as exc:  # noqa: BLE001 - report every failure to the caller
                message = f"move to view {k} failed: {exc}"
                self.error_count += 1
                self.last_error = message
                self.get_logger().error(message)
                return False, message, None
            pose = self._publish_reached(q_reached)
            err = float(np.linalg.norm(self.cell.fk(q_reached)[:3, 3] - view.sensor_pose[:3, 3]))
            with self._lock:
                self.last_view = k
            if feedback is not None:
                feedback(1.0, q_reached)
            return True, f"at view {k} (position error {1000 * err:.2f} mm)", pose
        finally:
            self._motion.release()

    def _publish_reached(self, q) -> PoseStamped:
        stamp = self.get_clock().now().to_msg()
        pose = _pose_stamped(self.cell.fk(q), self.p.world_frame, stamp)
        self.pose_pub.publish(pose)
        if self.cell.turntable_index is not None:   # the turntable moved the part
            self.part_pub.publish(_pose_stamped(self.cell.part_pose(q[self.cell.turntable_index]),
                                                self.p.world_frame, stamp))
        return pose

    def _move_builtin(self, start, view, feedback=None, cancel=None) -> np.ndarray:
        # the planned path is reused when the arm is where it starts (the previous view)
        move = self._builtin.plan_move(start, view.joints, waypoints=view.path)
        traj = move.trajectory
        self.traj_pub.publish(trajectory_msg(traj, frame_id=self.p.world_frame,
                                             stamp=self.get_clock().now().to_msg()))
        speed = float(self.p.playback_speed)
        if speed > 0:
            period = 1.0 / float(self.p.joint_state_rate)
            t0 = time.monotonic()
            while True:
                t = (time.monotonic() - t0) * speed
                q = traj.sample(t)
                with self._lock:
                    self.q = q
                if cancel is not None and cancel.is_set():
                    self._publish_joint_state()
                    raise MoveCancelled(q, f"stopped at {100 * min(1.0, t / traj.duration):.0f} % of the trajectory")
                if feedback is not None:
                    feedback(min(1.0, t / traj.duration) if traj.duration > 0 else 1.0, q)
                if t >= traj.duration:
                    break
                time.sleep(period)
        with self._lock:
            self.q = traj.positions[-1].copy()
        self._publish_joint_state()
        return traj.positions[-1].copy()

    def _move_controller(self, start, view, feedback=None, cancel=None) -> np.ndarray:
        """The built-in planner's trajectory (arm joints) executed by the robot's controller."""
        from cosarad_ros.ros.trajectory_client import FollowJointTrajectoryClient

        if self.cell.turntable_index is not None and \
                abs(view.joints[self.cell.turntable_index] - start[self.cell.turntable_index]) > 1e-6:
            raise ValueError("this view turns the turntable, which has no trajectory controller here")
        if self._fjt is None:
            self._fjt = FollowJointTrajectoryClient(self, self.p.controller_name, callback_group=self._client_group)
        move = self._builtin.plan_move(start, view.joints, waypoints=view.path)
        msg = trajectory_msg(move.trajectory, self.cell.arm_joint_names, stamp=self.get_clock().now().to_msg())
        self.traj_pub.publish(msg)
        arm = list(self.cell.arm_indices)

        def fb(fraction, actual):
            if feedback is not None and len(actual) == len(arm):
                q = self.q.copy()
                q[arm] = actual
                feedback(fraction, q)

        try:
            self._fjt.execute(msg, feedback=fb, cancel=cancel)
        except Exception as exc:
            if cancel is not None and cancel.is_set():
                raise MoveCancelled(self.q.copy(), str(exc)) from exc
            raise
        with self._lock:   # the driver's joint_states tell where the arm is; the goal if none came
            if self.joint_state_time is None:
                self.q = np.asarray(view.joints, dtype=np.float64).copy()
            return self.q.copy()

    def _move_moveit(self, q_goal, feedback=None) -> np.ndarray:
        from cosarad_ros.core.planning.moveit import MoveItExecutor, moveit_config

        if self._moveit is None:
            self._moveit = MoveItExecutor(self.cell, node_name=f"{self.get_name()}_moveit_py", part_mesh=self.mesh,
                                          config=moveit_config(self.cell, controller=self.p.controller_name))
        q = self._moveit.move_to(q_goal)   # moveit_py executes blocking: no progress until done
        with self._lock:
            self.q = q.copy()
        return q


def main(args=None) -> int:
    return run_node(ViewpointPlannerNode, args)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
