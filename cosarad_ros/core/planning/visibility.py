"""Sensor view model and visibility of surface samples by ray casting.

A surface point ``p`` (normal ``n``) is measured from a sensor pose when (Scott, Roth & Rivest,
"View planning for automated three-dimensional object reconstruction and inspection", ACM
Computing Surveys 35(1), 2003, sec. 3; Tarabanis, Allen & Tsai, "A survey of sensor planning in
computer vision", IEEE T-RA 11(1), 1995):

* it lies inside the field of view (rectangular frustum, half angles ``fov/2``),
* its depth along the optical axis lies in the working range ``[near, far]``,
* the angle between the viewing ray and ``n`` is at most ``max_incidence_deg`` (structured
  light loses its pattern at grazing angles; back faces are never seen),
* nothing (the part itself, the fixture, the table) hides it: the first hit of the ray from the
  optical centre is ``p`` itself (Open3D ``RaycastingScene``, Embree),
* with ``baseline > 0``, the same holds from the projector, ``baseline`` metres along the
  optical x axis (a triangulation sensor needs both the camera and the projector to see ``p``).

Everything here is in the part frame.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from cosarad_ros.core.geometry import as_transform

__all__ = ["SensorViewModel", "SurfaceSamples", "sample_surface", "VisibilityModel", "load_sensor_presets"]


def load_sensor_presets(path=None) -> dict:
    """Sensor presets of ``urdf/sensors.yaml`` (or ``path``): ``name -> dict``."""
    import yaml

    if path is None:
        from cosarad_ros.core.planning.cell import urdf_dir

        path = urdf_dir() / "sensors.yaml"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sensor presets not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path} holds no sensor presets")
    return data


@dataclass(frozen=True)
class SensorViewModel:
    """What a 3D sensor measures from a pose. Defaults: a MotionCam-3D S-class structured-light
    camera (rounded datasheet figures; see ``urdf/sensors.yaml``).

    Attributes:
        fov_deg: ``(horizontal, vertical)`` full field-of-view angles [deg].
        near, far: working range, depth along the optical axis [m].
        optimal_distance: stand-off the planner places candidate views at [m].
        max_incidence_deg: largest angle between viewing ray and surface normal [deg].
        baseline: camera-projector distance along the optical x axis [m]; 0 ignores the projector.
        name: preset name (informative).
    """

    fov_deg: tuple = (47.0, 37.0)
    near: float = 0.38
    far: float = 0.55
    optimal_distance: float = 0.44
    max_incidence_deg: float = 70.0
    baseline: float = 0.12
    name: str = "motioncam3d_s"

    def __post_init__(self):
        fov = tuple(float(x) for x in np.asarray(self.fov_deg, dtype=np.float64).reshape(-1))
        if len(fov) != 2 or not all(0.0 < f < 180.0 for f in fov):
            raise ValueError(f"fov_deg must be two angles in (0, 180), got {self.fov_deg}")
        object.__setattr__(self, "fov_deg", fov)
        if not (0.0 < self.near < self.far):
            raise ValueError(f"working range must satisfy 0 < near < far, got near={self.near}, far={self.far}")
        if not (self.near <= self.optimal_distance <= self.far):
            raise ValueError(f"optimal_distance {self.optimal_distance} must lie in [near, far] = "
                             f"[{self.near}, {self.far}]")
        if not (0.0 < self.max_incidence_deg <= 90.0):
            raise ValueError(f"max_incidence_deg must be in (0, 90], got {self.max_incidence_deg}")
        if self.baseline < 0:
            raise ValueError(f"baseline must be >= 0, got {self.baseline}")

    @classmethod
    def preset(cls, name: str, path=None, **overrides) -> "SensorViewModel":
        """A preset of ``urdf/sensors.yaml`` (``motioncam3d_s``, ``motioncam3d_m``, ``compact``),
        with optional field overrides.
        """
        presets = load_sensor_presets(path)
        if name not in presets:
            raise ValueError(f"unknown sensor preset '{name}' (known: {', '.join(sorted(presets))})")
        p = presets[name]
        kw = dict(fov_deg=tuple(p["fov_deg"]), near=float(p["range"][0]), far=float(p["range"][1]),
                  optimal_distance=float(p["optimal_distance"]), max_incidence_deg=float(p["max_incidence_deg"]),
                  baseline=float(p.get("baseline", 0.0)), name=name)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown sensor field(s) {', '.join(unknown)}")
        kw.update(overrides)
        return cls(**kw)

    def scanner_kwargs(self) -> dict:
        """The matching arguments of the simulated structured-light sensor
        (``make_sensor({"type": "motioncam", **sensor.scanner_kwargs()})``), so simulated scans
        see what the planner expects.
        """
        return {"fov_deg": tuple(self.fov_deg), "working_range": (self.near, self.far),
                "working_distance": self.optimal_distance, "baseline": self.baseline}

    @property
    def tan_half_fov(self) -> np.ndarray:
        return np.tan(np.deg2rad(np.asarray(self.fov_deg)) / 2.0)

    def footprint(self, distance: float | None = None) -> tuple[float, float]:
        """Width and height of the field of view at ``distance`` (default optimal) [m]."""
        d = self.optimal_distance if distance is None else float(distance)
        t = self.tan_half_fov
        return float(2 * d * t[0]), float(2 * d * t[1])


@dataclass(frozen=True)
class SurfaceSamples:
    """Area-weighted samples of a mesh surface (part frame).

    Attributes:
        points: ``(N, 3)`` positions [m].
        normals: ``(N, 3)`` unit outward normals.
        areas: ``(N,)`` surface area each sample stands for [m^2] (sums to the mesh area).
        faces: ``(N,)`` index of the mesh face each sample lies on.
    """

    points: np.ndarray
    normals: np.ndarray
    areas: np.ndarray
    faces: np.ndarray

    @property
    def total_area(self) -> float:
        return float(self.areas.sum())

    def __len__(self) -> int:
        return int(self.points.shape[0])


def _check_mesh(mesh, name: str = "mesh"):
    import trimesh

    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"{name} must be a trimesh.Trimesh, got {type(mesh).__name__}")
    if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise ValueError(f"{name} is empty (no faces)")
    if not np.isfinite(mesh.vertices).all():
        raise ValueError(f"{name} has non-finite vertices")
    if mesh.area <= 0:
        raise ValueError(f"{name} has zero surface area")
    return mesh


def sample_surface(mesh, n: int = 4000, *, seed: int = 0) -> SurfaceSamples:
    """Stratified area-weighted surface samples: every face gets ``floor(n * a_f / A)`` samples
    plus one more with probability of the remainder (so small faces are not all skipped and the
    estimate of covered area is unbiased); each sample carries ``A / N`` of area.

    Args:
        mesh: trimesh (metres, part frame). Faces with zero area are ignored.
        n: about how many samples.
        seed: random seed.

    Returns:
        :class:`SurfaceSamples` with ``N ~ n`` samples.
    """
    mesh = _check_mesh(mesh)
    if n < 10:
        raise ValueError(f"n must be >= 10, got {n}")
    rng = np.random.default_rng(seed)
    areas = np.asarray(mesh.area_faces, dtype=np.float64)
    total = float(areas.sum())
    expected = n * areas / total
    counts = np.floor(expected).astype(int)
    counts += rng.random(len(areas)) < (expected - counts)
    if counts.sum() == 0:
        counts[np.argmax(areas)] = 1
    face_idx = np.repeat(np.arange(len(areas)), counts)
    tri = np.asarray(mesh.triangles, dtype=np.float64)[face_idx]
    u, v = rng.random((2, len(face_idx)))
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    pts = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    normals = np.asarray(mesh.face_normals, dtype=np.float64)[face_idx]
    # each face's area is shared among its samples, so per-face coverage is exact in expectation
    per = np.where(counts > 0, areas / np.maximum(counts, 1), 0.0)[face_idx]
    per *= total / per.sum()
    return SurfaceSamples(pts, normals, per, face_idx)


class VisibilityModel:
    """Which surface samples each sensor pose measures (part frame).

    Args:
        mesh: the part (trimesh, metres, part frame); it occludes itself.
        sensor: the :class:`SensorViewModel`.
        occluders: extra trimesh obstacles (fixture, table) in the part frame.
        samples: precomputed :class:`SurfaceSamples` (default: ``sample_surface(mesh, n_samples)``).
        n_samples: sample count when ``samples`` is not given.
        seed: sampling seed.
        two_sided: treat faces as seen from both sides (for meshes whose face winding is
            inconsistent, so normals cannot be trusted); default: ``not mesh.is_winding_consistent``.
            Sample normals are then turned away from the bounding-box centre.
    """

    def __init__(self, mesh, sensor: SensorViewModel, *, occluders=(), samples: SurfaceSamples | None = None,
                 n_samples: int = 4000, seed: int = 0, two_sided: bool | None = None):
        import open3d as o3d

        self.mesh = _check_mesh(mesh)
        self.sensor = sensor
        samples = samples if samples is not None else sample_surface(mesh, n_samples, seed=seed)
        self.two_sided = (not mesh.is_winding_consistent) if two_sided is None else bool(two_sided)
        if self.two_sided:
            c = 0.5 * (mesh.bounds[0] + mesh.bounds[1])
            flip = np.einsum("ij,ij->i", samples.normals, samples.points - c) < 0
            normals = np.where(flip[:, None], -samples.normals, samples.normals)
            samples = SurfaceSamples(samples.points, normals, samples.areas, samples.faces)
        self.samples = samples
        self.scene = o3d.t.geometry.RaycastingScene()
        self._add(mesh)
        for occ in occluders:
            self._add(occ)
        ext = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
        self.scale = ext
        # hit tolerance: sample points lie on the triangles, so the first hit is at the sample
        self.tolerance = max(1e-5, 1e-4 * ext)

    def _add(self, m):
        import open3d as o3d

        v = o3d.core.Tensor(np.asarray(m.vertices, dtype=np.float32))
        f = o3d.core.Tensor(np.asarray(m.faces, dtype=np.uint32))
        self.scene.add_triangles(v, f)

    def _unoccluded(self, origin: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Mask over ``idx``: the ray from ``origin`` first hits the sample itself."""
        import open3d as o3d

        p = self.samples.points[idx]
        d = p - origin
        dist = np.linalg.norm(d, axis=1)
        rays = np.concatenate([np.broadcast_to(origin, p.shape), d / dist[:, None]], axis=1).astype(np.float32)
        hit = self.scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        return hit >= dist - self.tolerance - 1e-6 * dist

    def visible(self, pose) -> np.ndarray:
        """Boolean mask ``(N,)`` of the samples measured from ``pose``.

        Args:
            pose: ``(4, 4)`` sensor optical frame -> part frame (z forward, x right, y down).
        """
        T = as_transform(pose, name="sensor pose")
        s = self.sensor
        R, o = T[:3, :3], T[:3, 3]
        pts, nrm = self.samples.points, self.samples.normals
        pc = (pts - o) @ R                      # points in the optical frame
        z = pc[:, 2]
        tx, ty = s.tan_half_fov
        ok = (z >= s.near) & (z <= s.far)
        ok &= np.abs(pc[:, 0]) <= tx * z
        ok &= np.abs(pc[:, 1]) <= ty * z
        cos_max = np.cos(np.deg2rad(s.max_incidence_deg))
        origins = [o] if s.baseline <= 0 else [o, o + R[:, 0] * s.baseline]
        for origin in origins:
            to_eye = origin - pts
            dist = np.linalg.norm(to_eye, axis=1)
            cos_inc = np.einsum("ij,ij->i", to_eye, nrm) / np.maximum(dist, 1e-12)
            if self.two_sided:
                cos_inc = np.abs(cos_inc)
            ok &= cos_inc >= cos_max
        idx = np.flatnonzero(ok)
        for origin in origins:
            if idx.size == 0:
                break
            idx = idx[self._unoccluded(origin, idx)]
        mask = np.zeros(len(pts), dtype=bool)
        mask[idx] = True
        return mask

    def visibility_matrix(self, poses, *, progress: bool = False) -> np.ndarray:
        """``(V, N)`` boolean matrix: ``[v, i]`` is True when pose ``v`` measures sample ``i``.

        Args:
            poses: ``(V, 4, 4)`` optical -> part.
            progress: show a tqdm bar.
        """
        poses = np.asarray(poses, dtype=np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise ValueError(f"poses must have shape (V, 4, 4), got {poses.shape}")
        out = np.zeros((len(poses), len(self.samples)), dtype=bool)
        it = range(len(poses))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="visibility", unit="view", leave=False)
        for v in it:
            out[v] = self.visible(poses[v])
        return out
