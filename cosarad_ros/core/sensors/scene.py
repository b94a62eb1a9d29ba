"""The simulated inspection cell that the simulated sensors ray-cast: a part, an optional
fixture, an optional table and any other obstacles, each a triangle mesh in metres placed by a
``(4, 4)`` pose in the world frame.

Ray casting uses Open3D's ``RaycastingScene`` (Embree BVH; Wald et al., "Embree: a kernel
framework for efficient CPU ray tracing", ACM TOG 2014), which runs headless. The BVH is built
lazily and rebuilt when an object changes; a lock makes ``set_part`` safe while another thread
is scanning.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from cosarad_ros.core.geometry import as_transform, look_at, transform_points

__all__ = ["SimulatedScene", "RayHits", "SceneObject", "as_mesh_arrays", "default_viewpoint",
           "LABEL_NONE", "PART", "FIXTURE", "TABLE"]

PART, FIXTURE, TABLE = "part", "fixture", "table"
#: label of a ray that hit nothing
LABEL_NONE = -1


@dataclass(frozen=True)
class SceneObject:
    """One object of the scene: its mesh in its own frame and its pose in the world."""

    name: str
    vertices: np.ndarray   # (V, 3) float64, object frame, metres
    faces: np.ndarray      # (F, 3) int64
    pose: np.ndarray       # (4, 4) object -> world

    def world_vertices(self) -> np.ndarray:
        return transform_points(self.pose, self.vertices)

    def bounds(self) -> np.ndarray:
        """``(2, 3)`` axis-aligned bounds in the world frame."""
        w = self.world_vertices()
        return np.stack([w.min(axis=0), w.max(axis=0)])


@dataclass(frozen=True)
class RayHits:
    """Result of :meth:`SimulatedScene.cast`.

    Attributes:
        t: ``(N,)`` float64 distance along the (unit) ray, ``inf`` for a miss.
        normals: ``(N, 3)`` float32 unit face normals in the world frame, as wound by the mesh
            (not flipped towards the ray); zeros for a miss.
        labels: ``(N,)`` int32 index into :attr:`SimulatedScene.object_names` of the object hit,
            :data:`LABEL_NONE` for a miss.
    """

    t: np.ndarray
    normals: np.ndarray
    labels: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return np.isfinite(self.t)


def as_mesh_arrays(mesh, *, name: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` float64 and faces ``(F, 3)`` int64 of a mesh given as a
    ``trimesh.Trimesh``, an Open3D (legacy or tensor) triangle mesh, a ``(vertices, faces)`` pair
    or a file path (read with :func:`cosarad_ros.core.io.read_mesh`).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: no triangles, bad shapes, non-finite vertices, out-of-range indices.
    """
    if isinstance(mesh, (str, os.PathLike)):
        mesh = _read_mesh_file(os.fspath(mesh))
    if isinstance(mesh, tuple) and len(mesh) == 2:
        v, f = mesh
    elif hasattr(mesh, "vertices") and hasattr(mesh, "faces"):  # trimesh
        v, f = mesh.vertices, mesh.faces
    elif hasattr(mesh, "vertices") and hasattr(mesh, "triangles"):  # open3d legacy
        v, f = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    elif hasattr(mesh, "vertex") and hasattr(mesh, "triangle"):  # open3d tensor
        v, f = mesh.vertex.positions.numpy(), mesh.triangle.indices.numpy()
    else:
        raise ValueError(f"{name}: unsupported mesh type {type(mesh).__name__}; "
                         "give a trimesh.Trimesh, an Open3D TriangleMesh, (vertices, faces) or a path")
    v = np.asarray(v, dtype=np.float64)
    f = np.asarray(f)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 3:
        raise ValueError(f"{name}: vertices must have shape (V>=3, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] == 0:
        raise ValueError(f"{name}: needs at least one triangle, faces have shape {f.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name}: vertices contain NaN/inf")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise ValueError(f"{name}: face indices out of range [0, {v.shape[0]})")
    return v, f


def _read_mesh_file(path: str):
    from cosarad_ros.core.io import read_mesh

    return read_mesh(path)


def _box(size_xyz, center) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box mesh with outward-wound faces."""
    sx, sy, sz = (np.asarray(size_xyz, dtype=np.float64) / 2.0)
    c = np.asarray(center, dtype=np.float64)
    v = np.array([[x, y, z] for x in (-sx, sx) for y in (-sy, sy) for z in (-sz, sz)]) + c
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v, f


class SimulatedScene:
    """Meshes placed in the world frame, ray-cast by the simulated sensors.

    Example::

        scene = SimulatedScene()
        scene.set_table(top_z=0.0)
        scene.set_part(mesh, pose=scene.resting_pose(mesh))
        hits = scene.cast(origins, directions)

    Object names are free; ``part``, ``fixture`` and ``table`` have setters. Each hit reports
    which object it belongs to (``RayHits.labels`` indexes :attr:`object_names`), which lets
    tests and the data layer tell part points from table points.
    """

    def __init__(self):
        self._objects: dict[str, SceneObject] = {}
        self._lock = threading.RLock()
        self._rc = None          # open3d RaycastingScene, built lazily
        self._rc_names: list[str] = []
        self.version = 0         # bumped on every change
        self.part_id = ""

    # building -----------------------------------------------------------------------------

    def add_object(self, name: str, mesh, pose=None) -> None:
        """Add or replace object ``name`` (mesh in metres, ``pose`` object -> world)."""
        if not name:
            raise ValueError("object name must not be empty")
        v, f = as_mesh_arrays(mesh, name=name)
        T = np.eye(4) if pose is None else as_transform(pose, name=f"{name} pose")
        with self._lock:
            self._objects[name] = SceneObject(name, v, f, T)
            self._invalidate()

    def remove_object(self, name: str) -> None:
        """Remove object ``name`` (no error when absent)."""
        with self._lock:
            if self._objects.pop(name, None) is not None:
                self._invalidate()

    def set_part(self, mesh, pose=None, *, part_id: str = "") -> None:
        """Place the part to inspect (replaces the previous one).

        Args:
            mesh: the part mesh in metres in the part frame (see :func:`as_mesh_arrays`).
            pose: ``(4, 4)`` part -> world (identity when None).
            part_id: free text kept for reports.
        """
        self.add_object(PART, mesh, pose)
        self.part_id = part_id

    def set_part_pose(self, pose) -> None:
        """Move the part without changing its mesh."""
        with self._lock:
            obj = self._require(PART)
            self._objects[PART] = SceneObject(PART, obj.vertices, obj.faces, as_transform(pose, name="part pose"))
            self._invalidate()

    def clear_part(self) -> None:
        self.remove_object(PART)
        self.part_id = ""

    def set_fixture(self, mesh, pose=None) -> None:
        """Place the fixture (clamp, jig) holding the part."""
        self.add_object(FIXTURE, mesh, pose)

    def set_table(self, *, top_z: float = 0.0, size=(1.2, 0.8), thickness: float = 0.03,
                  center_xy=(0.0, 0.0)) -> None:
        """Add a box-shaped table whose top face is the plane ``z = top_z`` (world frame).

        Args:
            top_z: height of the table top [m].
            size: ``(x, y)`` extent of the top [m].
            thickness: box height [m].
            center_xy: centre of the top in the world x-y plane [m].
        """
        sx, sy = (float(s) for s in size)
        if sx <= 0 or sy <= 0 or thickness <= 0:
            raise ValueError(f"table size and thickness must be > 0, got size={size}, thickness={thickness}")
        v, f = _box((sx, sy, thickness), (center_xy[0], center_xy[1], top_z - thickness / 2.0))
        self.add_object(TABLE, (v, f), np.eye(4))

    @property
    def lock(self) -> threading.RLock:
        """The scene's re-entrant lock: hold it to keep the scene unchanged over several casts."""
        return self._lock

    @classmethod
    def inspection_cell(cls, *, table_top_z: float = 0.0, table_size=(1.40, 1.20), table_center_xy=(0.30, 0.0),
                        fixture_xy=(0.45, 0.0), fixture_height: float = 0.12,
                        fixture_radius: float = 0.05) -> "SimulatedScene":
        """The default cell of ``urdf/cosarad_cell.urdf.xacro``: a table whose top is the world
        plane ``z = table_top_z`` and a cylindrical fixture standing on it; the part goes on the
        fixture with :meth:`place_part`. All sizes in metres.
        """
        import trimesh

        if fixture_height <= 0 or fixture_radius <= 0:
            raise ValueError("fixture_height and fixture_radius must be > 0")
        scene = cls()
        scene.set_table(top_z=table_top_z, size=table_size, center_xy=table_center_xy)
        fixture = trimesh.creation.cylinder(radius=fixture_radius, height=fixture_height, sections=48)
        T = np.eye(4)
        T[:3, 3] = [fixture_xy[0], fixture_xy[1], table_top_z + fixture_height / 2.0]
        scene.set_fixture(fixture, T)
        return scene

    def support_top(self) -> float:
        """Height of the surface a part rests on: the fixture top, else the table top, else 0."""
        for name in (FIXTURE, TABLE):
            if name in self._objects:
                return float(self.bounds(name)[1, 2])
        return 0.0

    def place_part(self, mesh, *, xy=None, rotation=None, part_id: str = "") -> np.ndarray:
        """Put the part resting on the support (fixture, else table) with its bounding-box centre
        above ``xy`` (default: the fixture's axis, else the world origin).

        Returns:
            the ``(4, 4)`` part -> world pose used.
        """
        v, f = as_mesh_arrays(mesh)
        if xy is None:
            xy = self.bounds(FIXTURE).mean(axis=0)[:2] if FIXTURE in self._objects else (0.0, 0.0)
        pose = self.resting_pose((v, f), table_top_z=self.support_top(), xy=xy, rotation=rotation)
        self.set_part((v, f), pose, part_id=part_id)
        return pose

    # queries ------------------------------------------------------------------------------

    @property
    def object_names(self) -> tuple[str, ...]:
        """Names in label order of the last built ray-casting scene."""
        with self._lock:
            self._ensure_built()
            return tuple(self._rc_names)

    def has(self, name: str) -> bool:
        return name in self._objects

    def get(self, name: str) -> SceneObject:
        with self._lock:
            return self._require(name)

    @property
    def part_pose(self) -> np.ndarray:
        return self.get(PART).pose.copy()

    def label_of(self, name: str) -> int:
        """Label value of object ``name`` in :class:`RayHits` (``LABEL_NONE`` when absent)."""
        names = self.object_names
        return names.index(name) if name in names else LABEL_NONE

    def bounds(self, names=None) -> np.ndarray:
        """``(2, 3)`` world bounds of the named objects (all when None).

        Raises:
            ValueError: the scene (or the selection) is empty.
        """
        with self._lock:
            sel = list(self._objects) if names is None else [names] if isinstance(names, str) else list(names)
            objs = [self._objects[n] for n in sel if n in self._objects]
            if not objs:
                raise ValueError(f"scene has no object among {sel}")
            b = np.stack([o.bounds() for o in objs])
            return np.stack([b[:, 0].min(axis=0), b[:, 1].max(axis=0)])

    @staticmethod
    def resting_pose(mesh, *, table_top_z: float = 0.0, xy=(0.0, 0.0), rotation=None) -> np.ndarray:
        """Pose that puts the (rotated) mesh's lowest point on ``z = table_top_z`` with its
        bounding-box centre above ``xy``. ``rotation``: optional ``(3, 3)`` applied first.
        """
        v, _ = as_mesh_arrays(mesh)
        R = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
        w = v @ R.T
        lo, hi = w.min(axis=0), w.max(axis=0)
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = [xy[0] - (lo[0] + hi[0]) / 2.0, xy[1] - (lo[1] + hi[1]) / 2.0, table_top_z - lo[2]]
        return T

    def cast(self, origins, directions) -> RayHits:
        """Cast rays in the world frame.

        Args:
            origins: ``(N, 3)`` or ``(3,)`` (shared origin).
            directions: ``(N, 3)`` unit directions.

        Returns:
            :class:`RayHits` (all misses when the scene is empty).
        """
        import open3d as o3d

        d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        o = np.broadcast_to(np.asarray(origins, dtype=np.float64).reshape(-1, 3), d.shape)
        n = d.shape[0]
        with self._lock:
            self._ensure_built()
            rc = self._rc
        if rc is None or n == 0:
            return RayHits(np.full(n, np.inf), np.zeros((n, 3), np.float32), np.full(n, LABEL_NONE, np.int32))
        rays = np.empty((n, 6), dtype=np.float32)
        rays[:, :3] = o
        rays[:, 3:] = d
        out = rc.cast_rays(o3d.core.Tensor.from_numpy(rays))
        t = out["t_hit"].numpy().astype(np.float64)
        miss = ~np.isfinite(t)
        labels = out["geometry_ids"].numpy().astype(np.int32)
        labels[miss] = LABEL_NONE
        nrm = out["primitive_normals"].numpy()     # unit face normals (float32)
        nrm[miss] = 0.0
        return RayHits(t, nrm, labels)

    # internals ----------------------------------------------------------------------------

    def _require(self, name: str) -> SceneObject:
        if name not in self._objects:
            raise ValueError(f"the scene has no {name!r} (objects: {', '.join(self._objects) or 'none'})")
        return self._objects[name]

    def _invalidate(self) -> None:
        self._rc = None
        self.version += 1

    def _ensure_built(self) -> None:
        if self._rc is not None or not self._objects:
            if not self._objects:
                self._rc, self._rc_names = None, []
            return
        import open3d as o3d

        rc = o3d.t.geometry.RaycastingScene()
        names = []
        for name, obj in self._objects.items():
            gid = rc.add_triangles(o3d.core.Tensor(obj.world_vertices().astype(np.float32)),
                                   o3d.core.Tensor(obj.faces.astype(np.uint32)))
            if gid != len(names):  # Open3D numbers geometries 0, 1, 2... in insertion order
                raise RuntimeError(f"unexpected Open3D geometry id {gid} for {name}")
            names.append(name)
        self._rc, self._rc_names = rc, names


def default_viewpoint(target, working_distance: float, *, elevation_deg: float = 60.0,
                      azimuth_deg: float = -90.0, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Sensor pose looking at the centre of ``target`` from ``working_distance``.

    Args:
        target: a :class:`SimulatedScene` (its part, else everything), a mesh, ``(2, 3)`` bounds
            or a ``(3,)`` point, in the world frame.
        working_distance: distance from the optical centre to the target centre [m].
        elevation_deg: angle of the line of sight above the world x-y plane (90 = straight down).
        azimuth_deg: direction, about world z, from the target to the sensor (-90 = from -y).
        up: world direction that appears "up" in the image.

    Returns:
        ``(4, 4)`` optical -> world pose (REP 103 optical frame, z towards the target).
    """
    if not working_distance > 0:
        raise ValueError(f"working_distance must be > 0, got {working_distance}")
    if isinstance(target, SimulatedScene):
        b = target.bounds(PART if target.has(PART) else None)
        center = b.mean(axis=0)
    else:
        arr = None
        if (not hasattr(target, "vertices") and not hasattr(target, "vertex")
                and not isinstance(target, (str, os.PathLike, tuple))):
            arr = np.asarray(target, dtype=np.float64)
        if arr is not None and arr.shape == (3,):
            center = arr
        elif arr is not None and arr.shape == (2, 3):
            center = arr.mean(axis=0)
        else:
            v, _ = as_mesh_arrays(target)
            center = (v.min(axis=0) + v.max(axis=0)) / 2.0
    el, az = np.radians(elevation_deg), np.radians(azimuth_deg)
    direction = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    eye = center + working_distance * direction
    return look_at(eye, center, up=up)
