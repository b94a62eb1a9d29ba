"""Sensor layer: simulated structured-light and laser-line sensors, GenICam cameras, recordings.

Every backend implements :class:`Sensor` (``connect()``, ``grab(sensor_pose) -> SensorFrame``,
``close()``, ``is_connected``) and is built from a configuration whose keys are its constructor
arguments::

    scene = SimulatedScene()
    scene.set_part(mesh, pose=np.eye(4))
    sensor = make_sensor({"type": "motioncam", "scene": scene, "seed": 0})
    sensor.connect()
    frame = sensor.grab(sensor_pose)      # frame.points: (N, 3) float32, optical frame, metres

Types: ``motioncam`` (structured light), ``ruler`` (laser line profiler), ``genicam`` (any
GenTL camera through harvesters), ``replay`` (PCD/PLY/XYZ/mesh files, rosbag2 MCAP).
"""
from .base import (
    DEFAULT_FRAME_ID,
    Sensor,
    SensorError,
    SensorFrame,
    SensorNotConnectedError,
    SensorNotFoundError,
    SensorTimeoutError,
    make_sensor,
    register_sensor,
    sensor_types,
)
from .profiler import LaserProfilerSensor, height_map_to_points
from .scene import RayHits, SimulatedScene, default_viewpoint
from .simulated import SimulatedSensor, StructuredLightSensor

__all__ = [
    "DEFAULT_FRAME_ID",
    "Sensor",
    "SensorFrame",
    "SensorError",
    "SensorNotFoundError",
    "SensorNotConnectedError",
    "SensorTimeoutError",
    "make_sensor",
    "register_sensor",
    "sensor_types",
    "SimulatedScene",
    "RayHits",
    "default_viewpoint",
    "SimulatedSensor",
    "StructuredLightSensor",
    "LaserProfilerSensor",
    "height_map_to_points",
]
