"""Launch `scanner_node` (lifecycle; autostart configures and activates it).

Arguments:
  scanner:=sim|genicam|topic|replay   which backend (sim uses sim_sensor)
  sim_sensor:=motioncam|ruler         simulated device for scanner:=sim
  part:=<mesh file>                   simulated part (scanner:=sim), metres
  replay_path:=<file|folder|.mcap>    recording for scanner:=replay
  cti_path:=<.cti>                    GenTL producer for scanner:=genicam
  input_topic:=<topic>                PointCloud2 to relay for scanner:=topic (e.g. a Gazebo camera)
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

BACKENDS = {"sim": None, "genicam": "genicam", "topic": "topic", "replay": "replay"}


def _node(context):
    scanner = LaunchConfiguration("scanner").perform(context)
    if scanner not in BACKENDS:
        raise RuntimeError(f"scanner:={scanner} is not one of {', '.join(BACKENDS)}")
    sensor_type = BACKENDS[scanner] or LaunchConfiguration("sim_sensor").perform(context)
    overrides = {"sensor_type": sensor_type}
    part = LaunchConfiguration("part").perform(context)
    if part:
        overrides["sim.part_mesh"] = part
    for arg, param in (("replay_path", "replay.path"), ("cti_path", "genicam.cti_path"),
                       ("input_topic", "topic.input")):
        value = LaunchConfiguration(arg).perform(context)
        if value:
            overrides[param] = value
    return [Node(package="cosarad_ros", executable="scanner_node", name="scanner_node", output="screen",
                 parameters=[LaunchConfiguration("params_file"), overrides])]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("cosarad_ros"), "config", "scanner_node.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the parameters of scanner_node"),
        DeclareLaunchArgument("scanner", default_value="sim", description="Backend: sim | genicam | topic | replay"),
        DeclareLaunchArgument("sim_sensor", default_value="motioncam",
                              description="Simulated device: motioncam (structured light) | ruler (laser line)"),
        DeclareLaunchArgument("part", default_value="", description="Simulated part mesh file (metres)"),
        DeclareLaunchArgument("replay_path", default_value="", description="Recording to replay (scanner:=replay)"),
        DeclareLaunchArgument("cti_path", default_value="", description="GenTL producer .cti (scanner:=genicam)"),
        DeclareLaunchArgument("input_topic", default_value="", description="PointCloud2 topic to relay (scanner:=topic)"),
        OpaqueFunction(function=_node),
    ])
