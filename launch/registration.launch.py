"""Launch `registration_node` with its parameters from config/registration_node.yaml.

Arguments (`ros2 launch cosarad_ros registration.launch.py --show-args`): params_file, namespace,
node_name, use_sim_time, log_level. The YAML's `registration_node` section applies whatever node_name is given.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from cosarad_ros.ros.launch_params import launch_parameters


def _node(context):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    params = launch_parameters("registration_node", get("params_file"), use_sim_time=get("use_sim_time"))
    return [Node(package="cosarad_ros", executable="registration_node", name=get("node_name"),
                 namespace=get("namespace"), output="screen", parameters=[params],
                 arguments=["--ros-args", "--log-level", get("log_level")])]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("cosarad_ros"), "config", "registration_node.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the parameters of registration_node"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("node_name", default_value="registration_node", description="Name of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use the /clock topic (simulation, bag replay) instead of the system clock"),
        DeclareLaunchArgument("log_level", default_value="info", description="Logging level of the node"),
        OpaqueFunction(function=_node),
    ])
