"""View plans kept on disk, so a part type's views are planned once, when its CAD model arrives.

The cell, the simulated good templates and ``cosarad cad add`` all plan a part type's views with
:func:`~.views.plan_views` on the same mesh and cell. :func:`cached_plan` does that once and keeps
the result in ``plan_<key>.npz``; the key hashes the mesh, the cell (its URDF, sensor preset and
home configuration), the planner options and the source code of the planning package, so an entry
is never reused after any of them changed. The file holds plain arrays and one JSON document
(no pickled objects), so a cache folder from elsewhere cannot run code when it is read.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .views import View, ViewPlan
from .visibility import SurfaceSamples

__all__ = ["PLAN_CODE", "plan_key", "save_plan", "load_plan", "cached_plan"]

#: modules whose code determines a view plan (part of the cache key)
PLAN_CODE = ("cosarad_ros.core.planning",)


def plan_key(mesh, cell, *, seed: int = 0, options: dict | None = None) -> str:
    """Cache key of the plan of ``mesh`` in ``cell`` with ``plan_views`` ``options`` and ``seed``."""
    from cosarad_ros.core.cachekey import content_key, source_fingerprint

    return content_key(mesh, cell.urdf, cell.sensor_type, np.asarray(cell.home, dtype=np.float64), int(seed),
                       {k: str(v) for k, v in sorted((options or {}).items())}, source_fingerprint(*PLAN_CODE))


def save_plan(plan: ViewPlan, path) -> Path:
    """Write ``plan`` to ``path`` (``.npz``; written to a temporary file first, then renamed)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "samples_points": plan.samples.points, "samples_normals": plan.samples.normals,
        "samples_areas": plan.samples.areas, "samples_faces": plan.samples.faces,
        "start": np.asarray(plan.start, dtype=np.float64)}
    views = []
    for i, v in enumerate(plan.views):
        arrays[f"view{i}_sensor_pose"] = np.asarray(v.sensor_pose, dtype=np.float64)
        arrays[f"view{i}_joints"] = np.asarray(v.joints, dtype=np.float64)
        arrays[f"view{i}_visible"] = np.asarray(v.visible_indices, dtype=np.int64)
        arrays[f"view{i}_part_pose"] = np.asarray(v.part_pose, dtype=np.float64)
        if v.path is not None:
            arrays[f"view{i}_path"] = np.asarray(v.path, dtype=np.float64)
        views.append({"coverage_gain": float(v.coverage_gain), "candidate": int(v.candidate),
                      "has_path": v.path is not None})
    meta = {"views": views, "coverage": plan.coverage, "planning_time": plan.planning_time,
            "joint_names": list(plan.joint_names), "target_coverage": plan.target_coverage,
            "visible_fraction": plan.visible_fraction,
            "geometric_visible_fraction": plan.geometric_visible_fraction,
            "surface_coverage": plan.surface_coverage, "n_candidates": plan.n_candidates,
            "n_feasible": plan.n_feasible, "blocked_transitions": plan.blocked_transitions,
            "travel_time": plan.travel_time, "travel_time_unordered": plan.travel_time_unordered,
            "solver": plan.solver, "timings": {k: float(t) for k, t in plan.timings.items()}}
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def load_plan(path) -> ViewPlan:
    """The :class:`~.views.ViewPlan` that :func:`save_plan` wrote to ``path``.

    Raises:
        ValueError: a file that is not a readable plan (missing entries, bad JSON).
        FileNotFoundError: no file at ``path``.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            views = []
            for i, v in enumerate(meta["views"]):
                views.append(View(sensor_pose=z[f"view{i}_sensor_pose"], joints=z[f"view{i}_joints"],
                                  coverage_gain=float(v["coverage_gain"]), visible_indices=z[f"view{i}_visible"],
                                  part_pose=z[f"view{i}_part_pose"], candidate=int(v["candidate"]),
                                  path=z[f"view{i}_path"] if v["has_path"] else None))
            samples = SurfaceSamples(z["samples_points"], z["samples_normals"], z["samples_areas"],
                                     z["samples_faces"])
            start = z["start"]
    except FileNotFoundError:
        raise
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable view plan: {exc}") from exc
    if not views:
        raise ValueError(f"{path} is not a readable view plan: it has no views")
    return ViewPlan(views=tuple(views), coverage=float(meta["coverage"]), planning_time=float(meta["planning_time"]),
                    joint_names=tuple(meta["joint_names"]), target_coverage=float(meta["target_coverage"]),
                    samples=samples, visible_fraction=float(meta["visible_fraction"]),
                    geometric_visible_fraction=float(meta["geometric_visible_fraction"]),
                    surface_coverage=float(meta["surface_coverage"]), n_candidates=int(meta["n_candidates"]),
                    n_feasible=int(meta["n_feasible"]), blocked_transitions=int(meta["blocked_transitions"]),
                    travel_time=float(meta["travel_time"]), travel_time_unordered=float(meta["travel_time_unordered"]),
                    start=start, solver=str(meta["solver"]), timings=dict(meta["timings"]))


def cached_plan(mesh, *, cell=None, cache_dir=None, seed: int = 0, progress=None, **options) -> ViewPlan:
    """:func:`~.views.plan_views` of ``mesh``, kept in ``cache_dir`` (``plan_<key>.npz``, see
    :func:`plan_key`); without ``cache_dir`` it plans every time.

    Args:
        mesh: the part (trimesh, metres, part frame).
        cell: ``CellModel`` (default ``CellModel.default()``).
        cache_dir: folder of the plan files (created when needed), or None.
        seed: planner seed.
        progress: optional ``callback(message)``, told when the views are being planned.
        **options: further ``plan_views`` keywords (part of the key).

    Returns:
        :class:`~.views.ViewPlan`; a loaded plan has the planning time of when it was made.
    """
    from .cell import CellModel
    from .views import plan_views

    cell = cell or CellModel.default()
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"plan_{plan_key(mesh, cell, seed=seed, options=options)}.npz"
        if path.is_file():
            try:
                return load_plan(path)
            except ValueError:
                pass  # unreadable entry: plan again and overwrite it
    if progress is not None:
        progress("planning views")
    plan = plan_views(mesh, cell=cell, seed=seed, **options)
    if path is not None:
        save_plan(plan, path)
    return plan
