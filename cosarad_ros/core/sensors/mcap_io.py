"""Point clouds in rosbag2 MCAP files, without ROS.

``sensor_msgs/msg/PointCloud2`` (and the scan's ``geometry_msgs/msg/PoseStamped``) are encoded
to CDR with ``mcap-ros2-support`` from their message definitions (the ``ros2msg`` schema text
below: the interface definitions of ROS 2 Jazzy, dependencies appended after ``===`` lines as
``ros2 bag record`` writes them), so files written here open in ``ros2 bag play``, Foxglove
and RViz, and bags recorded on a robot are read back here. MCAP itself: Foxglove,
"MCAP file format specification", https://mcap.dev/spec.

A :class:`~cosarad_ros.core.sensors.base.SensorFrame` maps onto the messages as follows:
``points`` -> float32 ``x y z`` (+ ``intensity`` and ``normal_x/y/z`` when present);
``stamp`` / ``frame_id`` -> ``header``; ``sensor_pose`` -> a PoseStamped on ``pose_topic``
with the same stamp (header frame ``world_frame``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from cosarad_ros.core.geometry import matrix_to_pose, pose_to_matrix

from .base import SensorFrame

__all__ = [
    "POINTCLOUD2_MSGDEF",
    "POSESTAMPED_MSGDEF",
    "write_pointcloud_mcap",
    "read_pointcloud_mcap",
    "iter_pointcloud_mcap",
    "mcap_topics",
    "pointcloud2_dict_to_arrays",
    "McapTopic",
]

_SEP = "=" * 80
_HEADER_DEFS = f"""{_SEP}
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
{_SEP}
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""

POINTCLOUD2_MSGDEF = f"""std_msgs/Header header
uint32 height
uint32 width
PointField[] fields
bool is_bigendian
uint32 point_step
uint32 row_step
uint8[] data
bool is_dense
{_HEADER_DEFS}{_SEP}
MSG: sensor_msgs/PointField
uint8 INT8=1
uint8 UINT8=2
uint8 INT16=3
uint8 UINT16=4
uint8 INT32=5
uint8 UINT32=6
uint8 FLOAT32=7
uint8 FLOAT64=8
string name
uint32 offset
uint8 datatype
uint32 count
"""

POSESTAMPED_MSGDEF = f"""std_msgs/Header header
Pose pose
{_HEADER_DEFS}{_SEP}
MSG: geometry_msgs/Pose
Point position
Quaternion orientation
{_SEP}
MSG: geometry_msgs/Point
float64 x
float64 y
float64 z
{_SEP}
MSG: geometry_msgs/Quaternion
float64 x 0
float64 y 0
float64 z 0
float64 w 1
"""

# PointField datatype <-> numpy
_PF_NP = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_FLOAT32 = 7


@dataclass(frozen=True)
class McapTopic:
    """A channel of an MCAP file."""

    topic: str
    schema: str
    message_count: int


def _stamp_dict(seconds: float) -> dict:
    ns = int(round(seconds * 1e9))
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _frame_to_pc2(frame: SensorFrame) -> dict:
    n = len(frame)
    cols = [("x", frame.points[:, 0]), ("y", frame.points[:, 1]), ("z", frame.points[:, 2])]
    if frame.intensity is not None:
        cols.append(("intensity", frame.intensity))
    if frame.normals is not None:
        cols += [("normal_x", frame.normals[:, 0]), ("normal_y", frame.normals[:, 1]),
                 ("normal_z", frame.normals[:, 2])]
    arr = np.empty(n, dtype=[(name, "<f4") for name, _ in cols])
    for name, values in cols:
        arr[name] = values
    fields = [{"name": name, "offset": 4 * i, "datatype": _FLOAT32, "count": 1} for i, (name, _) in enumerate(cols)]
    step = 4 * len(cols)
    return {
        "header": {"stamp": _stamp_dict(frame.stamp), "frame_id": frame.frame_id},
        "height": 1, "width": n, "fields": fields, "is_bigendian": False,
        "point_step": step, "row_step": step * n, "data": arr.tobytes(), "is_dense": True,
    }


def write_pointcloud_mcap(path, frames: Iterable[SensorFrame], *, topic: str = "/scanner_node/points",
                          pose_topic: str | None = "/scanner_node/sensor_pose", world_frame: str = "world",
                          compression: str = "zstd") -> int:
    """Write frames as ``sensor_msgs/msg/PointCloud2`` messages of a rosbag2 MCAP file.

    Args:
        path: output ``.mcap`` file (parent folders are created).
        frames: the frames, in time order.
        topic: cloud topic.
        pose_topic: topic for each frame's ``sensor_pose`` (``geometry_msgs/msg/PoseStamped``,
            same stamp as the cloud); None to skip poses.
        world_frame: ``header.frame_id`` of the poses.
        compression: ``"zstd"``, ``"lz4"`` or ``"none"``.

    Returns:
        the number of clouds written.
    """
    from mcap.writer import CompressionType
    from mcap_ros2.writer import Writer

    comp = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
    if compression not in comp:
        raise ValueError(f"compression must be one of {', '.join(comp)}, got {compression!r}")
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    count = 0
    with open(path, "wb") as fh:
        writer = Writer(fh, compression=comp[compression])
        try:
            pc_schema = writer.register_msgdef("sensor_msgs/msg/PointCloud2", POINTCLOUD2_MSGDEF)
            pose_schema = None
            for seq, frame in enumerate(frames):
                if not isinstance(frame, SensorFrame):
                    raise ValueError(f"frames must be SensorFrame objects, got {type(frame).__name__}")
                t_ns = int(round(frame.stamp * 1e9))
                writer.write_message(topic, pc_schema, _frame_to_pc2(frame), log_time=t_ns,
                                     publish_time=t_ns, sequence=seq)
                if pose_topic and frame.sensor_pose is not None:
                    if pose_schema is None:
                        pose_schema = writer.register_msgdef("geometry_msgs/msg/PoseStamped", POSESTAMPED_MSGDEF)
                    p, q = matrix_to_pose(frame.sensor_pose)
                    msg = {"header": {"stamp": _stamp_dict(frame.stamp), "frame_id": world_frame},
                           "pose": {"position": {"x": float(p[0]), "y": float(p[1]), "z": float(p[2])},
                                    "orientation": {"x": float(q[0]), "y": float(q[1]), "z": float(q[2]),
                                                    "w": float(q[3])}}}
                    writer.write_message(pose_topic, pose_schema, msg, log_time=t_ns, publish_time=t_ns,
                                         sequence=seq)
                count += 1
        finally:
            writer.finish()
    return count


def _reader(fh):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    return make_reader(fh, decoder_factories=[DecoderFactory()])


def _open(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"MCAP file not found: {path}")
    return open(path, "rb")


def mcap_topics(path) -> list[McapTopic]:
    """Channels of an MCAP file with their schema names and message counts.

    Raises:
        FileNotFoundError: missing file. ValueError: not a readable MCAP file.
    """
    with _open(path) as fh:
        try:
            summary = _reader(fh).get_summary()
        except Exception as exc:  # noqa: BLE001 - mcap raises several types for corrupt files
            raise ValueError(f"{os.fspath(path)} is not a readable MCAP file: {exc}") from exc
        if summary is None:
            raise ValueError(f"{os.fspath(path)} has no MCAP summary (truncated recording?)")
        counts = summary.statistics.channel_message_counts if summary.statistics else {}
        out = []
        for cid, ch in summary.channels.items():
            schema = summary.schemas.get(ch.schema_id)
            out.append(McapTopic(ch.topic, schema.name if schema else "", int(counts.get(cid, 0))))
        return out


def pointcloud2_dict_to_arrays(msg) -> dict[str, np.ndarray]:
    """Decode a PointCloud2 (any object with the message's attributes) into ``name -> (N,)``
    arrays, one per field, dropping row padding; organised clouds are flattened row-major.

    Raises:
        ValueError: unknown datatype, fields not fitting ``point_step`` or a data size that
            does not match ``row_step * height``.
    """
    h, w, ps, rs = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if int(f.datatype) not in _PF_NP:
            raise ValueError(f"PointCloud2 field {f.name!r} has unknown datatype {f.datatype}")
        base = np.dtype(order + _PF_NP[int(f.datatype)])
        count = int(f.count) or 1
        fmt = base if count == 1 else np.dtype((base, (count,)))
        if int(f.offset) + fmt.itemsize > ps:
            raise ValueError(f"PointCloud2 field {f.name!r} does not fit point_step {ps}")
        names.append(f.name), formats.append(fmt), offsets.append(int(f.offset))
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    if h * w == 0:
        return {n: np.zeros(0, dtype=f.base if f.subdtype else f) for n, f in zip(names, formats)}
    if rs < ps * w or data.size != rs * h:
        raise ValueError(f"PointCloud2 data has {data.size} bytes; expected row_step {rs} * height {h} "
                         f"with row_step >= point_step {ps} * width {w}")
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": ps})
    arr = data.reshape(h, rs)[:, : ps * w].copy().view(dtype).reshape(-1)
    return {n: np.asarray(arr[n]) for n in names}


def _pc2_to_frame(msg, pose: np.ndarray | None, meta: dict) -> SensorFrame:
    cols = pointcloud2_dict_to_arrays(msg)
    missing = [c for c in "xyz" if c not in cols]
    if missing:
        raise ValueError(f"PointCloud2 has no field(s) {', '.join(missing)} (fields: {', '.join(cols)})")
    pts = np.stack([cols["x"], cols["y"], cols["z"]], axis=1).astype(np.float64)
    ok = np.isfinite(pts).all(axis=1)
    normals = intensity = None
    if all(k in cols for k in ("normal_x", "normal_y", "normal_z")):
        normals = np.stack([cols["normal_x"], cols["normal_y"], cols["normal_z"]], axis=1)[ok]
    if "intensity" in cols:
        intensity = np.asarray(cols["intensity"], dtype=np.float32)[ok]
    frame_id = msg.header.frame_id or "sensor_optical_frame"
    return SensorFrame(points=pts[ok].astype(np.float32), stamp=_stamp_ns(msg.header.stamp) * 1e-9,
                       frame_id=frame_id, sensor_pose=pose, normals=normals, intensity=intensity, meta=meta)


def _auto_topic(topics: list[McapTopic], schema: str, given: str | None, what: str) -> str | None:
    if given:
        match = [t for t in topics if t.topic == given]
        if not match:
            raise ValueError(f"the recording has no topic {given!r} (topics: {', '.join(t.topic for t in topics)})")
        if match[0].schema != schema:
            raise ValueError(f"topic {given!r} carries {match[0].schema}, not {schema}")
        return given
    cands = [t.topic for t in topics if t.schema == schema]
    if not cands:
        return None
    if len(cands) > 1 and what == "cloud":
        raise ValueError(f"the recording has several {schema} topics ({', '.join(cands)}); choose one with topic=")
    return cands[0]


def iter_pointcloud_mcap(path, *, topic: str | None = None, pose_topic: str | None = None) -> Iterator[SensorFrame]:
    """Yield the clouds of an MCAP recording as :class:`SensorFrame` s, in log-time order.

    Args:
        path: the ``.mcap`` file (a rosbag2 folder works too: its first ``.mcap`` file is read).
        topic: the PointCloud2 topic (None: the only one in the file).
        pose_topic: PoseStamped topic giving each cloud's ``sensor_pose`` by equal stamp (None:
            the PoseStamped topic when the file has exactly one; poses of other stamps are ignored).

    Raises:
        FileNotFoundError, ValueError: missing / unreadable file, no or ambiguous cloud topic,
            malformed messages.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".mcap"))
        if not files:
            raise FileNotFoundError(f"no .mcap file in folder {path}")
        path = os.path.join(path, files[0])
    topics = mcap_topics(path)
    cloud_topic = _auto_topic(topics, "sensor_msgs/msg/PointCloud2", topic, "cloud")
    if cloud_topic is None:
        raise ValueError(f"{path} holds no sensor_msgs/msg/PointCloud2 topic "
                         f"(topics: {', '.join(f'{t.topic} [{t.schema}]' for t in topics) or 'none'})")
    poses_t = pose_topic if pose_topic else None
    if poses_t is None:
        cands = [t.topic for t in topics if t.schema == "geometry_msgs/msg/PoseStamped"]
        poses_t = cands[0] if len(cands) == 1 else None
    else:
        _auto_topic(topics, "geometry_msgs/msg/PoseStamped", poses_t, "pose")
    wanted = [cloud_topic] + ([poses_t] if poses_t else [])
    pending_poses: dict[int, tuple[np.ndarray, str]] = {}
    pending_clouds: list = []
    with _open(path) as fh:
        reader = _reader(fh)
        try:
            for _schema, channel, message, ros_msg in reader.iter_decoded_messages(topics=wanted, log_time_order=True):
                if channel.topic == poses_t:
                    p, q = ros_msg.pose.position, ros_msg.pose.orientation
                    T = pose_to_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])
                    pending_poses[_stamp_ns(ros_msg.header.stamp)] = (T, ros_msg.header.frame_id)
                    still = []
                    for msg, log_ns in pending_clouds:
                        key = _stamp_ns(msg.header.stamp)
                        if key in pending_poses:
                            T, wf = pending_poses.pop(key)
                            yield _pc2_to_frame(msg, T, {"topic": cloud_topic, "log_time_ns": log_ns,
                                                          "pose_frame_id": wf, "source": path})
                        else:
                            still.append((msg, log_ns))
                    pending_clouds = still
                    continue
                key = _stamp_ns(ros_msg.header.stamp)
                if key in pending_poses:
                    T, wf = pending_poses.pop(key)
                    yield _pc2_to_frame(ros_msg, T, {"topic": cloud_topic, "log_time_ns": message.log_time,
                                                     "pose_frame_id": wf, "source": path})
                elif poses_t is None:
                    yield _pc2_to_frame(ros_msg, None, {"topic": cloud_topic, "log_time_ns": message.log_time,
                                                        "source": path})
                else:  # its pose may come right after it
                    pending_clouds.append((ros_msg, message.log_time))
                    if len(pending_clouds) > 1:
                        msg, log_ns = pending_clouds.pop(0)
                        yield _pc2_to_frame(msg, None, {"topic": cloud_topic, "log_time_ns": log_ns, "source": path})
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoder / record errors on corrupt files
            raise ValueError(f"cannot decode {path}: {type(exc).__name__}: {exc}") from exc
    for msg, log_ns in pending_clouds:
        yield _pc2_to_frame(msg, None, {"topic": cloud_topic, "log_time_ns": log_ns, "source": path})


def read_pointcloud_mcap(path, *, topic: str | None = None, pose_topic: str | None = None) -> list[SensorFrame]:
    """All clouds of an MCAP recording (see :func:`iter_pointcloud_mcap`)."""
    return list(iter_pointcloud_mcap(path, topic=topic, pose_topic=pose_topic))
