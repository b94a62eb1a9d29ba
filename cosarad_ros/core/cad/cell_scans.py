"""Scans and part sets as the inspection cell sees them, for the classifier's benchmark and tests.

:func:`cell_scan` simulates what the cell hands the classifier: the part rests on the cell's
fixture at any yaw and a few millimetres off its nominal place, the cell's structured-light
sensor looks at it from a few views above, and the views are fused as the cell fuses them (the
underside is never seen, the lowest 1.5 mm are cut away with the fixture).
:func:`cell_catalogue` builds part types of every procedural family, half of them thin or low
(5-15 mm high), each with a near-duplicate 1.5 mm longer, plus types kept out of the library.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["cell_scan", "cell_catalogue"]


def cell_scan(mesh, rng: np.random.Generator, *, views=(3, 5), elevation_deg=(30.0, 70.0), yaw: bool = True,
              max_offset: float = 0.003, voxel_size: float = 0.0015, sensor: Mapping | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """A fused scan of ``mesh`` as the inspection cell takes it.

    The part rests on the cell's fixture (:meth:`SimulatedScene.inspection_cell`), turned by a
    random yaw about the vertical and shifted by up to ``max_offset`` on the fixture (as a real
    part lies); the cell's simulated structured-light sensor
    (:func:`~cosarad_ros.core.inspection.templates.cell_sensor_options`, depth noise 0.25 mm at
    its working distance, occlusion by the projector, grazing-angle dropout) looks at it from
    ``views`` (a count or ``(min, max)``) directions at random azimuths, ``elevation_deg`` above
    the fixture plane; the views are fused in the nominal part frame as the cell fuses them
    (:func:`~cosarad_ros.core.inspection.fusion.fuse_scans`: the lowest 1.5 mm above the fixture
    are cut away, voxel ``voxel_size``). The underside is never seen.

    Args:
        mesh: the part (trimesh, metres, its own frame with the resting face at ``z = min``).
        rng: random generator (yaw, offset, views, sensor noise seed).
        views: number of views, or ``(min, max)`` inclusive.
        elevation_deg: ``(min, max)`` elevation of each view [deg].
        yaw: turn the part by a random yaw (``False``: the nominal pose of the simulated cell).
        max_offset: largest shift of the part on the fixture [m].
        voxel_size: fusion voxel [m].
        sensor: simulated-sensor options (default: the cell's).

    Returns:
        ``(points (N, 3) in the nominal part frame, T (4, 4) scan -> model frame)``.
    """
    from cosarad_ros.core.inspection.fusion import fuse_scans
    from cosarad_ros.core.inspection.pipeline import ViewScan
    from cosarad_ros.core.inspection.templates import cell_sensor_options
    from cosarad_ros.core.planning import CellModel
    from cosarad_ros.core.sensors import SimulatedScene, default_viewpoint, make_sensor

    lo, hi = np.asarray(mesh.bounds, dtype=np.float64)
    n_views = int(views) if np.isscalar(views) else int(rng.integers(int(views[0]), int(views[1]) + 1))
    if n_views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    # part -> nominal part frame: yaw about the vertical through the footprint centre, then the offset
    a = float(rng.uniform(0.0, 2.0 * np.pi)) if yaw else 0.0
    r = max_offset * np.sqrt(rng.uniform()) if max_offset > 0 else 0.0
    phi = rng.uniform(0.0, 2.0 * np.pi)
    c = np.array([(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0, -lo[2]])
    place = np.eye(4)
    place[:3, :3] = [[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]]
    place[:3, 3] = c * [1, 1, 0] + [r * np.cos(phi), r * np.sin(phi), c[2]] - place[:3, :3] @ (c * [1, 1, 0])
    part_pose = CellModel.default().part_pose()
    scene = SimulatedScene.inspection_cell()
    world = part_pose @ place
    scene.set_part(mesh, pose=world)
    centre = world[:3, :3] @ ((lo + hi) / 2.0) + world[:3, 3]
    opts = dict(sensor) if sensor is not None else cell_sensor_options()
    sim = make_sensor({"type": "motioncam", **opts, "scene": scene, "seed": int(rng.integers(2 ** 31))})
    sim.connect()
    az0 = rng.uniform(0.0, 360.0)
    scans = []
    try:
        for v in range(n_views):
            az = az0 + 360.0 * v / n_views + rng.uniform(-15.0, 15.0)
            pose = default_viewpoint(centre, sim.working_distance, elevation_deg=float(rng.uniform(*elevation_deg)),
                                     azimuth_deg=float(az))
            frame = sim.grab(pose)
            scans.append(ViewScan(np.asarray(frame.points, np.float64), np.asarray(frame.sensor_pose)))
    finally:
        sim.close()
    pts = fuse_scans(scans, part_pose=part_pose, voxel_size=voxel_size)
    return pts, np.linalg.inv(place)


# the extent that makes a part "longer" (near-duplicates of the cell benchmark)
_LENGTH_KEY = {"block": "length", "pocket_block": "length", "flange": "diameter", "bracket": "base_length",
               "mold_insert": "length", "boss_plate": "length", "u_channel": "length"}


def _low_params(family: str, p: dict, rng: np.random.Generator) -> dict:
    """Parameters of a thin / low variant (5-15 mm high) of a family's random part [m]."""
    mm = 1e-3
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 1) * mm  # noqa: E731
    p = dict(p)
    if family == "block":
        p.update(height=u(5, 12), chamfer=min(p["chamfer"], 1e-3))
    elif family == "pocket_block":
        p.update(height=u(12, 15), chamfer=min(p["chamfer"], 1e-3))
        p["pocket_depth"] = round(p["height"] * 0.4, 4)
    elif family == "flange":
        p.update(thickness=u(5, 8), hub_height=u(4, 6), chamfer=min(p["chamfer"], 1e-3))
    elif family == "bracket":
        p.update(thickness=u(4, 5), upright_height=u(12, 15), inner_fillet=u(2, 3))
    elif family == "mold_insert":
        p.update(shoulder_height=u(6, 7), core_height=u(6, 8), chamfer=min(p["chamfer"], 1e-3),
                 cooling_diameter=u(2.5, 3))
        p["cavity_depth"] = round(p["core_height"] * 0.4, 4)
    elif family == "boss_plate":
        p.update(thickness=u(5, 6), boss_height=u(5, 8), hole_depth=u(4, 6))
    elif family == "u_channel":
        p.update(height=u(12, 15), base=u(4, 5), wall=u(3, 4))
    return p


def cell_catalogue(n_base: int = 16, *, seed: int = 0, delta: float = 0.0015, low_share: float = 0.5,
                   withheld: int = 0) -> tuple[list, list]:
    """Part types for the cell-like classification benchmark.

    ``n_base`` base types cycle through every procedural family (the later half, ``low_share``,
    as thin / low variants 5-15 mm high: plates, flat brackets, low channels); each has a
    near-duplicate ``"<name>_long"`` whose length (a flange's diameter) is ``delta`` longer.
    ``withheld`` more types of random families and dimensions are drawn from another stream,
    for the test that types missing from the library come back ``unknown``.

    Returns:
        ``(library parts (2 * n_base), withheld parts)``.
    """
    from cosarad_ros.core.data.parts import PART_FAMILIES, make_part

    if n_base < 1 or withheld < 0:
        raise ValueError(f"n_base must be >= 1 and withheld >= 0, got {n_base}, {withheld}")
    fams = sorted(PART_FAMILIES)
    rng = np.random.default_rng(seed)
    n_low = int(round(n_base * low_share))

    def draw(fam: str, name: str, low: bool, r: np.random.Generator):
        for _ in range(20):  # CSG can reject an unlucky combination; draw again
            params = PART_FAMILIES[fam].sample_params(r)
            if low:
                params = _low_params(fam, params, r)
            try:
                return make_part(fam, params, name=name)
            except ValueError:
                continue
        raise ValueError(f"could not build a valid {fam} part")

    base, parts = [], []
    for i in range(n_base):
        low = i >= n_base - n_low
        fam = fams[i % len(fams)]
        base.append(draw(fam, f"{fam}_{'low_' if low else ''}{i:02d}", low, rng))
    for b in base:
        params = dict(b.params)
        key = _LENGTH_KEY[b.family]
        params[key] = round(float(params[key]) + delta, 6)
        if b.family == "flange":
            params["bolt_circle"] = round((params["hub_diameter"] + params["diameter"]) / 2, 7)
        parts += [b, make_part(b.family, params, name=f"{b.name}_long")]
    r2 = np.random.default_rng([seed, 1])
    held = [draw(fams[int(r2.integers(len(fams)))], f"withheld_{k:02d}", bool(r2.random() < low_share), r2)
            for k in range(withheld)]
    return parts, held
