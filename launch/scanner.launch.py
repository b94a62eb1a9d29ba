"""Launch `scanner_node` as a managed (lifecycle) node; with autostart:=true (default) launch
configures it and, once it is inactive, activates it.

Arguments:
  scanner:=sim|genicam|topic|replay   which backend (sim uses sim_sensor)
  sim_sensor:=motioncam|ruler         simulated device for scanner:=sim
  part:=<mesh file>                   simulated part (scanner:=sim), metres
  replay_path:=<file|folder|.mcap>    recording for scanner:=replay
  cti_path:=<.cti>                    GenTL producer for scanner:=genicam
  input_topic:=<topic>                PointCloud2 to relay for scanner:=topic (e.g. a Gazebo camera)
  autostart:=true|false               configure and activate at launch (false: use ros2 lifecycle set)
  continuous:=false|true              publish clouds continuously while active
  namespace:=, node_name:=scanner_node, use_sim_time:=false, params_file:=, log_level:=info
Several cameras: one include per camera with its own node_name (and params_file).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from cosarad_ros.ros.launch_params import as_bool, expand_path, launch_parameters

BACKENDS = {"sim": None, "genicam": "genicam", "topic": "topic", "replay": "replay"}


def _node(context):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    scanner = get("scanner")
    if scanner not in BACKENDS:
        raise RuntimeError(f"scanner:={scanner} is not one of {', '.join(BACKENDS)}")
    # the lifecycle is driven from here, never by the node itself
    overrides = {"sensor_type": BACKENDS[scanner] or get("sim_sensor"), "autostart": False,
                 "continuous": as_bool(get("continuous"))}
    for arg, param in (("part", "sim.part_mesh"), ("replay_path", "replay.path"), ("cti_path", "genicam.cti_path"),
                       ("input_topic", "topic.input")):
        value = get(arg)
        if value:
            overrides[param] = expand_path(value) if arg != "input_topic" else value
    params = launch_parameters("scanner_node", get("params_file"), overrides, use_sim_time=get("use_sim_time"))
    node = LifecycleNode(package="cosarad_ros", executable="scanner_node", name=get("node_name"),
                         namespace=get("namespace"), output="screen", parameters=[params],
                         arguments=["--ros-args", "--log-level", get("log_level")])
    if not as_bool(get("autostart")):
        return [node]
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    return [activate, node, configure]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("cosarad_ros"), "config", "scanner_node.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the parameters of scanner_node"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("node_name", default_value="scanner_node",
                              description="Name of the node (one per camera when several are launched)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use the /clock topic (simulation, bag replay) instead of the system clock"),
        DeclareLaunchArgument("log_level", default_value="info", description="Logging level of the node"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="Configure and activate the lifecycle node at launch"),
        DeclareLaunchArgument("continuous", default_value="false",
                              description="Publish clouds continuously while active"),
        DeclareLaunchArgument("scanner", default_value="sim", description="Backend: sim | genicam | topic | replay"),
        DeclareLaunchArgument("sim_sensor", default_value="motioncam",
                              description="Simulated device: motioncam (structured light) | ruler (laser line)"),
        DeclareLaunchArgument("part", default_value="", description="Simulated part mesh file (metres)"),
        DeclareLaunchArgument("replay_path", default_value="", description="Recording to replay (scanner:=replay)"),
        DeclareLaunchArgument("cti_path", default_value="", description="GenTL producer .cti (scanner:=genicam)"),
        DeclareLaunchArgument("input_topic", default_value="",
                              description="PointCloud2 topic to relay (scanner:=topic)"),
        OpaqueFunction(function=_node),
    ])
