"""Replay backend: serve recorded clouds as if a sensor took them.

Sources: point-cloud files (``.pcd``, ``.ply``, ``.xyz``, ``.xyzn``, ``.xyzrgb``, ``.pts``,
``.npy``), meshes (``.stl``, ``.obj``, ``.off``, ``.glb``, ``.gltf`` and ``.ply`` files with
faces, sampled uniformly on the surface: an ideal scan), and rosbag2 MCAP recordings (a
``.mcap`` file or a rosbag2 folder; see :mod:`cosarad_ros.core.sensors.mcap_io`). ``path`` may
be one file, a folder (every supported file in name order), a glob pattern or a list of those.

Each ``grab`` returns the next cloud; after the last one the replay starts over (``loop``) or
raises :class:`~cosarad_ros.core.sensors.base.SensorTimeoutError` ("recording finished").
"""
from __future__ import annotations

import glob
import os
import time
from typing import Iterator, Sequence

import numpy as np

from cosarad_ros.core import io as cio
from cosarad_ros.core.geometry import as_transform, transform_points

from .base import DEFAULT_FRAME_ID, Sensor, SensorFrame, SensorNotFoundError, SensorTimeoutError, register_sensor

__all__ = ["ReplaySensor", "load_cloud_file", "POINT_EXTENSIONS", "MESH_EXTENSIONS"]

POINT_EXTENSIONS = tuple(e for e in cio.POINT_EXTENSIONS if e != ".ply") + (".npy",)
MESH_EXTENSIONS = cio.MESH_EXTENSIONS
_ALL = tuple(dict.fromkeys(POINT_EXTENSIONS + MESH_EXTENSIONS + (".mcap",)))


def load_cloud_file(path, *, mesh_points: int = 100_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Read points (and normals when the file has them) from a point-cloud or mesh file.

    Formats are those of :func:`cosarad_ros.core.io.read_point_cloud` (meshes are sampled
    area-uniformly, ``mesh_points`` points with ``seed``) plus ``.npy`` arrays of shape
    ``(N, 3)`` or ``(N, 6)`` (points and normals).

    Returns:
        ``points (N, 3)`` float64 and ``normals (N, 3)`` or None.

    Raises:
        FileNotFoundError: missing file. ValueError: unsupported, corrupt or empty file.
    """
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() == ".npy":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cloud file not found: {path}")
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy raises several types on corrupt files
            raise ValueError(f"{path}: cannot read .npy cloud ({exc})") from exc
        if arr.ndim != 2 or arr.shape[1] not in (3, 6):
            raise ValueError(f"{path}: .npy clouds must have shape (N, 3) or (N, 6), got {arr.shape}")
        pts = arr[:, :3].astype(np.float64)
        nrm = arr[:, 3:6].astype(np.float64) if arr.shape[1] == 6 else None
        return _finite(pts, nrm, path)
    if int(mesh_points) < 1:
        raise ValueError(f"mesh_points must be >= 1, got {mesh_points}")
    pc = cio.read_point_cloud(path, mesh_samples=int(mesh_points), seed=seed)
    return pc.points, pc.normals


def _finite(pts, nrm, path):
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise ValueError(f"{path} holds no points")
    ok = np.isfinite(pts).all(axis=1)
    if not ok.any():
        raise ValueError(f"{path}: every point is NaN/inf")
    return pts[ok], (None if nrm is None or nrm.shape != pts.shape else nrm[ok])


@register_sensor("replay")
class ReplaySensor(Sensor):
    """Serve clouds from files or MCAP recordings.

    Args:
        path: file, folder, glob pattern, rosbag2 folder / ``.mcap`` file, or a list of those.
        topic: PointCloud2 topic of MCAP sources (None: the only one).
        pose_topic: PoseStamped topic of MCAP sources (None: the only one, if any).
        loop: start over after the last cloud (else ``grab`` raises SensorTimeoutError).
        restamp: stamp clouds with the time of the grab; when False, MCAP clouds keep their
            recorded stamps (files always get the grab time).
        frame_id: optical frame name; None keeps the recorded one (files: ``sensor_optical_frame``).
        transform: optional ``(4, 4)`` applied to every cloud (file frame -> optical frame).
        mesh_points: points sampled on mesh files.
        seed: mesh sampling seed.
    """

    type_name = "replay"

    def __init__(self, *, path: str | Sequence[str], topic: str | None = None, pose_topic: str | None = None,
                 loop: bool = True, restamp: bool = False, frame_id: str | None = None, transform=None,
                 mesh_points: int = 100_000, seed: int = 0):
        super().__init__(frame_id=frame_id or DEFAULT_FRAME_ID)
        if not path:
            raise ValueError("replay needs a path (file, folder, glob pattern or list)")
        self.path = path
        self.topic, self.pose_topic = topic or None, pose_topic or None
        self.loop, self.restamp = bool(loop), bool(restamp)
        self.frame_id_override = frame_id or None
        self.transform = None if transform is None else as_transform(transform, name="transform")
        if int(mesh_points) < 1:
            raise ValueError(f"mesh_points must be >= 1, got {mesh_points}")
        self.mesh_points, self.seed = int(mesh_points), int(seed)
        self.sources: list[str] = []
        self._it: Iterator[SensorFrame] | None = None
        self.position = 0          # index of the next cloud in the current pass
        self.passes = 0

    def _resolve(self) -> list[str]:
        items = [self.path] if isinstance(self.path, (str, os.PathLike)) else list(self.path)
        out: list[str] = []
        for item in items:
            item = os.fspath(item)
            if os.path.isdir(item):
                if glob.glob(os.path.join(item, "*.mcap")) and os.path.exists(os.path.join(item, "metadata.yaml")):
                    out.append(item)  # rosbag2 folder
                    continue
                out += sorted(f for f in glob.glob(os.path.join(item, "*"))
                              if os.path.splitext(f)[1].lower() in _ALL)
            elif os.path.isfile(item):
                out.append(item)
            else:
                out += sorted(f for f in glob.glob(item) if os.path.splitext(f)[1].lower() in _ALL)
        return out

    def _connect(self) -> None:
        sources = self._resolve()
        if not sources:
            raise SensorNotFoundError(f"replay: nothing to replay at {self.path!r} (supported: {', '.join(_ALL)})")
        self.sources = sources
        self._it = self._frames()
        self.position, self.passes = 0, 0

    def _close(self) -> None:
        if self._it is not None:
            self._it.close()
        self._it = None

    def _frames(self) -> Iterator[SensorFrame]:
        from .mcap_io import iter_pointcloud_mcap

        for src in self.sources:
            if src.lower().endswith(".mcap") or os.path.isdir(src):
                for f in iter_pointcloud_mcap(src, topic=self.topic, pose_topic=self.pose_topic):
                    yield f
            else:
                pts, nrm = load_cloud_file(src, mesh_points=self.mesh_points, seed=self.seed)
                yield SensorFrame(points=pts.astype(np.float32), stamp=time.time(), frame_id=self.frame_id,
                                  normals=None if nrm is None else nrm.astype(np.float32),
                                  meta={"source": src})

    def _grab(self, sensor_pose):
        try:
            rec = next(self._it)
        except StopIteration:
            if not self.loop or self.position == 0:
                raise SensorTimeoutError(f"replay finished after {self.position} cloud(s) of {self.path!r}") from None
            self._it = self._frames()
            self.position, self.passes = 0, self.passes + 1
            rec = next(self._it)
        except (ValueError, FileNotFoundError) as exc:  # a corrupt or vanished recording
            raise SensorTimeoutError(f"replay: {exc}") from exc
        self.position += 1
        pts, nrm = rec.points, rec.normals
        if self.transform is not None:
            pts = transform_points(self.transform, pts).astype(np.float32)
            if nrm is not None:
                nrm = (nrm.astype(np.float64) @ self.transform[:3, :3].T).astype(np.float32)
        pose = rec.sensor_pose if rec.sensor_pose is not None else sensor_pose
        frame_id = self.frame_id_override or rec.frame_id
        meta = dict(rec.meta)
        meta.update({"sensor_type": self.type_name, "index": self.position - 1, "pass": self.passes,
                     "recorded_stamp": rec.stamp})
        return SensorFrame(points=pts, stamp=time.time() if self.restamp else rec.stamp, frame_id=frame_id,
                           sensor_pose=pose, normals=nrm, intensity=rec.intensity, height_map=rec.height_map,
                           meta=meta)

    def info(self):
        out = super().info()
        out.update({"sources": len(self.sources), "position": self.position, "passes": self.passes})
        return out
