"""Real 3D cameras through GenICam / GenTL (Photoneo MotionCam-3D and PhoXi, SICK Ruler /
Ranger3 and any other device that streams a 3D range component), via the ``harvesters`` library.

The device is opened through a GenTL producer (``.cti`` file) given by path; its 3D range
component is converted to metres following the GenICam Standard Features Naming Convention
(SFNC 2.x, "3D Scan Control": ``Scan3dCoordinateSelector`` / ``Scan3dCoordinateScale`` /
``Scan3dCoordinateOffset`` / ``Scan3dDistanceUnit`` / ``Scan3dOutputMode`` /
``Scan3dInvalidDataFlag`` / ``Scan3dInvalidDataValue``) and the Pixel Format Naming Convention
(PFNC 2.x, ``Coord3D_ABC32f``, ``Coord3D_ABC32f_Planar``, ``Coord3D_C16`` ...)::

    value_in_device_unit = raw * Scan3dCoordinateScale + Scan3dCoordinateOffset

For C-only (range image) formats the missing coordinates come from the pixel position: on a
rectified grid (``RectifiedC``, ``*_Linescan``, ``UncalibratedC``) ``A = column * scale_A +
offset_A`` and ``B = row * scale_B + offset_B``; for a projective range image (``CalibratedC``,
``ProjectedC``) from the pinhole model with ``Scan3dFocalLength`` and
``Scan3dPrincipalPointU/V``.

The pure conversion (:func:`range_to_points`) is separate from the device code so it can be
checked on synthetic buffers; the device code is tested against the simulated producer
``viky.cti`` shipped in the ``genicam`` wheel (a 400 x 400 ``Coord3D_ABC32f_Planar`` range
component in millimetres).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from cosarad_ros.core.geometry import as_transform, transform_points

from .base import (
    DEFAULT_FRAME_ID,
    Sensor,
    SensorError,
    SensorFrame,
    SensorNotFoundError,
    SensorTimeoutError,
    register_sensor,
)

__all__ = ["GenICamSensor", "Scan3dCalibration", "range_to_points", "find_producers",
           "DISTANCE_UNITS", "RANGE_FORMATS"]

#: metres per unit of ``Scan3dDistanceUnit``
DISTANCE_UNITS = {"Millimeter": 1e-3, "Meter": 1.0, "Micrometer": 1e-6, "Inch": 0.0254,
                  "Centimeter": 1e-2, "Pixel": 1.0}

# PFNC range formats: name -> (coordinates present, numpy dtype)
RANGE_FORMATS: dict[str, tuple[str, str]] = {
    "Coord3D_ABC32f": ("ABC", "<f4"),
    "Coord3D_ABC32f_Planar": ("ABC", "<f4"),
    "Coord3D_ABC16": ("ABC", "<u2"),
    "Coord3D_ABC16_Planar": ("ABC", "<u2"),
    "Coord3D_ABC8": ("ABC", "u1"),
    "Coord3D_AC32f": ("AC", "<f4"),
    "Coord3D_AC16": ("AC", "<u2"),
    "Coord3D_A32f": ("A", "<f4"),
    "Coord3D_B32f": ("B", "<f4"),
    "Coord3D_C32f": ("C", "<f4"),
    "Coord3D_A16": ("A", "<u2"),
    "Coord3D_B16": ("B", "<u2"),
    "Coord3D_C16": ("C", "<u2"),
    "Coord3D_A8": ("A", "u1"),
    "Coord3D_B8": ("B", "u1"),
    "Coord3D_C8": ("C", "u1"),
    "Coord3D_C12p": ("C", "<u2"),
}

_GRID_MODES = ("RectifiedC", "RectifiedC_Linescan", "CalibratedC_Linescan", "UncalibratedC",
               "CalibratedAC_Linescan", "DisparityC", "DisparityC_Linescan")
_PROJECTIVE_MODES = ("CalibratedC", "ProjectedC")


@dataclass(frozen=True)
class Scan3dCalibration:
    """How raw range values become metres (SFNC "3D Scan Control" features).

    Attributes:
        scale: ``(A, B, C)`` ``Scan3dCoordinateScale`` per coordinate.
        offset: ``(A, B, C)`` ``Scan3dCoordinateOffset`` per coordinate.
        unit: metres per device unit (``Scan3dDistanceUnit``; 1e-3 for millimetres).
        output_mode: ``Scan3dOutputMode`` (decides how C-only images get A and B).
        invalid_value: raw C value that marks a missing point (``Scan3dInvalidDataValue``
            when ``Scan3dInvalidDataFlag`` is set), else None.
        zero_is_invalid: also drop raw C == 0 (the "no data" convention of laser profilers).
        focal_length: ``Scan3dFocalLength`` [pixels] for projective C-only images.
        principal_point: ``(u, v)`` ``Scan3dPrincipalPointU/V`` [pixels].
        device_to_optical: ``(4, 4)`` applied last (device coordinate system -> REP 103 optical).
    """

    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    unit: float = 1e-3
    output_mode: str = "CalibratedABC_Grid"
    invalid_value: float | None = None
    zero_is_invalid: bool = False
    focal_length: float | None = None
    principal_point: tuple[float, float] | None = None
    device_to_optical: np.ndarray | None = field(default=None, compare=False)


def range_to_points(components: Mapping[str, np.ndarray], width: int, height: int,
                    calib: Scan3dCalibration = Scan3dCalibration()) -> tuple[np.ndarray, np.ndarray]:
    """Convert GenICam range component(s) to metres.

    Args:
        components: PFNC format name -> flat raw data of one component (e.g.
            ``{"Coord3D_ABC32f": (H*W*3,)}``, or the three planes ``Coord3D_A32f`` /
            ``Coord3D_B32f`` / ``Coord3D_C32f``, or ``{"Coord3D_C16": (H*W,)}``).
        width, height: image size (for a line scan: points per profile, profiles).
        calib: scale, offset, unit, mode (see :class:`Scan3dCalibration`).

    Returns:
        ``points (N, 3)`` float32 metres of the valid pixels (A, B, C -> x, y, z, then
        ``calib.device_to_optical``) and ``pixel_index (N,)`` int64 (row-major ``row * width + col``).

    Raises:
        ValueError: unknown format, wrong data size, no C coordinate, or a projective C-only
            image without focal length.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"range image size must be positive, got {width} x {height}")
    n = width * height
    coords: dict[str, np.ndarray] = {}
    raw_c = None
    for fmt, data in components.items():
        if fmt not in RANGE_FORMATS:
            raise ValueError(f"unsupported range pixel format {fmt!r}; known: {', '.join(RANGE_FORMATS)}")
        letters, _ = RANGE_FORMATS[fmt]
        arr = np.asarray(data).reshape(-1)
        planar = fmt.endswith("_Planar")
        k = len(letters)
        if arr.size != n * k:
            raise ValueError(f"{fmt}: expected {n * k} values for {width} x {height}, got {arr.size}")
        arr = arr.reshape(k, n) if planar else arr.reshape(n, k).T
        for i, letter in enumerate(letters):
            coords[letter] = arr[i]
    if "C" not in coords:
        raise ValueError(f"range data has no C (depth) coordinate; formats: {', '.join(components)}")
    raw_c = coords["C"]
    valid = np.ones(n, dtype=bool)
    if np.issubdtype(raw_c.dtype, np.floating):
        valid &= np.isfinite(raw_c)
    if calib.invalid_value is not None:
        valid &= raw_c != calib.invalid_value
    if calib.zero_is_invalid:
        valid &= raw_c != 0
    sA, sB, sC = calib.scale
    oA, oB, oC = calib.offset
    idx = np.flatnonzero(valid)
    c = raw_c[idx].astype(np.float64) * sC + oC
    if "A" in coords and "B" in coords:
        a = coords["A"][idx].astype(np.float64) * sA + oA
        b = coords["B"][idx].astype(np.float64) * sB + oB
    else:
        rows, cols = np.divmod(idx, width)
        if "A" in coords:  # AC line scan: B from the profile (row) index
            a = coords["A"][idx].astype(np.float64) * sA + oA
            b = rows * sB + oB
        elif calib.output_mode in _PROJECTIVE_MODES:
            if not calib.focal_length or calib.principal_point is None:
                raise ValueError(f"output mode {calib.output_mode} (projective range image) needs "
                                 "focal_length and principal_point")
            cu, cv = calib.principal_point
            a = (cols - cu) * c / calib.focal_length
            b = (rows - cv) * c / calib.focal_length
        else:  # rectified grid
            a = cols * sA + oA
            b = rows * sB + oB
    pts = np.stack([a, b, c], axis=1) * calib.unit
    if np.issubdtype(coords["A" if "A" in coords else "C"].dtype, np.floating):
        finite = np.isfinite(pts).all(axis=1)
        pts, idx = pts[finite], idx[finite]
    if calib.device_to_optical is not None:
        pts = transform_points(calib.device_to_optical, pts)
    return pts.astype(np.float32), idx.astype(np.int64)


def find_producers(cti_path: str | Sequence[str] | None = None) -> list[str]:
    """GenTL producer files to load.

    Args:
        cti_path: a ``.cti`` file, a folder holding some, a list of those, or None for the
            folders of ``$GENICAM_GENTL64_PATH`` (``os.pathsep``-separated, the GenTL standard).

    Raises:
        SensorNotFoundError: nothing found (the message says where it looked).
    """
    if cti_path is None or cti_path == "" or cti_path == []:
        env = os.environ.get("GENICAM_GENTL64_PATH", "")
        entries = [e for e in env.split(os.pathsep) if e]
        where = f"$GENICAM_GENTL64_PATH ({env or 'unset'})"
    else:
        entries = [cti_path] if isinstance(cti_path, (str, os.PathLike)) else list(cti_path)
        where = ", ".join(map(str, entries))
    found: list[str] = []
    for e in entries:
        e = os.fspath(e)
        if os.path.isdir(e):
            found += sorted(glob.glob(os.path.join(e, "*.cti")))
        elif os.path.isfile(e):
            found.append(e)
    if not found:
        raise SensorNotFoundError(f"no GenTL producer (.cti) found in {where}; install the camera vendor's "
                                  "GenTL producer and give its path as cti_path")
    return found


def _node(nm, name):
    try:
        return nm.get_node(name) if nm.has_node(name) else None
    except Exception:  # noqa: BLE001 - a broken node behaves like an absent one
        return None


def _read(nm, name, default=None):
    node = _node(nm, name)
    if node is None:
        return default
    try:
        return node.value
    except Exception:  # noqa: BLE001 - not readable in the current state
        return default


def _symbolics(nm, name) -> tuple:
    node = _node(nm, name)
    try:
        return tuple(node.symbolics) if node is not None else ()
    except Exception:  # noqa: BLE001
        return ()


def _write(nm, name, value) -> None:
    node = _node(nm, name)
    if node is None:
        raise SensorError(f"device has no feature {name!r}")
    try:
        if value is None:  # a command feature (e.g. TriggerSoftware)
            node.execute()
        else:
            node.value = value
    except Exception as exc:  # noqa: BLE001 - genapi raises its own exception classes
        raise SensorError(f"cannot set {name} = {value!r}: {exc}") from exc


@register_sensor("genicam")
class GenICamSensor(Sensor):
    """A GenICam 3D camera opened through a GenTL producer with ``harvesters``.

    Args:
        cti_path: GenTL producer file / folder / list (None: ``$GENICAM_GENTL64_PATH``).
        device: which device: None (the first), an index, or a string matched against the
            serial number, id, user-defined name, model or display name.
        settings: device features to set at connect, in order: a mapping ``{feature: value}``
            or a list of ``"Feature=Value"`` strings (selectors before the selected features).
        range_component: ``ComponentSelector`` entry of the 3D data (enabled at connect when
            the device has multi-part components).
        intensity_component: component to read as per-point intensity (None: none).
        trigger: ``"auto"`` (software trigger when the device has one, else free-running),
            ``"software"`` or ``"continuous"``.
        timeout: seconds to wait for a frame before the device counts as not answering.
        unit: metres per device unit; None reads ``Scan3dDistanceUnit`` (default millimetres).
        zero_is_invalid: drop raw depth 0 (None: for integer formats only).
        min_depth, max_depth: keep points with ``min_depth <= z <= max_depth`` [m] (0: no limit).
        device_to_optical: ``(4, 4)`` from the device's coordinate system to the REP 103
            optical frame (None: identity, the device already uses x right, y down, z forward).
        frame_id: optical frame name.
    """

    type_name = "genicam"

    def __init__(self, *, cti_path: str | Sequence[str] | None = None, device: str | int | None = None,
                 settings: Mapping[str, Any] | Sequence[str] | None = None, range_component: str = "Range",
                 intensity_component: str | None = "Intensity", trigger: str = "auto", timeout: float = 5.0,
                 unit: float | None = None, zero_is_invalid: bool | None = None, min_depth: float = 0.0,
                 max_depth: float = 0.0, device_to_optical=None, frame_id: str = DEFAULT_FRAME_ID):
        super().__init__(frame_id=frame_id)
        self.cti_path = cti_path
        if device is not None and not isinstance(device, (str, int)):
            raise ValueError(f"device must be None, an index or a string, got {device!r}")
        self.device = device
        self.settings = self._parse_settings(settings)
        self.range_component = range_component
        self.intensity_component = intensity_component or None
        if trigger not in ("auto", "software", "continuous"):
            raise ValueError(f"trigger must be 'auto', 'software' or 'continuous', got {trigger!r}")
        self.trigger = trigger
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 s, got {timeout!r}")
        self.timeout = float(timeout)
        if unit is not None and not unit > 0:
            raise ValueError(f"unit must be > 0 (metres per device unit) or None, got {unit!r}")
        self.unit = unit
        self.zero_is_invalid = zero_is_invalid
        if min_depth < 0 or max_depth < 0 or (max_depth and max_depth <= min_depth):
            raise ValueError(f"need 0 <= min_depth < max_depth (0 = no limit), got {min_depth}, {max_depth}")
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.device_to_optical = None if device_to_optical is None else as_transform(
            device_to_optical, name="device_to_optical")
        self._h = None
        self._ia = None
        self._use_sw_trigger = False
        self.calibration: Scan3dCalibration | None = None
        self.device_info: dict[str, Any] = {}

    @staticmethod
    def _parse_settings(settings) -> list[tuple[str, Any]]:
        if settings is None:
            return []
        if isinstance(settings, Mapping):
            return list(settings.items())
        out = []
        for item in settings:
            if isinstance(item, str):
                if "=" not in item:
                    raise ValueError(f"setting {item!r} must look like 'Feature=Value'")
                k, v = item.split("=", 1)
                out.append((k.strip(), _coerce(v.strip())))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                out.append((str(item[0]), item[1]))
            else:
                raise ValueError(f"setting {item!r} must be 'Feature=Value' or a (feature, value) pair")
        return out

    # connection ---------------------------------------------------------------------------

    def _connect(self) -> None:
        producers = find_producers(self.cti_path)
        try:
            from harvesters.core import Harvester
        except ImportError as exc:  # pragma: no cover - harvesters is in requirements.txt
            raise SensorError("the genicam backend needs the 'harvesters' package") from exc
        h = Harvester()
        try:
            for p in producers:
                h.add_file(p, check_existence=True)
            h.update()
            infos = list(h.device_info_list)
            if not infos:
                raise SensorNotFoundError(f"no GenICam device found through {', '.join(producers)}")
            index = self._select(infos)
            ia = h.create(index)
        except SensorError:
            h.reset()
            raise
        except Exception as exc:  # noqa: BLE001 - GenTL errors come in many types
            h.reset()
            raise SensorNotFoundError(f"cannot open GenICam device through {', '.join(producers)}: {exc}") from exc
        self._h, self._ia = h, ia
        try:
            self._configure(infos[index])
            self._ia.start()
        except Exception as exc:
            self._close()
            if isinstance(exc, SensorError):
                raise
            raise SensorError(f"cannot configure GenICam device: {exc}") from exc

    def _select(self, infos) -> int:
        if self.device is None:
            return 0
        if isinstance(self.device, int):
            if not 0 <= self.device < len(infos):
                raise SensorNotFoundError(f"device index {self.device} out of range: {len(infos)} device(s) found")
            return self.device
        keys = ("serial_number", "id_", "user_defined_name", "model", "display_name")
        for i, info in enumerate(infos):
            if any(_info_attr(info, k) == self.device for k in keys):
                return i
        names = ", ".join(f"{_info_attr(d, 'id_')} (serial {_info_attr(d, 'serial_number')})" for d in infos)
        raise SensorNotFoundError(f"no GenICam device matches {self.device!r}; found: {names}")

    def _configure(self, info) -> None:
        nm = self._ia.remote_device.node_map
        self.device_info = {k: _info_attr(info, k) for k in
                            ("vendor", "model", "serial_number", "id_", "display_name")}
        comps = _symbolics(nm, "ComponentSelector")
        if comps:
            if self.range_component not in comps:
                raise SensorError(f"device has no {self.range_component!r} component (components: {', '.join(comps)})")
            _write(nm, "ComponentSelector", self.range_component)
            if _node(nm, "ComponentEnable") is not None and not _read(nm, "ComponentEnable", True):
                _write(nm, "ComponentEnable", True)
        for name, value in self.settings:
            _write(nm, name, value)
        if comps:  # settings may have moved the selector; read the range component's features
            _write(nm, "ComponentSelector", self.range_component)
        self.calibration = self._read_calibration(nm)
        # trigger
        has_sw = _node(nm, "TriggerSoftware") is not None and "Software" in _symbolics(nm, "TriggerSource")
        if self.trigger == "software" and not has_sw:
            raise SensorError("device has no software trigger (TriggerSoftware / TriggerSource=Software)")
        self._use_sw_trigger = has_sw and self.trigger in ("auto", "software")
        if self._use_sw_trigger:
            if "FrameStart" in _symbolics(nm, "TriggerSelector"):
                _write(nm, "TriggerSelector", "FrameStart")
            _write(nm, "TriggerMode", "On")
            _write(nm, "TriggerSource", "Software")
        elif "Off" in _symbolics(nm, "TriggerMode"):
            _write(nm, "TriggerMode", "Off")

    def _read_calibration(self, nm) -> Scan3dCalibration:
        scale, offset = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
        sels = _symbolics(nm, "Scan3dCoordinateSelector")
        for i, coord in enumerate(("CoordinateA", "CoordinateB", "CoordinateC")):
            if coord in sels:
                _write(nm, "Scan3dCoordinateSelector", coord)
                scale[i] = float(_read(nm, "Scan3dCoordinateScale", 1.0))
                offset[i] = float(_read(nm, "Scan3dCoordinateOffset", 0.0))
        if "CoordinateC" in sels:
            _write(nm, "Scan3dCoordinateSelector", "CoordinateC")
        invalid = None
        if _read(nm, "Scan3dInvalidDataFlag", False):
            invalid = _read(nm, "Scan3dInvalidDataValue", None)
        unit_name = str(_read(nm, "Scan3dDistanceUnit", "Millimeter"))
        if self.unit is not None:
            unit = float(self.unit)
        elif unit_name in DISTANCE_UNITS:
            unit = DISTANCE_UNITS[unit_name]
        else:
            raise SensorError(f"unknown Scan3dDistanceUnit {unit_name!r}; set the 'unit' parameter")
        f = _read(nm, "Scan3dFocalLength", None)
        cu, cv = _read(nm, "Scan3dPrincipalPointU", None), _read(nm, "Scan3dPrincipalPointV", None)
        return Scan3dCalibration(
            scale=tuple(scale), offset=tuple(offset), unit=unit,
            output_mode=str(_read(nm, "Scan3dOutputMode", "CalibratedABC_Grid")),
            invalid_value=None if invalid is None else float(invalid),
            zero_is_invalid=bool(self.zero_is_invalid),  # refined per format in _grab when None
            focal_length=None if f is None else float(f),
            principal_point=None if cu is None or cv is None else (float(cu), float(cv)),
            device_to_optical=self.device_to_optical)

    def _close(self) -> None:
        ia, h = self._ia, self._h
        self._ia = self._h = None
        try:
            if ia is not None:
                try:
                    ia.stop()
                finally:
                    ia.destroy()
        finally:
            if h is not None:
                h.reset()

    # acquisition --------------------------------------------------------------------------

    def _grab(self, sensor_pose):
        ia = self._ia
        if ia is None:  # pragma: no cover - guarded by Sensor.grab
            raise SensorTimeoutError("GenICam device is not open")
        try:
            if self._use_sw_trigger:
                self._drain(ia)
                ia.remote_device.node_map.TriggerSoftware.execute()
            else:
                self._drain(ia)
            with ia.fetch(timeout=self.timeout) as buf:
                stamp = time.time()
                parts, intensity, width, height = self._read_buffer(buf)
        except SensorError:
            raise
        except Exception as exc:  # noqa: BLE001 - GenTL timeout / lost device
            raise SensorTimeoutError(f"GenICam device did not deliver a frame within {self.timeout} s: "
                                     f"{type(exc).__name__}: {exc}") from exc
        calib = self.calibration
        if self.zero_is_invalid is None:
            integer = any(not RANGE_FORMATS[f][1].endswith("f4") for f in parts)
            calib = dataclasses.replace(calib, zero_is_invalid=integer)
        pts, idx = range_to_points(parts, width, height, calib)
        keep = np.ones(len(pts), dtype=bool)
        if self.min_depth:
            keep &= pts[:, 2] >= self.min_depth
        if self.max_depth:
            keep &= pts[:, 2] <= self.max_depth
        pts, idx = pts[keep], idx[keep]
        inten = None if intensity is None or intensity.size != width * height else intensity[idx]
        meta = {"sensor_type": self.type_name, "width": width, "height": height, "pixel_index": idx,
                "pixel_formats": tuple(parts), "device": dict(self.device_info),
                "scan3d": {"scale": calib.scale, "offset": calib.offset, "unit": calib.unit,
                           "output_mode": calib.output_mode}}
        return SensorFrame(points=pts, stamp=stamp, frame_id=self.frame_id, sensor_pose=sensor_pose,
                           intensity=inten, meta=meta)

    @staticmethod
    def _drain(ia) -> None:
        """Give back frames that queued up since the last grab, so the next one is fresh."""
        for _ in range(64):
            b = ia.try_fetch(timeout=1e-4)
            if b is None:
                return
            b.queue()

    def _read_buffer(self, buf):
        payload = buf.payload
        parts: dict[str, np.ndarray] = {}
        intensity = None
        width = height = None
        for comp in payload.components:
            fmt = str(comp.data_format)
            if fmt in RANGE_FORMATS:
                _, dt = RANGE_FORMATS[fmt]
                parts[fmt] = np.array(comp.data, dtype=np.dtype(dt), copy=True)
                width, height = int(comp.width), int(comp.height)
            elif intensity is None and self.intensity_component:
                intensity = _grey(comp)
        if not parts:
            fmts = ", ".join(str(c.data_format) for c in payload.components) or "none"
            raise SensorError(f"frame holds no 3D range component (formats: {fmts}); "
                              f"enable the {self.range_component!r} component or a Coord3D pixel format")
        return parts, intensity, width, height

    def info(self):
        out = super().info()
        out.update({"device": self.device_info.get("display_name", ""),
                    "serial": self.device_info.get("serial_number", ""),
                    "software_trigger": self._use_sw_trigger})
        return out


def _info_attr(info, key: str) -> str:
    """A device-info field as text ('' when the producer does not provide it)."""
    try:
        return str(getattr(info, key) or "")
    except Exception:  # noqa: BLE001 - GenTL raises NotAvailableException for unsupported fields
        return ""


def _grey(comp) -> np.ndarray | None:
    """Per-pixel intensity in [0, 1] of a 2-D component (Mono8/16, RGB8, RGBa8, BGR8...)."""
    fmt = str(comp.data_format)
    data = np.asarray(comp.data)
    n = int(comp.width) * int(comp.height)
    if n == 0 or data.size % n:
        return None
    ch = data.size // n
    arr = data.reshape(n, ch).astype(np.float32)
    if ch >= 3:
        arr = arr[:, :3].mean(axis=1)
    else:
        arr = arr[:, 0]
    top = 65535.0 if data.dtype.itemsize >= 2 or "16" in fmt else 255.0
    return np.clip(arr / top, 0.0, 1.0)


def _coerce(text: str):
    """Turn the text of a ``Feature=Value`` setting into bool / int / float / str."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
