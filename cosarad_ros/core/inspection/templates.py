"""Good templates of a part type simulated from its CAD model, so a new part type needs only its
CAD file (an addition to COSARAD, whose templates are scans of good parts).

The templates are made the way the cell scans a real part: the view planner's views of the CAD
model in the cell, one simulated structured-light scan per view (a different noise seed per
template), and the same fusion (:func:`cosarad_ros.core.inspection.fusion.fuse_scans`) as the inspection
manager. Test scans and templates therefore share coverage, density and noise.
"""
from __future__ import annotations

import threading
from typing import Mapping

import numpy as np

from cosarad_ros.core.inspection.detection import CadTemplates

__all__ = ["simulate_templates", "cached_templates", "cad_template_source", "cell_sensor_options",
           "prepare_part_types", "default_cache_dir", "DEFAULT_SIM_RESOLUTION", "CELL_TEMPLATES"]


DEFAULT_SIM_RESOLUTION = (560, 400)
#: good templates the cell simulates per part type (``anomaly_node`` parameter ``n_templates``)
CELL_TEMPLATES = 3


def default_cache_dir() -> str:
    """Where the ROS cell keeps view plans, templates and memory banks when not told otherwise:
    ``$ROS_HOME/cosarad_banks`` (``~/.ros/cosarad_banks``).
    """
    import os

    return os.path.join(os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "cosarad_banks")


def cell_sensor_options(cell=None, **overrides) -> dict:
    """Simulated structured-light options matching the cell's sensor preset (field of view,
    working range, stand-off, baseline), at :data:`DEFAULT_SIM_RESOLUTION` unless overridden, so
    simulated scans see what the view planner expects.
    """
    from cosarad_ros.core.planning import CellModel
    from cosarad_ros.core.planning.candidates import sensor_for_cell

    opts = {**sensor_for_cell(cell or CellModel.default()).scanner_kwargs(),
            "resolution": DEFAULT_SIM_RESOLUTION}
    opts.update(overrides)
    return opts


def simulate_templates(mesh, n_templates: int = 4, seed: int = 0, *, cell=None, sensor: Mapping | None = None,
                       plan: object | None = None, voxel_size: float | None = None,
                       max_views: int = 0) -> list[np.ndarray]:
    """Simulated multi-view scans of a CAD model, fused in the part frame.

    Args:
        mesh: the part (trimesh, metres, part frame).
        n_templates: how many templates (each with its own sensor noise seed).
        seed: base seed.
        cell: ``CellModel`` (default: ``CellModel.default()``).
        sensor: simulated-sensor options (``make_sensor`` keys); default :func:`cell_sensor_options`.
        plan: a ``ViewPlan`` to reuse; None: plan the views here.
        voxel_size: fusion voxel [m] (default the cell's, :data:`~.fusion.CELL_VOXEL`).
        max_views: cap on planned views (0: none).

    Returns:
        ``n_templates`` arrays ``(N_i, 3)`` in the part frame.

    Raises:
        ValueError: bad mesh, unreachable part, or a scan that sees nothing.
    """
    from cosarad_ros.core.inspection.fusion import CELL_VOXEL, fuse_scans
    from cosarad_ros.core.inspection.pipeline import ViewScan
    from cosarad_ros.core.planning import CellModel, plan_views
    from cosarad_ros.core.sensors import SimulatedScene, make_sensor

    if n_templates < 1:
        raise ValueError(f"n_templates must be >= 1, got {n_templates}")
    cell = cell or CellModel.default()
    if plan is None:
        plan = plan_views(mesh, cell=cell, seed=seed, max_views=max_views)
    scene = SimulatedScene.inspection_cell()
    out = []
    for k in range(n_templates):
        opts = dict(sensor) if sensor is not None else cell_sensor_options(cell)
        sensor_cfg = {"type": "motioncam", **opts, "scene": scene, "seed": seed + 1000 + k}
        sim = make_sensor(sensor_cfg)
        sim.connect()
        try:
            scans = []
            for view in plan.views:
                scene.set_part(mesh, pose=view.part_pose)
                frame = sim.grab(view.sensor_pose)
                scans.append(ViewScan(np.asarray(frame.points, np.float64), np.asarray(frame.sensor_pose)))
        finally:
            sim.close()
        # simulated views come from exact poses: there is nothing for the view-to-view refinement
        # to correct (it would be measured and dropped, fuse_views' min_residual_gain)
        out.append(fuse_scans(scans, part_pose=plan.views[0].part_pose, voxel_size=voxel_size or CELL_VOXEL,
                              refine=False))
    return out


#: modules whose code determines a simulated template (part of the template cache key)
TEMPLATE_CODE = ("cosarad_ros.core.planning", "cosarad_ros.core.sensors", "cosarad_ros.core.inspection.fusion",
                 "cosarad_ros.core.registration.fusion", "cosarad_ros.core.inspection.templates")


def cached_templates(mesh, n_templates: int, seed: int = 0, *, cache_dir=None, sensor: Mapping | None = None,
                     progress=None) -> list[np.ndarray]:
    """:func:`simulate_templates`, kept on disk in ``cache_dir`` (``templates_<key>.npz``; the key
    hashes the mesh, the count, the seed, the sensor options and the simulation's source code),
    through the views of the part's cached plan (:func:`~cosarad_ros.core.planning.plan_cache.cached_plan`
    in the same folder: the plan the cell inspects the part type with).
    """
    from pathlib import Path

    from cosarad_ros.core.cachekey import content_key, source_fingerprint

    if cache_dir is None:
        return simulate_templates(mesh, n_templates, seed, sensor=sensor)
    opts = dict(sensor) if sensor is not None else cell_sensor_options()
    key = content_key(mesh, int(n_templates), int(seed), {k: str(v) for k, v in opts.items()},
                      source_fingerprint(*TEMPLATE_CODE))
    path = Path(cache_dir) / f"templates_{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return [z[f"t{i}"] for i in range(int(n_templates))]
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache entry: simulate again and overwrite it
    from cosarad_ros.core.planning.plan_cache import cached_plan

    plan = cached_plan(mesh, cache_dir=cache_dir, seed=int(seed), progress=progress)
    if progress is not None:
        progress(f"simulating {n_templates} good templates")
    out = simulate_templates(mesh, n_templates, seed, sensor=sensor, plan=plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"t{i}": t for i, t in enumerate(out)})
    tmp.replace(path)
    return out


def cad_template_source(cad_library: str, *, n_templates: int = 4, seed: int = 0,
                        sensor: Mapping | None = None, cache_dir=None) -> CadTemplates:
    """A :class:`~cosarad_ros.core.inspection.detection.CadTemplates` over a CAD library folder
    (templates kept on disk in ``cache_dir`` when given, see :func:`cached_templates`).
    """
    from cosarad_ros.core.cad import CadLibrary

    lock = threading.Lock()
    state: dict = {}

    def model_for(part_type: str):
        with lock:
            lib = state.get("lib")
            if lib is None or part_type not in lib:
                lib = state["lib"] = CadLibrary(cad_library)  # models added at run time are seen
            return lib.get(part_type) if part_type in lib else None

    def make(mesh, n, s):
        return cached_templates(mesh, n, s, sensor=sensor, cache_dir=cache_dir)

    return CadTemplates(model_for=model_for, make_templates=make, n_templates=n_templates, seed=seed)


def prepare_part_types(cad_library, *, cache_dir, labels=None, n_templates: int = CELL_TEMPLATES, seed: int = 0,
                       progress=None) -> dict[str, dict]:
    """Get part types ready before their first part arrives: plan each one's views and simulate
    its good templates into ``cache_dir`` (:func:`cached_templates`), where the cell loads them.
    A part type already prepared with the same mesh, cell, settings and code is only read back.

    Args:
        cad_library: CAD library folder.
        cache_dir: the cell's cache folder (the ``anomaly_node``'s ``cache_dir``; the in-process
            cell's ``<work dir>/banks``; :func:`default_cache_dir`).
        labels: part types (default: every model of the library).
        n_templates, seed: as the cell simulates them (:data:`CELL_TEMPLATES`, 0).
        progress: optional ``callback(message)``.

    Returns:
        ``{label: {"seconds": float, "templates": int, "points": int}}`` for each prepared part
        type, or ``{label: {"error": message}}`` for one that could not be prepared (an
        unreachable part, for example); the others are prepared regardless.

    Raises:
        ValueError: an unknown label, or ``n_templates < 1``.
    """
    import time

    from cosarad_ros.core.cad import CadLibrary

    if n_templates < 1:
        raise ValueError(f"n_templates must be >= 1, got {n_templates}")
    lib = CadLibrary(cad_library)
    todo = list(lib.labels if labels is None else labels)
    unknown = [t for t in todo if t not in lib]
    if unknown:
        raise ValueError(f"unknown part type(s) {', '.join(unknown)}: the library {cad_library} has "
                         f"{', '.join(lib.labels) or 'no models'}")
    out: dict[str, dict] = {}
    for i, label in enumerate(todo, 1):
        say = (lambda m, _l=label, _i=i: progress(f"{_l} ({_i}/{len(todo)}): {m}")) if progress else None
        t0 = time.perf_counter()
        try:
            tm = cached_templates(lib.get(label).mesh, n_templates, seed, cache_dir=cache_dir, progress=say)
        except ValueError as exc:
            out[label] = {"error": str(exc)}
            continue
        out[label] = {"seconds": time.perf_counter() - t0, "templates": len(tm), "points": int(sum(map(len, tm)))}
    return out
