"""The whole inspection cell: scanner (lifecycle, configured and activated by launch), cell
description + view planner, registration, CAD classifier, anomaly detector, inspection manager,
and RViz.

    ros2 launch cosarad_ros inspection.launch.py cad_library:=/path/to/cad [scanner:=sim] [part:=mesh.stl]

Arguments (see each with `ros2 launch cosarad_ros inspection.launch.py --show-args`):
  scanner:=sim|genicam|topic|replay   sensor backend
  part:=<mesh>                        simulated part placed on the fixture (scanner:=sim)
  cad_library:=<folder>               CAD models (+ YAML metadata) of the part types (~ expanded for every node)
  use_moveit:=false|true              move the arm through MoveIt 2 (moveit_py) instead of the built-in executor
  executor:=builtin|follow_joint_trajectory|moveit   overrides use_moveit (follow_joint_trajectory: a real arm)
  turntable:=false|true               the fixture carries a turntable
  rviz:=true|false                    start RViz with config/rviz/inspection.rviz
  method:=deviation|cosarad|fpfh|global-bank    anomaly detector
  namespace:=<ns>                     namespace of every node (several cells on one ROS graph)
  scanner_name:=scanner_node          node name of the scanner (the manager calls its scan service)
  use_sim_time:=false|true            every node uses /clock (simulation, bag replay)
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from cosarad_ros.ros.launch_params import expand_path, launch_parameters


def _analysis_nodes(context):
    share = get_package_share_directory("cosarad_ros")
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    cad = expand_path(get("cad_library"))
    ns, sim_time = get("namespace"), get("use_sim_time")
    cfg = lambda name: os.path.join(share, "config", f"{name}.yaml")  # noqa: E731
    nodes = (("registration_node", {"cad_library": cad}),
             ("cad_classifier_node", {"library_dir": cad}),
             ("anomaly_node", {"cad_library": cad, "method": get("method")}),
             ("inspection_manager", {"scanner_ns": get("scanner_name")}))
    return [Node(package="cosarad_ros", executable=name, name=name, namespace=ns, output="screen",
                 parameters=[launch_parameters(name, cfg(name), overrides, use_sim_time=sim_time)])
            for name, overrides in nodes]


def generate_launch_description():
    share = get_package_share_directory("cosarad_ros")
    launch_dir = os.path.join(share, "launch")
    include = lambda name, args: IncludeLaunchDescription(  # noqa: E731
        PythonLaunchDescriptionSource(os.path.join(launch_dir, name)),
        launch_arguments={k: LaunchConfiguration(v) for k, v in args.items()}.items())
    common = {"namespace": "namespace", "use_sim_time": "use_sim_time"}
    return LaunchDescription([
        DeclareLaunchArgument("scanner", default_value="sim",
                              description="Sensor backend: sim | genicam | topic | replay"),
        DeclareLaunchArgument("part", default_value="",
                              description="Simulated part mesh placed on the fixture (metres)"),
        DeclareLaunchArgument("cad_library", default_value="~/.ros/cosarad_cad_library",
                              description="CAD library folder: <label>.stl|ply|obj (+ <label>.yaml metadata)"),
        DeclareLaunchArgument("use_moveit", default_value="false",
                              description="Execute arm moves through MoveIt 2 (moveit_py must be installed)"),
        DeclareLaunchArgument("executor", default_value="",
                              description="builtin | follow_joint_trajectory | moveit (empty: from use_moveit)"),
        DeclareLaunchArgument("turntable", default_value="", description="The fixture carries a turntable "
                              "(true | false; empty: config/viewpoint_planner_node.yaml's)"),
        DeclareLaunchArgument("rviz", default_value="true", description="Start RViz with the inspection display"),
        DeclareLaunchArgument("method", default_value="deviation",
                              description="Anomaly detector: deviation | cosarad | fpfh | global-bank"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of every node of the cell"),
        DeclareLaunchArgument("scanner_name", default_value="scanner_node", description="Node name of the scanner"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use the /clock topic (simulation, bag replay) instead of the system clock"),
        include("scanner.launch.py", {"scanner": "scanner", "part": "part", "node_name": "scanner_name", **common}),
        include("viewpoint_planner.launch.py", {"use_moveit": "use_moveit", "executor": "executor",
                                                "turntable": "turntable", "cad_library": "cad_library", **common}),
        OpaqueFunction(function=_analysis_nodes),
        Node(package="rviz2", executable="rviz2", name="rviz2", namespace=LaunchConfiguration("namespace"),
             output="log",
             arguments=["-d", os.path.join(share, "config", "rviz", "inspection.rviz")],
             parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
