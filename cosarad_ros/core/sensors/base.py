"""Sensor interface shared by every backend: :class:`SensorFrame`, :class:`Sensor`, the error
types, and the ``type`` -> class registry behind :func:`make_sensor`.

Conventions (REP 103): a frame's ``points`` are metres in the sensor's optical frame (z forward,
x right, y down); ``sensor_pose`` maps that optical frame into the world frame
(``p_world = T[:3, :3] @ p + T[:3, 3]``).

A backend implements ``_connect``, ``_grab`` and ``_close``; the public ``connect`` / ``grab`` /
``close`` wrappers validate arguments, keep the connection state and the counters that the
node reports as diagnostics, and turn a grab on a closed device into a clear error.
"""
from __future__ import annotations

import abc
import inspect
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from cosarad_ros.core.geometry import as_transform, transform_points

__all__ = [
    "SensorFrame",
    "Sensor",
    "SensorError",
    "SensorNotFoundError",
    "SensorNotConnectedError",
    "SensorTimeoutError",
    "register_sensor",
    "sensor_types",
    "make_sensor",
    "DEFAULT_FRAME_ID",
]

DEFAULT_FRAME_ID = "sensor_optical_frame"


# --- errors ------------------------------------------------------------------------------------

class SensorError(RuntimeError):
    """A sensor could not deliver (device missing, not answering, finished recording)."""


class SensorNotFoundError(SensorError):
    """No device / GenTL producer / recording matches the configuration."""


class SensorNotConnectedError(SensorError):
    """``grab`` was called on a sensor that is not connected."""


class SensorTimeoutError(SensorError):
    """The device stopped answering (a grab timed out or the device disappeared)."""


# --- frame -------------------------------------------------------------------------------------

def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only contiguous array that does not share memory with a caller's writable array."""
    if not a.flags.writeable and a.flags.c_contiguous:
        return a
    a = np.array(a, order="C", copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class SensorFrame:
    """One acquisition.

    Attributes:
        points: ``(N, 3)`` float32, metres, in the sensor optical frame ``frame_id``. May be
            empty (the sensor saw nothing); never contains NaN.
        stamp: acquisition time, float seconds since the epoch (mid-exposure for area sensors,
            the first profile for line profilers).
        frame_id: name of the optical frame the points are expressed in.
        sensor_pose: ``(4, 4)`` optical -> world transform the frame was taken from, or None
            when unknown (a real camera without a robot).
        normals: optional ``(N, 3)`` float32 unit surface normals (optical frame), oriented
            towards the sensor.
        intensity: optional ``(N,)`` float32 in ``[0, 1]``.
        height_map: optional ``(H, W)`` uint16 range image (laser profilers: one row per
            profile; 0 = no data); ``meta['height_map_scale']`` / ``['height_map_offset']``
            turn counts into metres: ``z = offset + scale * (count - 1)``.
        meta: anything else (pixel indices, object labels, device info, timings).

    Arrays are made read-only so that the frame really is immutable.
    """

    points: np.ndarray
    stamp: float
    frame_id: str = DEFAULT_FRAME_ID
    sensor_pose: np.ndarray | None = None
    normals: np.ndarray | None = None
    intensity: np.ndarray | None = None
    height_map: np.ndarray | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        pts = np.asarray(self.points)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"SensorFrame.points must have shape (N, 3), got {pts.shape}")
        pts = pts.astype(np.float32, copy=False)
        if not np.isfinite(pts).all():
            raise ValueError("SensorFrame.points contains non-finite values; drop missing points first")
        object.__setattr__(self, "points", _readonly(pts))
        n = pts.shape[0]
        if not np.isfinite(self.stamp) or self.stamp < 0:
            raise ValueError(f"SensorFrame.stamp must be finite seconds >= 0, got {self.stamp}")
        object.__setattr__(self, "stamp", float(self.stamp))
        if not isinstance(self.frame_id, str) or not self.frame_id:
            raise ValueError("SensorFrame.frame_id must be a non-empty string")
        if self.sensor_pose is not None:
            object.__setattr__(self, "sensor_pose", _readonly(as_transform(self.sensor_pose, name="sensor_pose")))
        if self.normals is not None:
            nr = np.asarray(self.normals, dtype=np.float32)
            if nr.shape != (n, 3):
                raise ValueError(f"SensorFrame.normals must have shape ({n}, 3), got {nr.shape}")
            object.__setattr__(self, "normals", _readonly(nr))
        if self.intensity is not None:
            it = np.asarray(self.intensity, dtype=np.float32).reshape(-1)
            if it.shape != (n,):
                raise ValueError(f"SensorFrame.intensity must have shape ({n},), got {it.shape}")
            object.__setattr__(self, "intensity", _readonly(it))
        if self.height_map is not None:
            hm = np.asarray(self.height_map)
            if hm.ndim != 2 or hm.dtype != np.uint16:
                raise ValueError(f"SensorFrame.height_map must be a 2-D uint16 array, got {hm.dtype} {hm.shape}")
            object.__setattr__(self, "height_map", _readonly(hm))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return len(self)

    def points_in(self, T_target_optical) -> np.ndarray:
        """Points mapped by ``T_target_optical`` (optical -> target frame); ``(N, 3)`` float64."""
        return transform_points(T_target_optical, self.points)

    def points_world(self) -> np.ndarray:
        """Points in the world frame through ``sensor_pose``; ``(N, 3)`` float64.

        Raises:
            ValueError: the frame has no ``sensor_pose``.
        """
        if self.sensor_pose is None:
            raise ValueError("this frame has no sensor_pose; cannot express its points in the world frame")
        return self.points_in(self.sensor_pose)

    def normals_world(self) -> np.ndarray | None:
        """Normals rotated into the world frame (None when the frame has none)."""
        if self.normals is None:
            return None
        if self.sensor_pose is None:
            raise ValueError("this frame has no sensor_pose")
        return self.normals.astype(np.float64) @ self.sensor_pose[:3, :3].T

    def with_pose(self, sensor_pose) -> "SensorFrame":
        """Same frame with another ``sensor_pose`` (e.g. the pose the robot reported)."""
        return SensorFrame(self.points, self.stamp, self.frame_id, sensor_pose, self.normals,
                           self.intensity, self.height_map, dict(self.meta))


# --- sensor ------------------------------------------------------------------------------------

class Sensor(abc.ABC):
    """A source of :class:`SensorFrame` s.

    Life cycle: ``connect()`` -> any number of ``grab()`` -> ``close()`` (also a context
    manager). ``grab`` on an unconnected sensor raises :class:`SensorNotConnectedError`; a
    device that stops answering raises :class:`SensorTimeoutError` and the sensor is marked
    disconnected, so the caller may ``connect()`` again.

    Subclasses set ``type_name`` and implement ``_connect``, ``_grab(pose)`` and ``_close``.
    Constructor arguments are keyword-only and are exactly the configuration keys accepted by
    :func:`make_sensor`.
    """

    type_name: ClassVar[str] = ""
    #: whether ``grab(sensor_pose)`` actually scans from the given pose (simulators) rather
    #: than only recording it (real devices / recordings)
    pose_driven: ClassVar[bool] = False

    def __init__(self, *, frame_id: str = DEFAULT_FRAME_ID):
        if not isinstance(frame_id, str) or not frame_id:
            raise ValueError("frame_id must be a non-empty string")
        self.frame_id = frame_id
        self._connected = False
        self._lock = threading.RLock()
        self.grab_count = 0
        self.failure_count = 0
        self.last_error: str = ""
        self.last_grab_seconds: float = float("nan")

    # public API ---------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Open the device. Idempotent.

        Raises:
            SensorNotFoundError: no device / producer / recording found.
            SensorError: the device refused the configuration.
        """
        with self._lock:
            if self._connected:
                return
            try:
                self._connect()
            except SensorError as exc:
                self.last_error = str(exc)
                raise
            self._connected = True

    def grab(self, sensor_pose=None) -> SensorFrame:
        """Acquire one frame.

        Args:
            sensor_pose: ``(4, 4)`` optical -> world pose the sensor is at (the pose the arm
                reached). Simulators scan from it (None: their current pose); real devices
                and recordings attach it to the frame.

        Returns:
            the frame, points in the optical frame.

        Raises:
            SensorNotConnectedError: ``connect()`` was not called (or the device was lost).
            SensorTimeoutError: the device stopped answering; the sensor is now disconnected.
            ValueError: ``sensor_pose`` is not a valid transform.
        """
        pose = None if sensor_pose is None else as_transform(sensor_pose, name="sensor_pose")
        with self._lock:
            if not self._connected:
                raise SensorNotConnectedError(
                    f"{self.type_name or type(self).__name__} sensor is not connected; call connect() first")
            t0 = time.perf_counter()
            try:
                frame = self._grab(pose)
            except SensorError as exc:
                self.failure_count += 1
                self.last_error = str(exc)
                if isinstance(exc, (SensorTimeoutError, SensorNotFoundError)):
                    self._mark_lost()
                raise
            self.last_grab_seconds = time.perf_counter() - t0
            self.grab_count += 1
            return frame

    def close(self) -> None:
        """Release the device. Idempotent; never raises for an already closed sensor."""
        with self._lock:
            if not self._connected:
                return
            try:
                self._close()
            finally:
                self._connected = False

    def info(self) -> dict[str, Any]:
        """Key/value status for diagnostics (type, connection, counters, last error)."""
        return {
            "type": self.type_name,
            "frame_id": self.frame_id,
            "connected": self._connected,
            "grabs": self.grab_count,
            "failures": self.failure_count,
            "last_grab_s": self.last_grab_seconds,
            "last_error": self.last_error,
        }

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self._connected else "closed"
        return f"<{type(self).__name__} type={self.type_name!r} frame_id={self.frame_id!r} {state}>"

    # backend hooks ------------------------------------------------------------------------

    @abc.abstractmethod
    def _connect(self) -> None:
        """Open the device or raise a :class:`SensorError`."""

    @abc.abstractmethod
    def _grab(self, sensor_pose: np.ndarray | None) -> SensorFrame:
        """Acquire one frame or raise a :class:`SensorError`."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the device."""

    def _mark_lost(self) -> None:
        """The device is gone: release what can be released and mark the sensor closed."""
        try:
            self._close()
        except Exception:  # noqa: BLE001 - the device is already gone; closing is best effort
            pass
        self._connected = False


# --- registry ----------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[[], type]] = {}


def register_sensor(*names: str):
    """Class decorator: make the class available to :func:`make_sensor` under ``names``."""
    def deco(cls):
        for n in names:
            _REGISTRY[n] = (lambda c=cls: c)
        return cls
    return deco


def _lazy(module: str, cls: str) -> Callable[[], type]:
    def load():
        import importlib
        return getattr(importlib.import_module(module), cls)
    return load


# Backends whose module is heavy or has optional dependencies are imported on first use.
_REGISTRY.update({
    "motioncam": _lazy("cosarad_ros.core.sensors.simulated", "StructuredLightSensor"),
    "structured_light": _lazy("cosarad_ros.core.sensors.simulated", "StructuredLightSensor"),
    "ruler": _lazy("cosarad_ros.core.sensors.simulated", "LaserProfilerSensor"),
    "laser_profiler": _lazy("cosarad_ros.core.sensors.simulated", "LaserProfilerSensor"),
    "genicam": _lazy("cosarad_ros.core.sensors.genicam", "GenICamSensor"),
    "replay": _lazy("cosarad_ros.core.sensors.replay", "ReplaySensor"),
})


def sensor_types() -> tuple[str, ...]:
    """Names accepted by ``make_sensor``'s ``type`` key."""
    return tuple(sorted(_REGISTRY))


def make_sensor(config: Mapping[str, Any] | str) -> Sensor:
    """Build a sensor from a configuration.

    Args:
        config: ``{"type": name, **constructor_kwargs}`` (keys map one-to-one onto the
            backend's constructor arguments), or just the type name for all defaults.
            Types: ``motioncam`` / ``structured_light``, ``ruler`` / ``laser_profiler``,
            ``genicam``, ``replay``.

    Returns:
        the (not yet connected) sensor.

    Raises:
        ValueError: unknown type or unknown / invalid configuration keys (the message lists
            the accepted keys).
    """
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, Mapping):
        raise ValueError(f"sensor config must be a mapping or a type name, got {type(config).__name__}")
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind is None:
        raise ValueError(f"sensor config needs a 'type' (one of {', '.join(sensor_types())})")
    if kind not in _REGISTRY:
        raise ValueError(f"unknown sensor type {kind!r}; expected one of {', '.join(sensor_types())}")
    cls = _REGISTRY[kind]()
    sig = inspect.signature(cls.__init__)
    accepted = [p for p in sig.parameters if p != "self" and sig.parameters[p].kind == inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise ValueError(f"sensor type {kind!r} does not accept {', '.join(map(repr, unknown))}; "
                         f"accepted keys: {', '.join(accepted)}")
    return cls(**cfg)
