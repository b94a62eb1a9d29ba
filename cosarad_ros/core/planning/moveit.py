"""Execution through MoveIt 2 (``moveit_py``), when it is installed.

MoveIt needs the URDF, an SRDF (planning group, disabled collision pairs), the kinematics solver
and the planning pipelines as node parameters. :func:`moveit_config` builds that dictionary from
the :class:`~cosarad_ros.core.planning.cell.CellModel` the same way ``MoveItConfigsBuilder(...)
.to_dict()`` would from a MoveIt config package, and :class:`MoveItExecutor` hands it to
``MoveItPy(node_name=..., config_dict=...)``, then plans with the planning component of the arm
group and executes the trajectory, as in the MoveIt 2 "Motion Planning Python API" tutorial.

``moveit_py`` is imported only inside :class:`MoveItExecutor`; everything else here (SRDF,
configuration) is plain Python and works without MoveIt.
"""
from __future__ import annotations

import importlib.util
import itertools
import xml.etree.ElementTree as ET

import numpy as np

__all__ = ["moveit_available", "cell_srdf", "moveit_config", "MoveItExecutor", "MoveItUnavailableError",
           "DEFAULT_GROUP"]

DEFAULT_GROUP = "arm"


class MoveItUnavailableError(RuntimeError):
    """``moveit_py`` is not installed (it ships with a MoveIt 2 install, not with PyPI)."""


def moveit_available() -> bool:
    """True when ``moveit.planning.MoveItPy`` can be imported."""
    try:
        return importlib.util.find_spec("moveit") is not None and \
            importlib.util.find_spec("moveit.planning") is not None
    except (ImportError, ValueError):
        return False


def _chain_ends(cell) -> tuple[str, str]:
    """Base and tip links of the arm chain (the sensor optical frame is the tip)."""
    info = cell.info
    first = cell.arm_joint_names[0]
    return info.joints[first][1], cell.sensor_frame


def cell_srdf(cell, checker=None, *, group: str = DEFAULT_GROUP) -> str:
    """SRDF of the cell: the arm group (chain to the sensor optical frame), a ``home`` state and
    the collision pairs MoveIt need not check (adjacent links, pairs touching at home, pairs of
    static bodies), the same rules :class:`~.collision.CollisionChecker` uses.

    Args:
        cell: the cell model.
        checker: its collision checker (default: one without a part).
        group: planning group name.
    """
    checker = checker if checker is not None else cell.collision_checker()
    base, tip = _chain_ends(cell)
    root = ET.Element("robot", name="cosarad_cell")
    g = ET.SubElement(root, "group", name=group)
    ET.SubElement(g, "chain", base_link=base, tip_link=tip)
    st = ET.SubElement(root, "group_state", name="home", group=group)
    for n in cell.arm_joint_names:
        ET.SubElement(st, "joint", name=n, value=f"{float(cell.home[cell.joint_index(n)]):.6f}")
    pairs: dict[frozenset, str] = {}
    for pair in sorted(cell.adjacent_links(), key=sorted):
        pairs[pair] = "Adjacent"
    for a, b in checker.disabled_pairs:
        pairs.setdefault(frozenset((a, b)), "Default")
    # bodies that never move relative to each other
    model = cell.model
    arm_joints = {model.getJointId(n) for n in cell.arm_joint_names}
    static = sorted({cell.link_of(gobj) for gobj in cell.geometry_model().geometryObjects
                     if not cell._on_arm(gobj.parentJoint, arm_joints)})
    for a, b in itertools.combinations(static, 2):
        pairs.setdefault(frozenset((a, b)), "Never")
    for pair, reason in sorted(pairs.items(), key=lambda kv: sorted(kv[0])):
        if len(pair) != 2:
            continue
        a, b = sorted(pair)
        ET.SubElement(root, "disable_collisions", link1=a, link2=b, reason=reason)
    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def moveit_config(cell, *, srdf: str | None = None, group: str = DEFAULT_GROUP,
                  planner_id: str = "RRTConnectkConfigDefault",
                  planning_time: float = 5.0, velocity_scaling: float = 0.5, acceleration_scaling: float = 0.5,
                  joint_state_topic: str = "/joint_states",
                  controller: str = "scaled_joint_trajectory_controller") -> dict:
    """Node parameters for ``MoveItPy(config_dict=...)``.

    Args:
        cell: the cell model (URDF, joints, limits).
        srdf: SRDF text (default :func:`cell_srdf`).
        group: planning group.
        planner_id: OMPL planner configuration.
        planning_time: seconds per planning request.
        velocity_scaling, acceleration_scaling: shares of the joint limits (0-1].
        joint_state_topic: where the robot's joint states are published.
        controller: FollowJointTrajectory controller name (moveit_simple_controller_manager); the
            default is the Universal Robots driver's.
    """
    for name, v in (("velocity_scaling", velocity_scaling), ("acceleration_scaling", acceleration_scaling)):
        if not (0.0 < v <= 1.0):
            raise ValueError(f"{name} must be in (0, 1], got {v}")
    srdf = cell_srdf(cell, group=group) if srdf is None else srdf
    limits = {}
    for n in cell.arm_joint_names:
        k = cell.joint_index(n)
        limits[n] = {"has_velocity_limits": True, "max_velocity": float(cell.velocity_limits[k]),
                     "has_acceleration_limits": True, "max_acceleration": 2.0}
    return {
        "robot_description": cell.urdf,
        "robot_description_semantic": srdf,
        "robot_description_kinematics": {group: {
            "kinematics_solver": "kdl_kinematics_plugin/KDLKinematicsPlugin",
            "kinematics_solver_search_resolution": 0.005,
            "kinematics_solver_timeout": 0.05,
        }},
        "robot_description_planning": {"joint_limits": limits},
        "planning_scene_monitor_options": {
            "name": "planning_scene_monitor",
            "robot_description": "robot_description",
            "joint_state_topic": joint_state_topic,
            "attached_collision_object_topic": "/moveit_cpp/planning_scene_monitor",
            "publish_planning_scene_topic": "/moveit_cpp/publish_planning_scene",
            "monitored_planning_scene_topic": "/moveit_cpp/monitored_planning_scene",
            "wait_for_initial_state_timeout": 10.0,
        },
        "planning_pipelines": {"pipeline_names": ["ompl"]},
        "ompl": {
            "planning_plugins": ["ompl_interface/OMPLPlanner"],
            "request_adapters": ["default_planning_request_adapters/ResolveConstraintFrames",
                                 "default_planning_request_adapters/ValidateWorkspaceBounds",
                                 "default_planning_request_adapters/CheckStartStateBounds",
                                 "default_planning_request_adapters/CheckStartStateCollision"],
            "response_adapters": ["default_planning_response_adapters/AddTimeOptimalParameterization",
                                  "default_planning_response_adapters/ValidateSolution",
                                  "default_planning_response_adapters/DisplayMotionPath"],
            group: {"default_planner_config": planner_id},
        },
        "plan_request_params": {
            "planning_attempts": 1,
            "planning_pipeline": "ompl",
            "planner_id": planner_id,
            "planning_time": float(planning_time),
            "max_velocity_scaling_factor": float(velocity_scaling),
            "max_acceleration_scaling_factor": float(acceleration_scaling),
        },
        "moveit_controller_manager": "moveit_simple_controller_manager/MoveItSimpleControllerManager",
        "moveit_simple_controller_manager": {
            "controller_names": [controller],
            controller: {"type": "FollowJointTrajectory", "action_ns": "follow_joint_trajectory",
                         "default": True, "joints": list(cell.arm_joint_names)},
        },
        "trajectory_execution": {"allowed_execution_duration_scaling": 1.5,
                                 "allowed_goal_duration_margin": 0.5,
                                 "allowed_start_tolerance": 0.01},
    }


class MoveItExecutor:
    """Plan and execute joint goals through MoveIt 2's ``MoveItPy``.

    Args:
        cell: the cell model.
        node_name: name of the MoveItPy node.
        config: node parameters (default :func:`moveit_config` of the cell).
        group: planning group.
        part_mesh: optional trimesh of the part, added to the planning scene at the part pose.

    Raises:
        MoveItUnavailableError: ``moveit_py`` is not installed.
    """

    def __init__(self, cell, *, node_name: str = "cosarad_moveit_py", config: dict | None = None,
                 group: str = DEFAULT_GROUP, part_mesh=None):
        if not moveit_available():
            raise MoveItUnavailableError(
                "moveit_py is not installed (it comes with a MoveIt 2 install, e.g. ros-jazzy-moveit-py); "
                "use the built-in executor")
        from moveit.planning import MoveItPy

        self.cell = cell
        self.group = group
        self.config = moveit_config(cell, group=group) if config is None else config
        self.moveit = MoveItPy(node_name=node_name, config_dict=self.config)
        self.component = self.moveit.get_planning_component(group)
        if part_mesh is not None:
            self.add_part(part_mesh)

    def add_part(self, mesh, pose=None, object_id: str = "part") -> None:
        """Add the part mesh to MoveIt's planning scene (frame ``world``)."""
        from geometry_msgs.msg import Point, Pose
        from moveit_msgs.msg import CollisionObject
        from shape_msgs.msg import Mesh, MeshTriangle

        from cosarad_ros.core.geometry import matrix_to_pose

        T = self.cell.part_pose() if pose is None else np.asarray(pose)
        p, q = matrix_to_pose(T)
        msg = CollisionObject()
        msg.header.frame_id = self.cell.base_frame
        msg.id = object_id
        shape = Mesh()
        shape.vertices = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in np.asarray(mesh.vertices)]
        shape.triangles = [MeshTriangle(vertex_indices=[int(a), int(b), int(c)]) for a, b, c in np.asarray(mesh.faces)]
        msg.meshes = [shape]
        mp = Pose()
        mp.position.x, mp.position.y, mp.position.z = (float(v) for v in p)
        mp.orientation.x, mp.orientation.y, mp.orientation.z, mp.orientation.w = (float(v) for v in q)
        msg.mesh_poses = [mp]
        msg.operation = CollisionObject.ADD
        with self.moveit.get_planning_scene_monitor().read_write() as scene:
            scene.apply_collision_object(msg)
            scene.current_state.update()

    def current_q(self) -> np.ndarray:
        """Current configuration of all cell joints (arm from MoveIt, others at home)."""
        q = self.cell.home.copy()
        with self.moveit.get_planning_scene_monitor().read_only() as scene:
            arm = np.asarray(scene.current_state.get_joint_group_positions(self.group), dtype=np.float64)
        q[self.cell.arm_indices] = arm
        return q

    def move_to(self, q_goal) -> np.ndarray:
        """Plan from the current state to ``q_goal`` (all cell joints; the arm part is used) and
        execute; returns the configuration reached.

        Raises:
            RuntimeError: MoveIt found no plan.
        """
        from moveit.core.robot_state import RobotState

        q_goal = self.cell.check_q(q_goal, name="goal")
        goal = RobotState(self.moveit.get_robot_model())
        goal.set_joint_group_positions(self.group, q_goal[self.cell.arm_indices])
        goal.update()
        self.component.set_start_state_to_current_state()
        self.component.set_goal_state(robot_state=goal)
        result = self.component.plan()
        if not result:
            raise RuntimeError("MoveIt found no plan to the view")
        try:
            self.moveit.execute(result.trajectory, controllers=[])
        except TypeError:  # newer MoveItPy: execute(group, trajectory, blocking, controllers)
            self.moveit.execute(self.group, result.trajectory, True, [])
        return self.current_q()
