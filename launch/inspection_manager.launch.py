"""Launch `inspection_manager` with its parameters from config/inspection_manager.yaml (override with params_file:=)."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("cosarad_ros"), "config", "inspection_manager.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the parameters of inspection_manager"),
        DeclareLaunchArgument("log_level", default_value="info", description="Logging level of the node"),
        Node(package="cosarad_ros", executable="inspection_manager", name="inspection_manager", output="screen",
             parameters=[LaunchConfiguration("params_file")],
             arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")]),
    ])
