"""Record ROS messages into a rosbag2 folder (MCAP storage) that ``ros2 bag play`` replays,
without rosbag2 itself (not installable from PyPI): ``mcap`` writes the file, rclpy serialises
to CDR, and the ``ros2msg`` schema is the message definition with its dependencies appended
(each after a line of 80 ``=`` and ``MSG: pkg/Type``), as rosbag2_storage_mcap does.

As rosbag2 (format version 9, ROS 2 Jazzy) writes them: the schema and the topic type are the
full type name ``pkg/msg/Type``; each topic carries the QoS profiles its publishers offered
(``offered_qos_profiles``, in the MCAP channel metadata and in ``metadata.yaml``) and its type
hash (``type_description_hash`` / ``topic_type_hash``), so players and independent readers
(``rosbags``, ``mcap_ros2``) match every message to its topic.
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from rclpy.serialization import serialize_message

__all__ = ["message_definition", "type_name", "type_description_hash", "qos_profile_dict",
           "subscription_qos", "BagWriter", "BAG_VERSION"]

_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
               "uint32", "int64", "uint64", "string", "wstring"}


def type_name(msg_or_cls) -> str:
    """``pkg/msg/Type`` of a message class or instance."""
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    pkg = cls.__module__.split(".")[0]
    return f"{pkg}/msg/{cls.__name__}"


def _msg_file(pkg: str, name: str) -> Path:
    path = Path(get_package_share_directory(pkg)) / "msg" / f"{name}.msg"
    if not path.is_file():
        raise ValueError(f"no message definition file for {pkg}/{name} ({path})")
    return path


def _deps(pkg: str, text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        ftype = words[0]
        if len(words) > 1 and "=" in words[1]:
            continue  # a constant
        base = re.sub(r"(<=\d+)?(\[.*\])?$", "", ftype)
        base = re.sub(r"<=\d+$", "", base)
        if base in _PRIMITIVES:
            continue
        if base == "Header":
            out.append(("std_msgs", "Header"))
        elif "/" in base:
            p, n = base.split("/")[0], base.split("/")[-1]
            out.append((p, n))
        else:
            out.append((pkg, base))
    return out


def message_definition(msg_or_cls) -> str:
    """The full ``ros2msg`` text of a message type: its ``.msg`` then every dependency once."""
    pkg, _, name = type_name(msg_or_cls).split("/")
    text = _msg_file(pkg, name).read_text()
    seen: set[tuple[str, str]] = set()
    order: list[tuple[str, str, str]] = []
    stack = list(reversed(_deps(pkg, text)))
    while stack:
        p, n = stack.pop()
        if (p, n) in seen:
            continue
        seen.add((p, n))
        t = _msg_file(p, n).read_text()
        order.append((p, n, t))
        stack.extend(reversed(_deps(p, t)))
    parts = [text.rstrip("\n")]
    for p, n, t in order:
        parts.append("=" * 80 + f"\nMSG: {p}/{n}\n" + t.rstrip("\n"))
    return "\n".join(parts) + "\n"


#: rosbag2's bag format version written here (the one of ROS 2 Jazzy): QoS policies as names
BAG_VERSION = 9
_INFINITE = {"sec": 9223372036, "nsec": 854775807}   # rmw's "infinite" duration, as rosbag2 writes it


def type_description_hash(msg_or_cls) -> str:
    """The ``RIHS01_...`` type hash of a message type (REP 2011), read from the type description
    rosidl installs beside the ``.msg`` file; empty when the description is not installed.
    """
    import json

    pkg, _, name = type_name(msg_or_cls).split("/")
    try:
        path = Path(get_package_share_directory(pkg)) / "msg" / f"{name}.json"
        doc = json.loads(path.read_text())
    except (OSError, ValueError, LookupError):
        return ""
    full = f"{pkg}/msg/{name}"
    return next((h["hash_string"] for h in doc.get("type_hashes", []) if h.get("type_name") == full), "")


def _duration(d) -> dict:
    """An rclpy Duration as rosbag2's ``{sec, nsec}`` (0 and rmw's infinity both mean "not set")."""
    ns = int(getattr(d, "nanoseconds", 0) or 0)
    if ns <= 0 or ns >= 9223372036854775807:
        return dict(_INFINITE)
    return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}


def qos_profile_dict(qos) -> dict:
    """One rclpy ``QoSProfile`` in rosbag2's ``offered_qos_profiles`` form (format version 9:
    policies by name, durations as ``{sec, nsec}``).
    """
    return {
        "history": qos.history.name.lower(),
        "depth": int(qos.depth),
        "reliability": qos.reliability.name.lower(),
        "durability": qos.durability.name.lower(),
        "deadline": _duration(qos.deadline),
        "lifespan": _duration(qos.lifespan),
        "liveliness": qos.liveliness.name.lower(),
        "liveliness_lease_duration": _duration(qos.liveliness_lease_duration),
        "avoid_ros_namespace_conventions": bool(qos.avoid_ros_namespace_conventions),
    }


def subscription_qos(offered):
    """The QoS a recorder subscribes with to receive every publisher of a topic (what
    ``ros2 bag record`` does): reliable only when every publisher offers reliable, transient
    local only when every publisher offers it (late-joining, the last messages are delivered).
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    offered = list(offered)
    reliable = bool(offered) and all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
    latched = bool(offered) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class BagWriter:
    """A rosbag2 folder with one MCAP file: ``<folder>/<name>_0.mcap`` + ``metadata.yaml``.

    ``record(node, topic, msg_type)`` subscribes as ``ros2 bag record`` does and keeps the QoS
    its publishers offer; ``add_topic`` declares a topic and its offered QoS by hand; thread-safe
    ``write(topic, msg, stamp_ns=None)`` adds one message (a topic written without being declared
    is recorded with no offered QoS, so a player uses its defaults). ``close()`` finishes the file
    and writes the metadata (also on ``with`` exit). Messages are never lost on a later error:
    each is written to the file when it arrives.
    """

    def __init__(self, folder: str | Path):
        from mcap.writer import Writer

        self.folder = Path(folder)
        if self.folder.exists() and any(self.folder.iterdir()):
            raise ValueError(f"bag folder {self.folder} exists and is not empty")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file_name = f"{self.folder.name}_0.mcap"
        self._fh = open(self.folder / self.file_name, "wb")
        self._writer = Writer(self._fh)
        self._writer.start(profile="ros2", library="cosarad_ros")
        self._channels: dict[str, int] = {}
        self._types: dict[str, str] = {}
        self._hashes: dict[str, str] = {}
        self._qos: dict[str, list[dict]] = {}
        self._counts: dict[str, int] = {}
        self._schemas: dict[str, int] = {}
        self._first = self._last = None
        self._lock = threading.Lock()
        self._closed = False

    def add_topic(self, topic: str, msg_type, offered_qos=()) -> None:
        """Declare ``topic`` of ``msg_type`` with the QoS profiles (rclpy ``QoSProfile``) its
        publishers offer.

        Raises:
            ValueError: the topic was already declared with another type, or the bag is closed.
        """
        with self._lock:
            if self._closed:
                raise ValueError("bag is closed")
            self._add_topic(topic, msg_type, [qos_profile_dict(q) for q in offered_qos])

    def _add_topic(self, topic: str, msg_type, qos: list[dict]) -> int:
        tname = type_name(msg_type)
        if topic in self._channels:
            if self._types[topic] != tname:
                raise ValueError(f"topic {topic} is recorded as {self._types[topic]}, not {tname}")
            return self._channels[topic]
        if tname not in self._schemas:
            self._schemas[tname] = self._writer.register_schema(
                name=tname, encoding="ros2msg", data=message_definition(msg_type).encode())
        self._hashes[topic] = type_description_hash(msg_type)
        self._qos[topic] = qos
        self._channels[topic] = self._writer.register_channel(
            topic=topic, message_encoding="cdr", schema_id=self._schemas[tname],
            metadata={"offered_qos_profiles": yaml.safe_dump(qos, sort_keys=False) if qos else "",
                      "topic_type_hash": self._hashes[topic]})
        self._types[topic] = tname
        self._counts[topic] = 0
        return self._channels[topic]

    def record(self, node, topic: str, msg_type, *, wait: float = 5.0, then=None):
        """Subscribe ``node`` to ``topic`` and write every message it receives, keeping the QoS
        its publishers offer (see :func:`subscription_qos`); ``then(msg)`` is called after each
        message is written. Returns the subscription.

        Raises:
            ValueError: no publisher of ``topic`` appeared within ``wait`` seconds.
        """
        end = time.monotonic() + wait
        infos = node.get_publishers_info_by_topic(topic)
        while not infos and time.monotonic() < end:
            time.sleep(0.05)
            infos = node.get_publishers_info_by_topic(topic)
        if not infos:
            raise ValueError(f"no publisher of {topic} within {wait:g} s: nothing to record")
        offered = [i.qos_profile for i in infos]
        self.add_topic(topic, msg_type, offered)
        def on_message(m):
            self.write(topic, m)
            if then is not None:
                then(m)

        return node.create_subscription(msg_type, topic, on_message, subscription_qos(offered))

    def write(self, topic: str, msg, stamp_ns: int | None = None) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("bag is closed")
            t = int(stamp_ns if stamp_ns is not None else time.time_ns())
            ch = self._add_topic(topic, type(msg), [])
            self._writer.add_message(channel_id=ch, log_time=t, publish_time=t, data=serialize_message(msg),
                                     sequence=self._counts[topic])
            self._counts[topic] += 1
            self._first = t if self._first is None else min(self._first, t)
            self._last = t if self._last is None else max(self._last, t)

    def flush(self) -> None:
        """Write every message received so far to the MCAP file (the chunk in progress is finished)
        and sync it to disk, so that a later crash or Ctrl-C cannot lose them.
        """
        with self._lock:
            if self._closed:
                return
            self._writer.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> Path:
        with self._lock:
            if self._closed:
                return self.folder
            self._closed = True
            self._writer.finish()
            self._fh.close()
            start = self._first or 0
            dur = (self._last or 0) - start
            total = sum(self._counts.values())
            meta = {"rosbag2_bagfile_information": {
                "version": BAG_VERSION, "storage_identifier": "mcap",
                "duration": {"nanoseconds": dur}, "starting_time": {"nanoseconds_since_epoch": start},
                "message_count": total,
                "topics_with_message_count": [
                    {"topic_metadata": {"name": t, "type": self._types[t], "serialization_format": "cdr",
                                        "offered_qos_profiles": self._qos[t],
                                        "type_description_hash": self._hashes[t]},
                     "message_count": self._counts[t]} for t in self._channels],
                "compression_format": "", "compression_mode": "",
                "relative_file_paths": [self.file_name],
                "files": [{"path": self.file_name, "starting_time": {"nanoseconds_since_epoch": start},
                           "duration": {"nanoseconds": dur}, "message_count": total}],
                "custom_data": {}, "ros_distro": os.environ.get("ROS_DISTRO", "jazzy"),
            }}
            (self.folder / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
            return self.folder

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
