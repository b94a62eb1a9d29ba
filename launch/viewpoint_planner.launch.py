"""Launch the cell description (robot_state_publisher with the cell xacro) and `viewpoint_planner_node`.

xacro gets every cell argument from the planner's own parameters (params_file and the overrides
below: ur_type, fixture, part and mount poses, sensor, turntable, arm source), so TF / RViz and the
planner show the same cell.

Arguments:
  use_moveit:=false|true     plan and execute through MoveIt 2 (moveit_py) instead of the built-in executor
  executor:=builtin|follow_joint_trajectory|moveit   overrides use_moveit (follow_joint_trajectory: a real arm)
  controller_name:=<name>    trajectory controller (default: the UR driver's scaled_joint_trajectory_controller)
  sensor_type:=motioncam3d_s preset of urdf/sensors.yaml mounted on the arm
  turntable:=false|true      the fixture carries a turntable
  arm_source:=example_robot_data|ur_description   where the UR arm description comes from
  cad_library:=<folder>      CAD library for planning by part type (~ expanded)
  namespace:=, use_sim_time:=false, params_file:=
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from cosarad_ros.ros.launch_params import as_bool, launch_parameters, planner_launch

PLANNER_ARGS = ("params_file", "use_moveit", "executor", "controller_name", "sensor_type", "turntable", "arm_source",
                "cad_library")


def _nodes(context):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    urdf, overrides = planner_launch({name: get(name) for name in PLANNER_ARGS})
    sim_time = get("use_sim_time")
    return [
        Node(package="robot_state_publisher", executable="robot_state_publisher", name="robot_state_publisher",
             namespace=get("namespace"), output="screen",
             parameters=[{"robot_description": urdf, "use_sim_time": as_bool(sim_time)}]),
        Node(package="cosarad_ros", executable="viewpoint_planner_node", name="viewpoint_planner_node",
             namespace=get("namespace"), output="screen",
             parameters=[launch_parameters("viewpoint_planner_node", get("params_file"), overrides,
                                           use_sim_time=sim_time)]),
    ]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("cosarad_ros"), "config", "viewpoint_planner_node.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the parameters of viewpoint_planner_node"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the nodes"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use the /clock topic (simulation, bag replay) instead of the system clock"),
        DeclareLaunchArgument("use_moveit", default_value="false",
                              description="Execute moves through MoveIt 2 (moveit_py must be installed)"),
        DeclareLaunchArgument("executor", default_value="",
                              description="builtin | follow_joint_trajectory | moveit (empty: from use_moveit)"),
        DeclareLaunchArgument("controller_name", default_value="",
                              description="Joint trajectory controller (empty: the params file's, "
                                          "scaled_joint_trajectory_controller)"),
        DeclareLaunchArgument("sensor_type", default_value="", description="Sensor preset of urdf/sensors.yaml "
                              "(empty: the params file's)"),
        DeclareLaunchArgument("turntable", default_value="", description="The fixture carries a turntable "
                              "(true | false; empty: the params file's)"),
        DeclareLaunchArgument("arm_source", default_value="",
                              description="UR description source: example_robot_data (PyPI) or ur_description (apt); "
                                          "empty: the params file's"),
        DeclareLaunchArgument("cad_library", default_value="", description="CAD library folder (plan by part type)"),
        OpaqueFunction(function=_nodes),
    ])
