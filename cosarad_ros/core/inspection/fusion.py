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

__all__ = ["fuse_scans", "envelope_mesh", "DEFAULT_ROI"]

#: part-frame box kept around the part [m]: 30 cm square, from 1.5 mm above the support (3-5 sigma of
#: the depth noise, so the fixture top stays out) up to 30 cm
DEFAULT_ROI = ((-0.15, -0.15, 0.0015), (0.15, 0.15, 0.30))


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
        # crop every view to the region of interest before the views are refined against each
        # other: the fixture top and the table are large planes that would otherwise drive the
        # view-to-view ICP (it slid a view 2 mm along a fixture face, leaving a ghost wall)
        lo, hi = np.asarray(roi[0], float), np.asarray(roi[1], float)
        inv_part = np.linalg.inv(T_part)
        kept = []
        for c, P in zip(clouds, poses):
            M = inv_part @ as_transform(P, name="sensor_pose")
            q = c @ M[:3, :3].T + M[:3, 3]
            kept.append(np.all((q >= lo) & (q <= hi), axis=1))
        if sum(int(k.sum()) for k in kept) == 0:
            raise ValueError(f"no scan point inside the part's region of interest {lo.tolist()} .. {hi.tolist()} "
                             "(part frame): the part is not where the sensor looked")
        views = [(c[k], P) for c, P, k in zip(clouds, poses, kept) if k.sum() >= 10]
        clouds, poses = [v[0] for v in views], [v[1] for v in views]
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
    """A box ``size`` = ``(x, y, z)`` [m] standing on the part frame's ``z = 0``, centred in x, y:
    the volume a part of unknown type may occupy on the fixture (planned for survey views)."""
    import trimesh

    size = np.asarray(size, dtype=np.float64).reshape(-1)
    if size.shape != (3,) or not (size > 0).all():
        raise ValueError(f"envelope size must be 3 positive lengths, got {size.tolist()}")
    box = trimesh.creation.box(extents=size)
    box.apply_translation([0.0, 0.0, size[2] / 2.0])
    return box
