"""Simulated scans of a mesh: full-surface templates and partial single-view scans.

* :func:`full_scan` -- a 360 degree "template": the whole surface sampled area-uniformly, then
  thinned by a smooth random density field and perturbed by Gaussian noise along the surface
  normal (what a merged multi-view scan of a good part looks like, as the Real3D-AD
  prototypes).
* :func:`partial_scan` -- one view of a pinhole area sensor (structured light): rays from a
  random (or given) viewpoint are cast on the mesh with Open3D's ``RaycastingScene``
  (Embree), so visibility and self-occlusion are exact; surfaces seen at grazing angles drop
  out, depth noise is added along the rays, and density varies with distance, incidence and a
  smooth random field. The sensor pose is returned in REP 103 optical convention.
* :func:`random_pose` -- a random rigid transform, so scans must be registered.

All inputs and outputs are in metres in the mesh (part) frame unless a pose is applied.
The more detailed sensor simulator (``cosarad_ros.core.sensors``) models particular devices
(projector occlusion, depth-squared noise); this module needs only the mesh and is what the
dataset generator uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..geometry import look_at, random_rotation, transform_points
from ..io import sample_mesh

__all__ = ["Scan", "full_scan", "partial_scan", "random_pose", "random_view_direction",
           "density_field", "weighted_subsample"]


@dataclass(frozen=True)
class Scan:
    """A simulated scan.

    Attributes:
        points: ``(N, 3)`` noisy points, metres, in the mesh frame.
        clean_points: ``(N, 3)`` the same points before noise (on the surface; use them to
            label ground truth).
        normals: ``(N, 3)`` unit surface normals (facing the sensor for partial scans).
        sensor_pose: ``(4, 4)`` optical frame -> mesh frame for partial scans, ``None`` for
            full scans.
    """

    points: np.ndarray
    clean_points: np.ndarray
    normals: np.ndarray
    sensor_pose: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])


def random_pose(rng: np.random.Generator, *, max_translation: float = 0.05,
                max_angle_deg: float | None = None) -> np.ndarray:
    """Random ``(4, 4)`` rigid transform: rotation uniform over SO(3) (or within
    ``max_angle_deg``), translation uniform in a cube of half-size ``max_translation`` (m).
    """
    T = np.eye(4)
    T[:3, :3] = random_rotation(rng, max_angle_deg)
    T[:3, 3] = rng.uniform(-max_translation, max_translation, size=3)
    return T


def random_view_direction(rng: np.random.Generator, *, min_z: float = -0.5) -> np.ndarray:
    """Unit vector from the part towards the sensor, uniform on the sphere but with
    ``z >= min_z`` (parts rest on a table, so views from straight below are excluded).
    """
    for _ in range(1000):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        if d[2] >= min_z:
            return d
    raise ValueError(f"min_z={min_z} excludes every direction")


def density_field(points, rng: np.random.Generator, *, wavelength: float, strength: float = 0.6,
                  n_waves: int = 4) -> np.ndarray:
    """Smooth random density weights in ``[1 - strength, 1]`` over ``points (N, 3)``: a sum of
    ``n_waves`` random plane waves of the given ``wavelength`` (metres).
    """
    if not 0 <= strength < 1:
        raise ValueError(f"strength must be in [0, 1), got {strength}")
    f = np.zeros(len(points))
    for _ in range(n_waves):
        k = rng.normal(size=3)
        k *= 2 * math.pi / (wavelength * np.linalg.norm(k))
        f += np.cos(points @ k + rng.uniform(0, 2 * math.pi))
    f = (f - f.min()) / max(f.max() - f.min(), 1e-12)
    return 1.0 - strength * (1.0 - f)


def weighted_subsample(weights, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices drawn without replacement with probability proportional to ``weights``
    (Efraimidis & Spirakis, "Weighted random sampling with a reservoir", IPL 97(5), 2006).
    Returns sorted indices; all indices when ``k >= len(weights)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if k >= len(w):
        return np.arange(len(w))
    keys = np.log(rng.random(len(w))) / np.maximum(w, 1e-12)
    return np.sort(np.argpartition(-keys, k)[:k])


def _check_mesh(mesh):
    if not hasattr(mesh, "faces") or len(mesh.faces) == 0:
        raise ValueError("mesh has no faces")


def full_scan(mesh, n_points: int, rng: np.random.Generator, *, noise: float = 3e-5,
              density_variation: float = 0.5, oversample: float = 2.0) -> Scan:
    """Full-surface scan (a template).

    Args:
        mesh: ``trimesh.Trimesh`` (metres).
        n_points: points in the result (>= 1).
        rng: random generator.
        noise: standard deviation of the Gaussian noise along the normal, metres.
        density_variation: strength of the smooth density field in ``[0, 1)`` (0: uniform).
        oversample: candidates drawn per output point before thinning (>= 1).

    Returns:
        :class:`Scan` with ``sensor_pose=None``.
    """
    _check_mesh(mesh)
    if n_points < 1:
        raise ValueError(f"n_points must be >= 1, got {n_points}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    m = int(max(n_points, math.ceil(n_points * max(oversample, 1.0))))
    pts, nrm = sample_mesh(mesh, m, seed=int(rng.integers(2**31)))
    size = float(np.max(mesh.extents))
    w = density_field(pts, rng, wavelength=size / 2, strength=density_variation) \
        if density_variation > 0 else np.ones(m)
    idx = weighted_subsample(w, n_points, rng)
    clean, nrm = pts[idx], nrm[idx]
    noisy = clean + nrm * rng.normal(0.0, noise, size=(len(idx), 1)) if noise > 0 else clean.copy()
    return Scan(points=noisy, clean_points=clean, normals=nrm, sensor_pose=None)


def partial_scan(mesh, n_points: int, rng: np.random.Generator, *, view_direction=None,
                 distance_factor: float = 3.0, noise: float = 3e-5, density_variation: float = 0.4,
                 grazing_start_deg: float = 70.0, grazing_max_deg: float = 85.0,
                 min_points: int = 100, _scene=None) -> Scan:
    """Single-view scan by ray casting from a pinhole sensor.

    The sensor looks at the bounding-box centre from ``distance_factor`` x the bounding-sphere
    radius along ``view_direction`` (random when ``None``, see :func:`random_view_direction`),
    with a field of view that just covers the part. Enough rays are cast to return about
    ``n_points`` points after grazing-angle dropout (probability rising linearly from 0 at
    ``grazing_start_deg`` to 1 at ``grazing_max_deg`` of incidence) and density thinning.

    Args:
        mesh: ``trimesh.Trimesh`` (metres).
        n_points: target number of points (fewer when the view sees little surface).
        rng: random generator.
        view_direction: ``(3,)`` from the part towards the sensor.
        distance_factor: sensor distance in bounding-sphere radii (> 1).
        noise: depth noise standard deviation along the ray, metres.
        density_variation: strength of the smooth density field in ``[0, 1)``.
        grazing_start_deg, grazing_max_deg: incidence dropout ramp.
        min_points: raise ValueError when fewer points are seen.

    Returns:
        :class:`Scan` with the sensor pose (optical frame -> mesh frame).
    """
    import open3d as o3d

    _check_mesh(mesh)
    if n_points < 1:
        raise ValueError(f"n_points must be >= 1, got {n_points}")
    if distance_factor <= 1:
        raise ValueError(f"distance_factor must be > 1, got {distance_factor}")
    V = np.asarray(mesh.vertices, dtype=np.float64)
    F = np.asarray(mesh.faces, dtype=np.int64)
    lo, hi = V.min(axis=0), V.max(axis=0)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(hi - lo) / 2)
    d = random_view_direction(rng) if view_direction is None else np.asarray(view_direction, float)
    if d.shape != (3,) or not np.isfinite(d).all() or np.linalg.norm(d) < 1e-9:
        raise ValueError(f"view_direction must be a non-zero (3,) vector, got {view_direction}")
    d = d / np.linalg.norm(d)
    dist = distance_factor * radius
    eye = centre + d * dist
    pose = look_at(eye, centre)
    half = math.asin(min(1.0 / distance_factor, 0.999)) * 1.05
    scene = _scene
    if scene is None:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(V.astype(np.float32)), o3d.core.Tensor(F.astype(np.uint32)))

    def cast(res):
        t = np.tan(half)
        g = (np.arange(res) + 0.5) / res * 2 - 1
        xs, ys = np.meshgrid(g * t, g * t)
        dirs_o = np.stack([xs.ravel(), ys.ravel(), np.ones(res * res)], axis=1)
        dirs_o /= np.linalg.norm(dirs_o, axis=1, keepdims=True)
        dirs = dirs_o @ pose[:3, :3].T
        rays = np.concatenate([np.broadcast_to(eye, dirs.shape), dirs], axis=1).astype(np.float32)
        ans = scene.cast_rays(o3d.core.Tensor(rays))
        th = ans["t_hit"].numpy()
        hit = np.isfinite(th)
        return dirs[hit], th[hit].astype(np.float64), ans["primitive_normals"].numpy()[hit].astype(np.float64)

    # a coarse pass estimates how many rays give n_points after dropout and thinning
    dirs, th, nrm = cast(96)
    frac = max(len(th) / 96**2, 1e-3)
    keep_frac = 0.6 * (1 - 0.5 * density_variation)
    res = int(np.clip(math.ceil(math.sqrt(n_points / (frac * keep_frac))), 64, 2048))
    dirs, th, nrm = cast(res)
    if len(th) < min_points:
        raise ValueError(f"the view sees only {len(th)} surface points (need {min_points})")
    clean = eye + dirs * th[:, None]
    flip = np.einsum("ij,ij->i", nrm, dirs) > 0
    nrm[flip] *= -1  # face the sensor
    cos_inc = np.clip(-np.einsum("ij,ij->i", nrm, dirs), 0.0, 1.0)
    inc = np.degrees(np.arccos(cos_inc))
    p_drop = np.clip((inc - grazing_start_deg) / max(grazing_max_deg - grazing_start_deg, 1e-9), 0, 1)
    alive = rng.random(len(th)) >= p_drop
    clean, nrm, dirs, th = clean[alive], nrm[alive], dirs[alive], th[alive]
    if len(th) < min_points:
        raise ValueError(f"the view sees only {len(th)} points at usable incidence (need {min_points})")
    w = density_field(clean, rng, wavelength=radius, strength=density_variation) \
        if density_variation > 0 else np.ones(len(th))
    idx = weighted_subsample(w, n_points, rng)
    clean, nrm, dirs = clean[idx], nrm[idx], dirs[idx]
    noisy = clean + dirs * rng.normal(0.0, noise, size=(len(idx), 1)) if noise > 0 else clean.copy()
    return Scan(points=noisy, clean_points=clean, normals=nrm, sensor_pose=pose)


def apply_pose(scan: Scan, T) -> Scan:
    """The scan with every array moved by the rigid transform ``T`` (4x4)."""
    T = np.asarray(T, dtype=np.float64)
    R = T[:3, :3]
    pose = None if scan.sensor_pose is None else T @ scan.sensor_pose
    return Scan(points=transform_points(T, scan.points), clean_points=transform_points(T, scan.clean_points),
                normals=scan.normals @ R.T, sensor_pose=pose)


__all__.append("apply_pose")
