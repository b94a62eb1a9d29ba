"""The whole inspection cell: scanner, cell description + view planner, registration, CAD
classifier, anomaly detector, inspection manager, and RViz.

    ros2 launch cosarad_ros inspection.launch.py cad_library:=/path/to/cad [scanner:=sim] [part:=mesh.stl]

Arguments (see each with `ros2 launch cosarad_ros inspection.launch.py --show-args`):
  scanner:=sim|genicam|topic|replay   sensor backend
  part:=<mesh>                        simulated part placed on the fixture (scanner:=sim)
  cad_library:=<folder>               CAD models (+ YAML metadata) of the part types
  use_moveit:=false|true              move the arm through MoveIt 2 (moveit_py) instead of the built-in executor
  rviz:=true|false                    start RViz with config/rviz/inspection.rviz
  method:=deviation|cosarad|fpfh|global-bank    anomaly detector
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _analysis_nodes(context):
    share = get_package_share_directory("cosarad_ros")
    cad = os.path.expanduser(LaunchConfiguration("cad_library").perform(context))
    method = LaunchConfiguration("method").perform(context)
    cfg = lambda name: os.path.join(share, "config", f"{name}.yaml")  # noqa: E731
    return [
        Node(package="cosarad_ros", executable="registration_node", name="registration_node", output="screen",
             parameters=[cfg("registration_node"), {"cad_library": cad}]),
        Node(package="cosarad_ros", executable="cad_classifier_node", name="cad_classifier_node", output="screen",
             parameters=[cfg("cad_classifier_node"), {"library_dir": cad}]),
        Node(package="cosarad_ros", executable="anomaly_node", name="anomaly_node", output="screen",
             parameters=[cfg("anomaly_node"), {"cad_library": cad, "method": method}]),
        Node(package="cosarad_ros", executable="inspection_manager", name="inspection_manager", output="screen",
             parameters=[cfg("inspection_manager")]),
    ]


def generate_launch_description():
    share = get_package_share_directory("cosarad_ros")
    launch_dir = os.path.join(share, "launch")
    include = lambda name, args: IncludeLaunchDescription(  # noqa: E731
        PythonLaunchDescriptionSource(os.path.join(launch_dir, name)),
        launch_arguments={k: LaunchConfiguration(v) for k, v in args.items()}.items())
    return LaunchDescription([
        DeclareLaunchArgument("scanner", default_value="sim", description="Sensor backend: sim | genicam | topic | replay"),
        DeclareLaunchArgument("part", default_value="", description="Simulated part mesh placed on the fixture (metres)"),
        DeclareLaunchArgument("cad_library", default_value="~/.ros/cosarad_cad_library",
                              description="CAD library folder: <label>.stl|ply|obj (+ <label>.yaml metadata)"),
        DeclareLaunchArgument("use_moveit", default_value="false",
                              description="Execute arm moves through MoveIt 2 (moveit_py must be installed)"),
        DeclareLaunchArgument("rviz", default_value="true", description="Start RViz with the inspection display"),
        DeclareLaunchArgument("method", default_value="deviation", description="Anomaly detector: deviation | cosarad | fpfh | global-bank"),
        include("scanner.launch.py", {"scanner": "scanner", "part": "part"}),
        include("viewpoint_planner.launch.py", {"use_moveit": "use_moveit", "cad_library": "cad_library"}),
        OpaqueFunction(function=_analysis_nodes),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
             arguments=["-d", os.path.join(share, "config", "rviz", "inspection.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
