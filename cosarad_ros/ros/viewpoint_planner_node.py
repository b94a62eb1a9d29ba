"""``viewpoint_planner_node``: plans sensor views of a part and moves the arm to them.

Services:
    ``~/plan_views`` (cosarad_ros/srv/PlanViews): plan views for ``mesh_path`` (metres, part
        frame) or ``part_type`` (a label of the CAD library ``cad_library``). Writes a coverage
        PNG (``coverage_dir``) and publishes the views.
    ``~/move_to_view`` (cosarad_ros/srv/MoveToView): move to planned view ``index`` through
        MoveIt 2 when ``executor`` is ``moveit`` (or ``auto`` with moveit_py installed), else with
        the built-in executor (collision-checked joint path, trapezoidal time parameterisation,
        played back as joint states). The response carries the sensor optical frame pose
        reached (forward kinematics of the reached joints), in ``world``.

Topics (published):
    ``joint_states`` (sensor_msgs/JointState) the cell's joints, at ``joint_state_rate``.
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
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cosarad_ros.core.geometry import check_mesh
from cosarad_ros.core.names import check_name
from cosarad_ros.ros import conversions as cv
from cosarad_ros.ros.node_utils import (LATCHED_QOS, RELIABLE_QOS, GuardedCallbacks, Param, declare_parameters,
                                        non_negative, positive, run_node)
from cosarad_ros.srv import MoveToView, PlanViews

PARAMS = (
    Param("ur_type", "ur5", "UR arm model (example-robot-data: ur3, ur5, ur10; ur_description: ur5e, ...)",
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
          check=lambda v: 0.0 < v <= 1.0, check_text="must be in (0, 1]"),
    Param("n_samples", 3000, "Surface samples (coverage resolution)", check=lambda v: v >= 100,
          check_text="must be >= 100"),
    Param("n_candidates", 240, "Candidate views generated", check=lambda v: v >= 4, check_text="must be >= 4"),
    Param("solver", "ilp", "Set-cover solver (ilp: exact within 5 s, falls back to greedy)",
          choices=("ilp", "greedy", "random")),
    Param("max_views", 0, "Cap on the number of views (0: none)", check=non_negative),
    Param("seed", 0, "Random seed of sampling, candidates and IK seeds", check=non_negative),
    Param("mesh_scale", 1.0, "Scale applied to loaded meshes (0.001 for millimetre files)", check=positive),
    Param("cad_library", "", "CAD library folder to find part_type meshes (<folder>/<label>.stl|ply|obj)"),
    Param("executor", "auto", "auto: MoveIt 2 when moveit_py is installed, else the built-in executor",
          choices=("auto", "builtin", "moveit")),
    Param("velocity_scale", 0.5, "Share of the joint velocity limits used by the built-in executor",
          check=lambda v: 0.0 < v <= 1.0, check_text="must be in (0, 1]"),
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


def _duration(seconds: float) -> Duration:
    t = cv.seconds_to_stamp(max(0.0, float(seconds)))
    return Duration(sec=t.sec, nanosec=t.nanosec)


class ViewpointPlannerNode(GuardedCallbacks, Node):
    """The view planner node (see the module docstring)."""

    def __init__(self, **node_kwargs):
        super().__init__("viewpoint_planner_node", **node_kwargs)
        from cosarad_ros.core.planning import CellModel, SensorViewModel

        self.error_count = 0
        p = self.p = declare_parameters(self, PARAMS)
        fx, fy, fh = p.fixture_xyz
        cfg = dict(ur_type=p.ur_type, arm_source=p.arm_source, sensor_type=p.sensor_type, turntable=p.turntable,
                   fixture_x=fx, fixture_y=fy, fixture_height=fh, part_xyz=p.part_xyz, part_rpy=p.part_rpy,
                   mount_xyz=p.mount_xyz, mount_rpy=p.mount_rpy)
        self.cell = CellModel.default(cfg)
        self.sensor = SensorViewModel.preset(p.sensor_type)
        self._lock = threading.RLock()          # plan / move / state
        self.q = self.cell.home.copy()           # current configuration
        self.plan = None
        self.mesh = None
        self.checker = self.cell.collision_checker()
        self.last_view = None                    # index of the view the arm is at
        self.last_png: Path | None = None
        self._moveit = None
        self._plans: dict = {}                   # (mesh hash, target) -> (plan, collision checker)

        self.js_pub = self.create_publisher(JointState, "joint_states", 10)
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
        self.create_service(PlanViews, "~/plan_views", self._on_plan, callback_group=srv_group)
        self.create_service(MoveToView, "~/move_to_view", self._on_move, callback_group=srv_group)
        self.create_timer(1.0 / p.joint_state_rate, self._publish_joint_state,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"viewpoint_planner_node ready: {p.ur_type} + {p.sensor_type}, part at "
            f"{np.round(self.cell.part_pose()[:3, 3], 3).tolist()} m in {p.world_frame}, executor "
            f"{self._executor_kind()}; services ~/plan_views, ~/move_to_view")

    # ------------------------------------------------------------------------------------------
    def _executor_kind(self) -> str:
        from cosarad_ros.core.planning.moveit import moveit_available

        if self.p.executor == "auto":
            return "moveit" if moveit_available() else "builtin"
        return self.p.executor

    def _publish_joint_state(self):
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
            path = Path(request.mesh_path).expanduser()
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

            lib = CadLibrary(self.p.cad_library, strict=False)
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
                                                        time_from_start=_duration(t_acc)))
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
        with self._lock:
            plan = self.plan
            start = self.q.copy()
        if plan is None:
            response.success = False
            response.message = "no plan yet: call ~/plan_views first"
            return response
        k = int(request.index)
        if k >= len(plan.views):
            response.success = False
            response.message = f"view index {k} out of range (the plan has {len(plan.views)} views)"
            return response
        view = plan.views[k]
        try:
            if self._executor_kind() == "moveit":
                q_reached = self._move_moveit(view.joints)
            else:
                q_reached = self._move_builtin(start, view)
        except Exception as exc:  # noqa: BLE001 - report every failure to the caller
            response.success = False
            response.message = f"move to view {k} failed: {exc}"
            self.get_logger().error(response.message)
            return response
        T = self.cell.fk(q_reached)
        stamp = self.get_clock().now().to_msg()
        response.sensor_pose = _pose_stamped(T, self.p.world_frame, stamp)
        response.success = True
        err = float(np.linalg.norm(T[:3, 3] - view.sensor_pose[:3, 3]))
        response.message = f"at view {k} (position error {1000 * err:.2f} mm)"
        with self._lock:
            self.last_view = k
        self.pose_pub.publish(response.sensor_pose)
        if self.cell.turntable_index is not None:   # the turntable moved the part
            self.part_pub.publish(_pose_stamped(self.cell.part_pose(q_reached[self.cell.turntable_index]),
                                                self.p.world_frame, stamp))
        return response

    def _move_builtin(self, start, view) -> np.ndarray:
        # the planned path is reused when the arm is where it starts (the previous view)
        move = self._builtin.plan_move(start, view.joints, waypoints=view.path)
        traj = move.trajectory
        msg = JointTrajectory()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.p.world_frame
        msg.joint_names = list(traj.joint_names)
        msg.points = [JointTrajectoryPoint(positions=[float(x) for x in traj.positions[i]],
                                           velocities=[float(x) for x in traj.velocities[i]],
                                           accelerations=[float(x) for x in traj.accelerations[i]],
                                           time_from_start=_duration(traj.times[i]))
                      for i in range(len(traj.times))]
        self.traj_pub.publish(msg)
        speed = float(self.p.playback_speed)
        if speed > 0:
            period = 1.0 / float(self.p.joint_state_rate)
            t0 = time.monotonic()
            while True:
                t = (time.monotonic() - t0) * speed
                with self._lock:
                    self.q = traj.sample(t)
                if t >= traj.duration:
                    break
                time.sleep(period)
        with self._lock:
            self.q = traj.positions[-1].copy()
        self._publish_joint_state()
        return traj.positions[-1].copy()

    def _move_moveit(self, q_goal) -> np.ndarray:
        from cosarad_ros.core.planning.moveit import MoveItExecutor

        if self._moveit is None:
            self._moveit = MoveItExecutor(self.cell, node_name=f"{self.get_name()}_moveit_py", part_mesh=self.mesh)
        q = self._moveit.move_to(q_goal)
        with self._lock:
            self.q = q.copy()
        return q


def main(args=None) -> int:
    return run_node(ViewpointPlannerNode, args)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
