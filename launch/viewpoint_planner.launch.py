"""Launch the cell description (robot_state_publisher with the xacro) and `viewpoint_planner_node`.

Arguments:
  use_moveit:=false|true     plan and execute through MoveIt 2 (moveit_py) instead of the built-in executor
  sensor_type:=motioncam3d_s preset of urdf/sensors.yaml mounted on the arm
  turntable:=false|true      the fixture carries a turntable
  arm_source:=example_robot_data|ur_description   where the UR arm description comes from
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _nodes(context):
    import xacro

    share = get_package_share_directory("cosarad_ros")
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    mappings = {"sensor_type": get("sensor_type"), "turntable": get("turntable"), "arm_source": get("arm_source")}
    urdf = xacro.process_file(os.path.join(share, "urdf", "cosarad_cell.urdf.xacro"), mappings=mappings).toxml()
    use_moveit = get("use_moveit").lower() in ("1", "true", "yes")
    overrides = {"executor": "moveit" if use_moveit else "builtin", "sensor_type": get("sensor_type"),
                 "turntable": get("turntable").lower() in ("1", "true", "yes"), "arm_source": get("arm_source")}
    if get("cad_library"):
        overrides["cad_library"] = get("cad_library")
    return [
        Node(package="robot_state_publisher", executable="robot_state_publisher", name="robot_state_publisher",
             output="screen", parameters=[{"robot_description": urdf}]),
        Node(package="cosarad_ros", executable="viewpoint_planner_node", name="viewpoint_planner_node",
             output="screen", parameters=[LaunchConfiguration("params_file"), overrides]),
    ]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("cosarad_ros"), "config", "viewpoint_planner_node.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the parameters of viewpoint_planner_node"),
        DeclareLaunchArgument("use_moveit", default_value="false",
                              description="Execute moves through MoveIt 2 (moveit_py must be installed)"),
        DeclareLaunchArgument("sensor_type", default_value="motioncam3d_s", description="Sensor preset of urdf/sensors.yaml"),
        DeclareLaunchArgument("turntable", default_value="false", description="The fixture carries a turntable"),
        DeclareLaunchArgument("arm_source", default_value="example_robot_data",
                              description="UR description source: example_robot_data (PyPI) or ur_description (apt)"),
        DeclareLaunchArgument("cad_library", default_value="", description="CAD library folder (plan by part type)"),
        OpaqueFunction(function=_nodes),
    ])
