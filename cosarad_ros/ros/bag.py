"""Record ROS messages into a rosbag2 folder (MCAP storage) that ``ros2 bag play`` replays,
without rosbag2 itself (not installable from PyPI): ``mcap`` writes the file, rclpy serialises
to CDR, and the ``ros2msg`` schema is the message definition with its dependencies appended
(each after a line of 80 ``=`` and ``MSG: pkg/Type``), as rosbag2_storage_mcap does.
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

__all__ = ["message_definition", "type_name", "BagWriter"]

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


_LATCHED_QOS_YAML = ("- history: 1\n  depth: 1\n  reliability: 1\n  durability: 1\n"
                     "  deadline:\n    sec: 9223372036\n    nsec: 854775807\n"
                     "  lifespan:\n    sec: 9223372036\n    nsec: 854775807\n"
                     "  liveliness: 1\n  liveliness_lease_duration:\n    sec: 9223372036\n    nsec: 854775807\n"
                     "  avoid_ros_namespace_conventions: false")


class BagWriter:
    """A rosbag2 folder with one MCAP file: ``<folder>/<name>_0.mcap`` + ``metadata.yaml``.

    Thread-safe ``write(topic, msg, stamp_ns=None)``; ``close()`` finishes the file and writes
    the metadata (also on ``with`` exit). Messages are never lost on a later error: each is
    written to the file when it arrives.
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
        self._counts: dict[str, int] = {}
        self._first = self._last = None
        self._lock = threading.Lock()
        self._closed = False

    def _channel(self, topic: str, msg) -> int:
        if topic not in self._channels:
            tname = type_name(msg)
            schema = self._writer.register_schema(name=tname.replace("/msg/", "/"), encoding="ros2msg",
                                                  data=message_definition(msg).encode())
            self._channels[topic] = self._writer.register_channel(
                topic=topic, message_encoding="cdr", schema_id=schema,
                metadata={"offered_qos_profiles": _LATCHED_QOS_YAML})
            self._types[topic] = tname
            self._counts[topic] = 0
        return self._channels[topic]

    def write(self, topic: str, msg, stamp_ns: int | None = None) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("bag is closed")
            t = int(stamp_ns if stamp_ns is not None else time.time_ns())
            ch = self._channel(topic, msg)
            self._writer.add_message(channel_id=ch, log_time=t, publish_time=t, data=serialize_message(msg),
                                     sequence=self._counts[topic])
            self._counts[topic] += 1
            self._first = t if self._first is None else min(self._first, t)
            self._last = t if self._last is None else max(self._last, t)

    def flush(self) -> None:
        """Write every message received so far to the MCAP file (the chunk in progress is finished)
        and sync it to disk, so that a later crash or Ctrl-C cannot lose them."""
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
                "version": 5, "storage_identifier": "mcap",
                "duration": {"nanoseconds": dur}, "starting_time": {"nanoseconds_since_epoch": start},
                "message_count": total,
                "topics_with_message_count": [
                    {"topic_metadata": {"name": t, "type": self._types[t], "serialization_format": "cdr",
                                        "offered_qos_profiles": _LATCHED_QOS_YAML},
                     "message_count": self._counts[t]} for t in self._channels],
                "compression_format": "", "compression_mode": "",
                "relative_file_paths": [self.file_name],
                "files": [{"path": self.file_name, "starting_time": {"nanoseconds_since_epoch": start},
                           "duration": {"nanoseconds": dur}, "message_count": total}],
            }}
            (self.folder / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
            return self.folder

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
