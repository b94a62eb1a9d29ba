"""The one place where ROS messages meet numpy.

* ``sensor_msgs/PointCloud2`` <-> numpy structured arrays, zero-copy on read (the array is a
  view of ``msg.data``), one ``memcpy`` on write (no per-byte Python loop: rclpy's setter for a
  ``uint8[]`` field validates every element of a ``bytes`` value, ~100x slower than handing it
  an ``array.array('B')``).
* ``xyz`` (+ packed ``rgb``, normals, ``anomaly_score``) convenience readers and writers.
* ``geometry_msgs/Transform`` / ``Pose`` <-> ``(4, 4)`` matrices, ``builtin_interfaces/Time``
  <-> float seconds.

Organised clouds (``height > 1``) read as ``(height, width)`` arrays; unorganised as ``(width,)``.
Big- and little-endian data are both read (the dtype carries the byte order), rows padded
beyond ``point_step * width`` are skipped. Malformed messages raise :class:`ValueError` naming
the problem.
"""
from __future__ import annotations

import array
import sys

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from cosarad_ros.core import geometry

__all__ = [
    "pointcloud2_to_array",
    "array_to_pointcloud2",
    "pointcloud2_to_xyz",
    "pointcloud2_fields",
    "xyz_to_pointcloud2",
    "pack_rgb",
    "unpack_rgb",
    "transform_to_matrix",
    "matrix_to_transform",
    "pose_to_matrix",
    "matrix_to_pose",
    "stamp_to_seconds",
    "seconds_to_stamp",
]

# PointField datatype -> numpy type character
_PF_TO_NP = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
_NP_TO_PF = {np.dtype(v).newbyteorder("=").str[1:]: k for k, v in _PF_TO_NP.items()}


def _field_dtype(msg: PointCloud2) -> np.dtype:
    """Structured dtype of one point, with the message's byte order and ``point_step`` size."""
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _PF_TO_NP:
            raise ValueError(f"PointCloud2 field '{f.name}' has unknown datatype {f.datatype}")
        if not f.name:
            raise ValueError("PointCloud2 has a field with an empty name")
        if f.name in names:
            raise ValueError(f"PointCloud2 field '{f.name}' appears twice")
        count = int(f.count) if f.count else 1
        base = np.dtype(order + _PF_TO_NP[f.datatype])
        fmt = base if count == 1 else np.dtype((base, (count,)))
        if f.offset + fmt.itemsize > msg.point_step:
            raise ValueError(
                f"PointCloud2 field '{f.name}' (offset {f.offset}, {fmt.itemsize} bytes) "
                f"does not fit in point_step {msg.point_step}")
        names.append(f.name)
        formats.append(fmt)
        offsets.append(int(f.offset))
    if not names:
        raise ValueError("PointCloud2 has no fields")
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                         "itemsize": int(msg.point_step)})
    except ValueError as exc:  # overlapping fields
        raise ValueError(f"PointCloud2 fields are inconsistent: {exc}") from exc


def pointcloud2_to_array(msg: PointCloud2) -> np.ndarray:
    """View a PointCloud2 as a numpy structured array, without copying.

    Args:
        msg: the message.

    Returns:
        ``(height, width)`` structured array for organised clouds (``height > 1``), ``(width,)``
        otherwise; one named field per ``PointField`` (``count > 1`` fields are sub-arrays). The
        array is read-only and shares memory with ``msg.data``.

    Raises:
        ValueError: data length not matching ``row_step * height``, ``row_step`` smaller than
            ``point_step * width``, fields that do not fit ``point_step`` or unknown datatypes.
    """
    h, w, ps, rs = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    dtype = _field_dtype(msg)
    if ps <= 0:
        raise ValueError(f"PointCloud2 point_step must be > 0, got {ps}")
    if rs < ps * w:
        raise ValueError(f"PointCloud2 row_step {rs} < point_step {ps} * width {w}")
    buf = np.frombuffer(msg.data, dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    if buf.size != rs * h:
        raise ValueError(
            f"PointCloud2 data has {buf.size} bytes, expected row_step * height = {rs} * {h} = {rs * h} "
            f"(point_step * width * height = {ps * w * h})")
    if h * w == 0:
        return np.zeros((0,), dtype=dtype)
    rows = buf.reshape(h, rs)[:, : ps * w]
    arr = rows.view(dtype).reshape(h, w)
    if h == 1:
        arr = arr.reshape(w)
    arr.flags.writeable = False
    return arr


def _stamp(stamp) -> Time:
    if stamp is None:
        return Time()
    if isinstance(stamp, Time):
        return stamp
    if hasattr(stamp, "to_msg"):  # rclpy.time.Time
        return stamp.to_msg()
    return seconds_to_stamp(float(stamp))


def array_to_pointcloud2(arr: np.ndarray, *, frame_id: str = "", stamp=None) -> PointCloud2:
    """Build a PointCloud2 from a structured array (one ``memcpy``).

    Args:
        arr: structured array of shape ``(N,)`` (unorganised) or ``(H, W)`` (organised); field
            types among int8/16/32, uint8/16/32, float32/64, optionally fixed-size sub-arrays.
        frame_id: ``header.frame_id``.
        stamp: ``builtin_interfaces/Time``, ``rclpy.time.Time``, float seconds or None (zero).

    Raises:
        ValueError: not a structured array, unsupported field type or more than 2 dimensions.
    """
    arr = np.asarray(arr)
    if arr.dtype.names is None:
        raise ValueError("array_to_pointcloud2 needs a structured array (named fields)")
    if arr.ndim not in (1, 2):
        raise ValueError(f"array_to_pointcloud2 needs a 1-D or 2-D array, got {arr.ndim}-D")
    fields = []
    big = None
    for name in arr.dtype.names:
        ftype, offset = arr.dtype.fields[name][:2]
        base, shape = (ftype.subdtype if ftype.subdtype else (ftype, ()))
        count = int(np.prod(shape)) if shape else 1
        key = base.newbyteorder("=").str[1:] if base.byteorder in "<>" else base.str[1:]
        if key not in _NP_TO_PF:
            raise ValueError(f"field '{name}' has unsupported type {base}")
        if base.byteorder in "<>":
            is_big = base.byteorder == ">"
        else:
            is_big = sys.byteorder == "big"
        if base.itemsize > 1:
            if big is not None and big != is_big:
                raise ValueError("fields mix byte orders")
            big = is_big
        fields.append(PointField(name=name, offset=int(offset), datatype=_NP_TO_PF[key], count=count))
    h, w = (1, arr.shape[0]) if arr.ndim == 1 else arr.shape
    msg = PointCloud2()
    msg.header = Header(frame_id=frame_id, stamp=_stamp(stamp))
    msg.height, msg.width = int(h), int(w)
    msg.fields = fields
    msg.is_bigendian = bool(big) if big is not None else False
    msg.point_step = int(arr.dtype.itemsize)
    msg.row_step = int(arr.dtype.itemsize * w)
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(arr).tobytes() if not arr.flags.c_contiguous else arr.data.cast("B"))
    msg.data = data
    msg.is_dense = _is_dense(arr)
    return msg


def _is_dense(arr: np.ndarray) -> bool:
    names = arr.dtype.names or ()
    if all(n in names for n in "xyz"):
        flat = arr.reshape(-1)
        return bool(np.isfinite(flat["x"]).all() and np.isfinite(flat["y"]).all()
                    and np.isfinite(flat["z"]).all())
    return True


def pointcloud2_fields(msg: PointCloud2) -> tuple[str, ...]:
    """Names of the message's fields, in order."""
    return tuple(f.name for f in msg.fields)


def pointcloud2_to_xyz(msg: PointCloud2, *, skip_nans: bool = True, dtype=np.float32) -> np.ndarray:
    """Read the ``x y z`` coordinates of a PointCloud2.

    Args:
        msg: cloud with fields ``x``, ``y``, ``z`` (any numeric type).
        skip_nans: drop points with a non-finite coordinate (organised clouds mark missing
            points with NaN); when False the organised shape is flattened and NaNs kept.
        dtype: output dtype.

    Returns:
        ``(N, 3)`` array. With ``skip_nans=False`` and little-endian contiguous float32
        ``x y z`` (the usual layout), the result is a read-only view of ``msg.data``.

    Raises:
        ValueError: missing ``x``/``y``/``z`` fields or a malformed message.
    """
    missing = [c for c in "xyz" if c not in pointcloud2_fields(msg)]
    if missing:
        raise ValueError(f"PointCloud2 has no field(s) {', '.join(missing)} "
                         f"(fields: {', '.join(pointcloud2_fields(msg)) or 'none'})")
    arr = pointcloud2_to_array(msg).reshape(-1)
    xyz = _xyz_view(arr, dtype)
    if xyz is None:
        xyz = np.stack([arr["x"], arr["y"], arr["z"]], axis=-1).astype(dtype)
    if skip_nans:
        finite = np.isfinite(xyz).all(axis=1)
        if not finite.all():
            xyz = xyz[finite]
    return xyz


def _xyz_view(arr: np.ndarray, dtype) -> np.ndarray | None:
    """Zero-copy ``(N, 3)`` view when x, y, z are consecutive native float fields."""
    f = arr.dtype.fields
    tx, ox = f["x"][:2]
    ty, oy = f["y"][:2]
    tz, oz = f["z"][:2]
    if not (tx == ty == tz and tx.isnative and tx == np.dtype(dtype) and oy == ox + tx.itemsize
            and oz == oy + tx.itemsize):
        return None
    if arr.size == 0:
        return np.zeros((0, 3), dtype=dtype)
    base = arr.view(np.uint8).reshape(arr.size, arr.dtype.itemsize) if arr.flags.c_contiguous else None
    if base is None:
        return None
    view = base[:, ox: ox + 3 * tx.itemsize].view(tx)
    view.flags.writeable = False
    return view


def pack_rgb(rgb) -> np.ndarray:
    """``(N, 3)`` uint8 (or 0-1 floats) -> ``(N,)`` float32 whose bits are ``0x00RRGGBB``
    (the packed ``rgb`` convention of PCL and RViz's RGB8 transformer).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 2 or rgb.shape[1] != 3:
        raise ValueError(f"rgb must have shape (N, 3), got {rgb.shape}")
    if np.issubdtype(rgb.dtype, np.floating):
        rgb = np.clip(np.round(rgb * 255.0), 0, 255)
    rgb = rgb.astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return packed.astype(np.uint32).view(np.float32)


def unpack_rgb(packed) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: ``(N,)`` float32 (or uint32) -> ``(N, 3)`` uint8."""
    p = np.ascontiguousarray(packed)
    p = p.view(np.uint32) if p.dtype.itemsize == 4 else p.astype(np.uint32)
    return np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=-1).astype(np.uint8)


def xyz_to_pointcloud2(points, *, frame_id: str, stamp=None, rgb=None, normals=None,
                       scores=None, extra: dict | None = None) -> PointCloud2:
    """Build a cloud with float32 ``x y z`` and optional fields.

    Args:
        points: ``(N, 3)`` (unorganised) or ``(H, W, 3)`` (organised, NaN for missing points).
        frame_id: ``header.frame_id`` (required: a cloud without a frame cannot be placed).
        stamp: see :func:`array_to_pointcloud2`.
        rgb: ``(N, 3)`` uint8 or 0-1 floats, written as packed float32 ``rgb``.
        normals: ``(N, 3)`` written as ``normal_x normal_y normal_z`` float32.
        scores: ``(N,)`` written as float32 ``anomaly_score``.
        extra: more ``name -> (N,)`` arrays (float32 / float64 / (u)int8/16/32).
    """
    pts = np.asarray(points)
    if pts.ndim not in (2, 3) or pts.shape[-1] != 3:
        raise ValueError(f"points must have shape (N, 3) or (H, W, 3), got {pts.shape}")
    if not frame_id:
        raise ValueError("frame_id must not be empty")
    shape = pts.shape[:-1]
    n = int(np.prod(shape))
    cols: list[tuple[str, np.dtype, np.ndarray]] = [
        ("x", np.dtype(np.float32), pts[..., 0]),
        ("y", np.dtype(np.float32), pts[..., 1]),
        ("z", np.dtype(np.float32), pts[..., 2]),
    ]

    def _col(name, values, dt, width=None):
        v = np.asarray(values)
        want = shape if width is None else (*shape, width)
        if v.reshape(-1).size != int(np.prod(want)):
            raise ValueError(f"{name} has {v.reshape(-1).size // (width or 1)} entries, expected {n}")
        return v.reshape(want)

    if rgb is not None:
        cols.append(("rgb", np.dtype(np.float32), pack_rgb(_col("rgb", rgb, None, 3).reshape(-1, 3)).reshape(shape)))
    if normals is not None:
        nrm = _col("normals", normals, None, 3)
        cols += [("normal_x", np.dtype(np.float32), nrm[..., 0]),
                 ("normal_y", np.dtype(np.float32), nrm[..., 1]),
                 ("normal_z", np.dtype(np.float32), nrm[..., 2])]
    if scores is not None:
        cols.append(("anomaly_score", np.dtype(np.float32), _col("scores", scores, None)))
    for name, values in (extra or {}).items():
        v = _col(name, values, None)
        cols.append((name, v.dtype if v.dtype != np.float16 else np.dtype(np.float32), v))
    arr = np.empty(shape, dtype=[(c[0], c[1]) for c in cols])
    for name, dt, values in cols:
        arr[name] = values
    return array_to_pointcloud2(arr, frame_id=frame_id, stamp=stamp)


# --- transforms -------------------------------------------------------------------------------

def transform_to_matrix(msg: Transform) -> np.ndarray:
    """``geometry_msgs/Transform`` -> ``(4, 4)``."""
    t, q = msg.translation, msg.rotation
    return geometry.pose_to_matrix([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])


def matrix_to_transform(T) -> Transform:
    """``(4, 4)`` rigid transform -> ``geometry_msgs/Transform``."""
    p, q = geometry.matrix_to_pose(T)
    return Transform(translation=Vector3(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                     rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def pose_to_matrix(msg: Pose) -> np.ndarray:
    """``geometry_msgs/Pose`` -> ``(4, 4)``."""
    p, q = msg.position, msg.orientation
    return geometry.pose_to_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])


def matrix_to_pose(T) -> Pose:
    """``(4, 4)`` rigid transform -> ``geometry_msgs/Pose``."""
    p, q = geometry.matrix_to_pose(T)
    return Pose(position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def stamp_to_seconds(stamp: Time) -> float:
    """``builtin_interfaces/Time`` -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    """Float seconds (>= 0) -> ``builtin_interfaces/Time``."""
    if not np.isfinite(seconds) or seconds < 0:
        raise ValueError(f"stamp must be finite and >= 0 seconds, got {seconds}")
    sec = int(seconds)
    nsec = int(round((seconds - sec) * 1e9))
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return Time(sec=sec, nanosec=nsec)
