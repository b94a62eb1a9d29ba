"""Simulated laser line profiler (``type: ruler``), on the ray-casting base of :mod:`.simulated`.

A laser line profiler like the SICK Ruler: a laser fan in the optical x-z plane and a camera
offset along the motion axis (y). One profile per encoder step along a linear axis (the sensor
moves along its optical y), or per angular step of a rotary table. A point exists only when the
camera sees the laser spot (laser *and* camera occlusion). The device's native output, a 16-bit
range image with one row per profile, is returned as ``SensorFrame.height_map`` together with
the point cloud (SICK, "Ruler E Reference Manual" ch. 1: profiles of range values; the hybrid
inspection of Kwon et al., Electronics 2025, consumes that 16-bit map).
"""
from __future__ import annotations

import numpy as np

from cosarad_ros.core.geometry import as_transform

from .base import DEFAULT_FRAME_ID, SensorFrame, register_sensor
from .scene import PART, SimulatedScene, default_viewpoint
from .simulated import (
    SimulatedSensor,
    _check_non_negative,
    _check_positive,
    _dropout_probability,
    _pair,
    depth_noise_sigma,
)

__all__ = ["LaserProfilerSensor", "height_map_to_points"]


@register_sensor("ruler", "laser_profiler")
class LaserProfilerSensor(SimulatedSensor):
    """Simulated laser line profiler (SICK Ruler-like) on a linear or rotary axis.

    Sensor frame (REP 103 optical): the laser source at the origin, the laser fan in the x-z
    plane (x along the line, z forward), the camera at ``(0, baseline, 0)`` looking at the
    laser line at ``working_distance`` (triangulation angle ``atan(baseline / working_distance)``).

    Motion (one profile per encoder step):
        * ``linear``: the sensor moves along its optical +y by ``step`` per profile, ``travel``
          metres in total, starting at the grab pose.
        * ``rotary``: the part turns on a rotary table about ``rotary_axis`` through
          ``rotary_axis_point`` (world frame; default: through the part origin, world z),
          ``rotary_step_deg`` per profile over ``rotary_range_deg``. Simulated as the sensor
          orbiting the other way around the static scene.

    The returned cloud is expressed in the optical frame of the start pose (the grab pose), so
    ``frame.points_world()`` lies on the scanned surfaces. ``frame.height_map`` is the device's
    range image: ``(profiles, columns)`` uint16, 0 = no data, depth ``z = offset + scale *
    (count - 1)`` with ``meta['height_map_offset']`` = near limit and ``meta['height_map_scale']``;
    column ``j`` lies at ``x = meta['column_slopes'][j] * z`` (rays uniform in x/z, as a
    rectified profile).

    Defaults follow a Ruler E 600-like head (measuring distance about 0.4-0.9 m, 1536 points per
    profile; SICK "Ruler E Reference Manual"); all configurable.

    Args:
        scene, seed, pose, fail_after, recover_after, latency, frame_id: see :class:`SimulatedSensor`.
        columns: points per profile.
        fan_angle_deg: full opening angle of the laser fan [deg].
        working_range: ``(near, far)`` depth limits of the camera [m].
        working_distance: depth where the camera axis crosses the laser plane [m].
        baseline: laser-camera distance along the optical y axis [m] (signed).
        motion: ``"linear"`` or ``"rotary"``.
        travel: linear scan length [m].
        step: linear encoder step per profile [m].
        rotary_step_deg, rotary_range_deg: rotary step and total angle [deg].
        rotary_axis: world direction of the rotary axis.
        rotary_axis_point: a world point on the rotary axis (None: the part origin, else the
            world origin).
        noise_sigma: range noise standard deviation at ``working_distance`` [m].
        noise_exponent: growth of the noise with depth.
        height_resolution: metres per height-map count (None: the working range over 65534 counts).
        dropout_start_deg, max_incidence_deg: grazing-angle dropout (laser or camera incidence).
    """

    type_name = "ruler"

    def __init__(self, *, scene: SimulatedScene | None = None, seed: int = 0, columns: int = 1536,
                 fan_angle_deg: float = 45.0, working_range=(0.40, 0.90), working_distance: float = 0.60,
                 baseline: float = 0.25, motion: str = "linear", travel: float = 0.30, step: float = 5e-4,
                 rotary_step_deg: float = 0.5, rotary_range_deg: float = 360.0, rotary_axis=(0.0, 0.0, 1.0),
                 rotary_axis_point=None, noise_sigma: float = 1.0e-4, noise_exponent: float = 2.0,
                 height_resolution: float | None = None, dropout_start_deg: float = 70.0,
                 max_incidence_deg: float = 85.0, pose=None, fail_after: int | None = None,
                 recover_after: int | None = None, latency: float = 0.0,
                 frame_id: str = DEFAULT_FRAME_ID):
        super().__init__(scene=scene, seed=seed, pose=pose, fail_after=fail_after,
                         recover_after=recover_after, latency=latency, frame_id=frame_id)
        if int(columns) != columns or not 2 <= int(columns) <= 16384:
            raise ValueError(f"columns must be an integer in [2, 16384], got {columns!r}")
        self.columns = int(columns)
        self.fan_angle_deg = _check_positive(fan_angle_deg, "fan_angle_deg")
        if self.fan_angle_deg >= 170:
            raise ValueError(f"fan_angle_deg must be < 170, got {fan_angle_deg}")
        self.working_range = _pair(working_range, "working_range")
        if self.working_range[0] >= self.working_range[1]:
            raise ValueError(f"working_range must be (near, far) with near < far, got {working_range!r}")
        self.working_distance = _check_positive(working_distance, "working_distance")
        self.baseline = float(baseline)
        if not np.isfinite(self.baseline) or self.baseline == 0:
            raise ValueError(f"baseline must be finite and non-zero (triangulation needs it), got {baseline!r}")
        if motion not in ("linear", "rotary"):
            raise ValueError(f"motion must be 'linear' or 'rotary', got {motion!r}")
        self.motion = motion
        self.travel = _check_non_negative(travel, "travel")
        self.step = _check_positive(step, "step")
        self.rotary_step_deg = _check_positive(rotary_step_deg, "rotary_step_deg")
        self.rotary_range_deg = _check_non_negative(rotary_range_deg, "rotary_range_deg")
        ax = np.asarray(rotary_axis, dtype=np.float64).reshape(-1)
        if ax.shape != (3,) or not np.isfinite(ax).all() or np.linalg.norm(ax) < 1e-9:
            raise ValueError(f"rotary_axis must be a non-zero 3-vector, got {rotary_axis!r}")
        self.rotary_axis = ax / np.linalg.norm(ax)
        if rotary_axis_point is not None:
            pt = np.asarray(rotary_axis_point, dtype=np.float64).reshape(-1)
            if pt.shape != (3,) or not np.isfinite(pt).all():
                raise ValueError(f"rotary_axis_point must be 3 finite numbers, got {rotary_axis_point!r}")
            rotary_axis_point = pt
        self.rotary_axis_point = rotary_axis_point
        self.noise_sigma = _check_non_negative(noise_sigma, "noise_sigma")
        self.noise_exponent = _check_non_negative(noise_exponent, "noise_exponent")
        near, far = self.working_range
        self.height_resolution = ((far - near) / 65534.0 if height_resolution is None
                                  else _check_positive(height_resolution, "height_resolution"))
        if (far - near) / self.height_resolution > 65534:
            raise ValueError(f"height_resolution {self.height_resolution} m cannot span the working range "
                             f"{self.working_range} in 16 bits; use >= {(far - near) / 65534:.3g}")
        self.dropout_start_deg = float(dropout_start_deg)
        self.max_incidence_deg = float(max_incidence_deg)
        if not 0 <= self.dropout_start_deg <= self.max_incidence_deg <= 90:
            raise ValueError("need 0 <= dropout_start_deg <= max_incidence_deg <= 90")
        half = np.tan(np.radians(self.fan_angle_deg) / 2.0)
        #: x/z slope of each laser ray (uniform, like a rectified profile)
        self.column_slopes = np.linspace(-half, half, self.columns)
        d = np.stack([self.column_slopes, np.zeros(self.columns), np.ones(self.columns)], axis=1)
        self._rays = d / np.linalg.norm(d, axis=1, keepdims=True)

    # geometry ------------------------------------------------------------------------------

    @property
    def num_profiles(self) -> int:
        if self.motion == "linear":
            return int(np.floor(self.travel / self.step + 1e-9)) + 1
        return max(1, int(np.floor(self.rotary_range_deg / self.rotary_step_deg + 1e-9))
                   + (0 if self.rotary_range_deg >= 360.0 else 1))

    def profile_poses(self, start_pose) -> np.ndarray:
        """``(P, 4, 4)`` sensor poses (optical -> world) of every profile of a scan from ``start_pose``."""
        T0 = as_transform(start_pose, name="start_pose")
        P = self.num_profiles
        poses = np.repeat(T0[None], P, axis=0)
        if self.motion == "linear":
            k = np.arange(P) * self.step
            poses[:, :3, 3] = T0[:3, 3] + k[:, None] * T0[:3, 1]
            return poses
        axis = self.rotary_axis
        if self.rotary_axis_point is not None:
            c = self.rotary_axis_point
        elif self.scene.has(PART):
            c = self.scene.part_pose[:3, 3]
        else:
            c = np.zeros(3)
        K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        for i in range(P):
            # the table turns the part by +angle: the sensor orbits by -angle in the part's view
            a = -np.radians(i * self.rotary_step_deg)
            Rk = np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K
            poses[i, :3, :3] = Rk @ T0[:3, :3]
            poses[i, :3, 3] = Rk @ (T0[:3, 3] - c) + c
        return poses

    def default_pose(self, target=None) -> np.ndarray:
        """Start pose of a linear scan centred on ``target`` (default: the scene's part): the
        sensor looks straight down (world -z) from ``working_distance`` above the target's
        centre, the laser line along world x, moving along world -y across the target.
        """
        tgt = self.scene if target is None else target
        if isinstance(tgt, SimulatedScene):
            if not tgt.object_names:
                center = np.zeros(3)
            else:
                center = tgt.bounds(PART if tgt.has(PART) else None).mean(axis=0)
        else:
            T = default_viewpoint(tgt, 1.0, elevation_deg=90.0)
            center = T[:3, 3] - T[:3, 2]
        R = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # x, y, z as columns
        T = np.eye(4)
        T[:3, :3] = R
        travel = self.travel if self.motion == "linear" else 0.0
        T[:3, 3] = center + np.array([0.0, 0.0, self.working_distance]) - R[:, 1] * travel / 2.0
        return T

    def noise_at(self, z) -> np.ndarray:
        return depth_noise_sigma(z, self.noise_sigma, self.working_distance, self.noise_exponent)

    def _simulate(self, pose, rng, stamp):
        poses = self.profile_poses(pose)
        P, C = poses.shape[0], self.columns
        R = poses[:, :3, :3]
        origins = np.repeat(poses[:, :3, 3], C, axis=0)                       # (P*C, 3)
        dirs = np.einsum("pij,cj->pci", R, self._rays).reshape(-1, 3)          # (P*C, 3)
        t, nrm, labels = self._cast_chunked(origins, dirs)
        z = t * np.tile(self._rays[:, 2], P)
        near, far = self.working_range
        idx = np.flatnonzero(np.isfinite(t) & (z >= near) & (z <= far))
        stats = {"profiles": int(P), "laser_hits": int(np.isfinite(t).sum()), "in_range": int(idx.size)}
        pts_w = origins[idx] + dirs[idx] * t[idx, None]
        prof = idx // C
        cam_w = poses[prof, :3, 3] + R[prof][:, :, 1] * self.baseline
        seen, dcam = self._visible_from(cam_w, pts_w)
        stats["camera_occluded"] = int((~seen).sum())
        n = nrm[idx]
        cos_l = np.abs(np.einsum("ij,ij->i", n, dirs[idx]))
        cos_c = np.abs(np.einsum("ij,ij->i", n, dcam))
        incidence = np.degrees(np.arccos(np.clip(np.minimum(cos_l, cos_c), 0.0, 1.0)))
        dropped = rng.random(idx.size) < _dropout_probability(incidence, self.dropout_start_deg,
                                                              self.max_incidence_deg)
        stats["grazing_dropout"] = int((seen & dropped).sum())
        keep = seen & ~dropped
        sel = idx[keep]
        zs = z[sel] + rng.standard_normal(sel.size) * self.noise_at(z[sel])
        # the device quantises range into 16-bit counts; the cloud is computed from them
        counts = np.clip(np.rint((zs - near) / self.height_resolution), 0, 65534).astype(np.uint16) + 1
        valid = (zs >= near) & (zs <= far)
        sel, counts = sel[valid], counts[valid]
        height_map = np.zeros((P, C), dtype=np.uint16)
        pr, col = np.divmod(sel, C)
        height_map[pr, col] = counts
        zq = near + self.height_resolution * (counts.astype(np.float64) - 1.0)
        p_local = np.stack([self.column_slopes[col] * zq, np.zeros_like(zq), zq], axis=1)
        # profile frame -> start (grab) frame
        T0inv_R = pose[:3, :3].T
        rel_R = np.einsum("ij,pjk->pik", T0inv_R, R)                         # (P, 3, 3)
        rel_t = (poses[:, :3, 3] - pose[:3, 3]) @ pose[:3, :3]               # (P, 3)
        pts = np.einsum("nij,nj->ni", rel_R[pr], p_local) + rel_t[pr]
        n_w = nrm[sel]
        n_start = n_w @ pose[:3, :3]
        flip = np.einsum("ij,ij->i", n_w, dirs[sel]) > 0
        n_start[flip] *= -1.0
        stats["points"] = int(sel.size)
        meta = {
            "sensor_type": self.type_name,
            "motion": self.motion,
            "profile_index": pr.astype(np.int32),
            "column_index": col.astype(np.int32),
            "labels": labels[sel].astype(np.int16),
            "label_names": self.scene.object_names,
            "height_map_scale": self.height_resolution,
            "height_map_offset": near,
            "column_slopes": self.column_slopes.copy(),
            "profile_poses": poses,
            "stats": stats,
            "part_id": self.scene.part_id,
        }
        if self.motion == "linear":
            meta["profile_spacing"] = self.step
        else:
            meta["profile_spacing_deg"] = self.rotary_step_deg
        return SensorFrame(points=pts.astype(np.float32), stamp=stamp, frame_id=self.frame_id,
                           sensor_pose=pose, normals=n_start.astype(np.float32),
                           height_map=height_map, meta=meta)


def height_map_to_points(height_map, *, scale: float, offset: float, column_slopes, spacing: float) -> np.ndarray:
    """Turn a linear-scan 16-bit range image back into ``(N, 3)`` points (start frame).

    Args:
        height_map: ``(P, C)`` uint16 counts, 0 = no data.
        scale, offset: ``z = offset + scale * (count - 1)`` [m].
        column_slopes: ``(C,)`` x/z slope of each column.
        spacing: distance between profiles along y [m].
    """
    hm = np.asarray(height_map)
    if hm.ndim != 2 or hm.dtype != np.uint16:
        raise ValueError(f"height_map must be 2-D uint16, got {hm.dtype} {hm.shape}")
    slopes = np.asarray(column_slopes, dtype=np.float64).reshape(-1)
    if slopes.shape != (hm.shape[1],):
        raise ValueError(f"column_slopes must have {hm.shape[1]} entries, got {slopes.shape}")
    r, c = np.nonzero(hm)
    z = offset + scale * (hm[r, c].astype(np.float64) - 1.0)
    return np.stack([slopes[c] * z, r * spacing, z], axis=1)


