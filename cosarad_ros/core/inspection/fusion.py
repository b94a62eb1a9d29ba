"""From the views of one inspection to one clean cloud of the part in its own frame.

``fuse_scans``: views (sensor frame + sensor pose) -> :func:`~cosarad_ros.core.registration.fuse_views`
(kinematic poses refined against each other, voxel de-duplication) -> part frame -> region of
interest around the part's nominal place, which also drops the fixture and the table below the
part frame's ``z = 0`` (the support surface, Kwon et al. 2025 pre-processing) -> statistical outlier
removal (mu +- 2 sigma).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cosarad_ros.core.geometry import as_transform

__all__ = ["fuse_scans", "crop_views", "envelope_mesh", "part_envelope", "DEFAULT_ROI", "LOCATE_BOX", "CELL_VOXEL"]

#: part-frame box kept around the part [m]: 30 cm square, from 1.5 mm above the support (3-5 sigma of
#: the depth noise, so the fixture top stays out) up to 30 cm
DEFAULT_ROI = ((-0.15, -0.15, 0.0015), (0.15, 0.15, 0.30))
#: voxel edge of the cell's fused clouds [m]: the templates, the inspection manager and the
#: in-process cell fuse alike. About two pixels of the sensor at its working distance, so a fused
#: point still averages the views' noise while hole rims and narrow defects keep their shape.
CELL_VOXEL = 0.00075
#: what the views that locate a part of unknown type look at: a plate over the fixture area
#: (part frame, metres), seen from above
LOCATE_BOX = ((-0.10, -0.10, 0.0), (0.10, 0.10, 0.005))


def crop_views(clouds: Sequence, poses: Sequence, *, part_pose, roi) -> tuple[list, list]:
    """Crop views to the part's region of interest, each in its own sensor frame.

    Done before the views are refined against each other: the fixture top and the table are
    large planes that would otherwise drive the view-to-view ICP (it slid a view 2 mm along a
    fixture face, leaving a ghost wall).

    Args:
        clouds: ``(N_i, 3)`` views in the sensor frame.
        poses: ``(4, 4)`` sensor -> world poses.
        part_pose: ``(4, 4)`` part frame -> world.
        roi: ``(min (3,), max (3,))`` box in the part frame.

    Returns:
        ``(clouds, poses)`` of the views keeping at least 10 points inside the box.

    Raises:
        ValueError: no point of any view inside the box.
    """
    lo, hi = np.asarray(roi[0], float), np.asarray(roi[1], float)
    inv_part = np.linalg.inv(as_transform(part_pose, name="part_pose"))
    kept = []
    for c, P in zip(clouds, poses):
        M = inv_part @ as_transform(P, name="sensor_pose")
        q = np.asarray(c, np.float64) @ M[:3, :3].T + M[:3, 3]
        kept.append(np.all((q >= lo) & (q <= hi), axis=1))
    if sum(int(k.sum()) for k in kept) == 0:
        raise ValueError(f"no scan point inside the part's region of interest {lo.tolist()} .. {hi.tolist()} "
                         "(part frame): the part is not where the sensor looked")
    views = [(np.asarray(c, np.float64)[k], P) for c, P, k in zip(clouds, poses, kept) if k.sum() >= 10]
    return [v[0] for v in views], [v[1] for v in views]


def fuse_scans(scans: Sequence, *, part_pose=None, voxel_size: float | None = None,
               roi=DEFAULT_ROI, refine: bool = True, outlier_std: float | None = 2.0) -> np.ndarray:
    """Fuse views into one de-duplicated cloud of the part.

    Args:
        scans: objects with ``points`` ``(N_i, 3)`` (sensor frame) and ``sensor_pose`` ``(4, 4)``
            (sensor -> world), e.g. :class:`cosarad_ros.core.inspection.pipeline.ViewScan`.
        part_pose: ``(4, 4)`` part frame -> world; None: identity (the result stays in world).
        voxel_size: de-duplication voxel edge [m]; None: the scans' own resolution.
        roi: ``(min (3,), max (3,))`` box in the part frame that is kept; None: keep everything.
        refine: refine the views against each other (ICP pose graph) before merging.
        outlier_std: statistical outlier removal band (None: off).

    Returns:
        ``(M, 3)`` float64 points in the part frame.

    Raises:
        ValueError: no scans, or nothing left inside the region of interest (the part is not
            where the sensor looked, or the ROI is wrong).
    """
    from cosarad_ros.core.registration import preprocess
    from cosarad_ros.core.registration.fusion import fuse_views

    if not scans:
        raise ValueError("no scans to fuse")
    T_part = np.eye(4) if part_pose is None else as_transform(part_pose, name="part_pose")
    clouds = [np.asarray(s.points, np.float64) for s in scans]
    poses = [np.asarray(s.sensor_pose, np.float64) for s in scans]
    if roi is not None:
        clouds, poses = crop_views(clouds, poses, part_pose=T_part, roi=roi)
    fused = fuse_views(clouds, poses, part_pose=T_part, voxel_size=voxel_size, refine=refine)
    pts = fused.points
    if roi is not None:
        lo, hi = np.asarray(roi[0], float), np.asarray(roi[1], float)
        inside = np.all((pts >= lo) & (pts <= hi), axis=1)
        if not inside.any():
            raise ValueError(f"no fused point inside the part's region of interest {lo.tolist()} .. {hi.tolist()} "
                             "(part frame): the part is not where the sensor looked")
        pts = pts[inside]
    if outlier_std is not None and len(pts) > 50:
        pts = preprocess(pts, outlier_std=outlier_std, voxel_size=0, min_points=10).points
    return pts


def envelope_mesh(size):
    """A box mesh: ``size`` = ``(x, y, z)`` [m] standing on the part frame's ``z = 0``, centred in
    x, y, or ``(lo (3,), hi (3,))`` corners in the part frame: the volume a part of unknown type
    occupies on the fixture (planned for survey views).
    """
    import trimesh

    arr = np.asarray(size, dtype=np.float64)
    if arr.shape == (2, 3):
        lo, hi = arr
    elif arr.reshape(-1).shape == (3,):
        s = arr.reshape(-1)
        lo, hi = np.array([-s[0] / 2, -s[1] / 2, 0.0]), np.array([s[0] / 2, s[1] / 2, s[2]])
    else:
        raise ValueError(f"envelope must be 3 lengths or (lo, hi) corners, got shape {arr.shape}")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()):
        raise ValueError(f"envelope must have positive lengths, got {lo.tolist()} .. {hi.tolist()}")
    box = trimesh.creation.box(extents=hi - lo)
    box.apply_translation((lo + hi) / 2.0)
    return box


def part_envelope(points, *, margin: float = 0.005, min_height: float = 0.005,
                  quantile: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """The box a part occupies on the fixture, from a scan of it in the part frame: robust
    extents (``quantile`` of the points left out per side, against stray points), grown by
    ``margin`` sideways and upwards, from the fixture top (``z = 0``), at least ``min_height``
    tall.

    Returns:
        ``(lo (3,), hi (3,))`` [m].

    Raises:
        ValueError: fewer than 10 points.
    """
    from cosarad_ros.core.geometry import as_points

    pts = as_points(points, name="points", min_points=10)
    lo = np.quantile(pts, quantile, axis=0) - margin
    hi = np.quantile(pts, 1.0 - quantile, axis=0) + margin
    lo[2] = 0.0
    hi[2] = max(hi[2], min_height)
    return lo, hi
