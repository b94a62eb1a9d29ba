"""Applying defects: the registry of defect models (:data:`DEFECT_MODELS`),
:func:`apply_defect` (point clouds) and :func:`apply_defect_to_mesh` (meshes).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...geometry import as_points
from ...io import sample_mesh
from .base import DefectModel, _sizes, _Surface
from .cad_holes import _cad_hole_defect
from .displacement import Bend, Bulge, Scratch, Sink
from .helpers import _signed_distance, refine_mesh_near
from .kinds import ALL_DEFECT_TYPES, CAD_DEFECT_TYPES
from .records import DefectRecord, DefectResult
from .region import Broken, Crack, HoleDefect, _csg_subtract, _delete_inside

#: least share of the surface a defect changes that must lie where ``where`` allows
#: (:func:`apply_defect_to_mesh`)
MIN_WHERE_SHARE = 0.5
#: placements drawn again because too little of the defect lay where ``where`` allows, before
#: the last one is kept anyway
HIDDEN_TRIES = 20

DEFECT_MODELS: dict[str, DefectModel] = {m.kind: m for m in (
    Bulge(), Sink(), Scratch(), Crack(), HoleDefect(), Bend(), Broken())}


def _check_kind(kind):
    if kind not in ALL_DEFECT_TYPES:
        raise ValueError(f"unknown defect type {kind!r}; choose from {list(ALL_DEFECT_TYPES)}")


def _record(kind, p, size, min_shift, footprint, extra=None, **geometry) -> DefectRecord:
    keep = {k: v for k, v in size.items()}
    return DefectRecord(kind=kind, centre=tuple(float(v) for v in p["centre"]),
                        normal=tuple(float(v) for v in p["normal"]),
                        direction=tuple(float(v) for v in p.get("direction", np.zeros(3))),
                        size=keep, footprint=float(footprint), min_shift=float(min_shift),
                        extra=dict(extra or {}), **geometry)


def _footprint(points) -> float:
    if len(points) < 2:
        return 0.0
    return float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))


def apply_defect(points, normals, kind: str, rng: np.random.Generator, *, min_shift: float = 5e-5,
                 rim: float | None = None, part=None, max_rel_size: float = 0.4,
                 max_tries: int = 10, min_anomalous: int = 5, **size) -> DefectResult:
    """Apply a defect to a sampled point cloud and return its point mask.

    Args:
        points: ``(N, 3)`` surface samples in metres (part frame).
        normals: ``(N, 3)`` outward unit normals (required: defects act along them).
        kind: one of :data:`DEFECT_TYPES` (or :data:`CAD_DEFECT_TYPES` with ``part``).
        rng: random generator (location, sizes, shapes).
        min_shift: displacement above which a point counts as moved (metres).
        rim: for removal kinds, kept points within ``rim`` of a removed point are anomalous
            (default: 2.5 x the median nearest-neighbour distance, about one sample spacing).
        part: the procedural :class:`~cosarad_ros.core.data.parts.Part` (CAD kinds only; the
            result is a fresh sample of the changed part with as many points).
        max_rel_size: cap of lengths / diameters relative to the longest side of the cloud.
        max_tries: new locations tried when a defect touches fewer than ``min_anomalous`` points.
        **size: fixed sizes in metres (see :data:`SIZE_RANGES_MM` for keys), e.g.
            ``depth=0.0005``.

    Returns:
        :class:`DefectResult`.

    Raises:
        ValueError: bad input, unknown kind or size key, or no placement touched enough points.
    """
    from scipy.spatial import cKDTree

    _check_kind(kind)
    pts = as_points(points, name="points", min_points=10)
    nrm = as_points(normals, name="normals")
    if nrm.shape != pts.shape:
        raise ValueError(f"normals shape {nrm.shape} != points shape {pts.shape}")
    if rim is None:
        d, _ = cKDTree(pts).query(pts, k=2)
        rim = 2.5 * float(np.median(d[:, 1]))
    if kind in CAD_DEFECT_TYPES:
        new_part, rec = _cad_hole_defect(part, kind, rng, size, min_shift)
        new_pts, new_nrm = sample_mesh(new_part.mesh, len(pts), seed=int(rng.integers(2**31)))
        mask = rec.label_points(new_pts, tol=rim)
        return DefectResult(new_pts, new_nrm, mask, np.arange(len(new_pts)), rec)
    model = DEFECT_MODELS[kind]
    surface = _Surface(pts, nrm)
    last = 0
    for _ in range(max_tries):
        sz = _sizes(kind, rng, surface, size, max_rel_size)
        p = {**sz, **model.place(rng, surface, sz)}
        if model.moves:
            D = model.displacement(p, pts, nrm)
            mag = np.linalg.norm(D, axis=1)
            mask = mag > min_shift
            last = int(mask.sum())
            if last < min_anomalous:
                continue
            out_n = model.rotate_normals(p, pts, nrm) if isinstance(model, Bend) else nrm.copy()
            moved = pts + D
            rec = _record(kind, p, sz, min_shift, _footprint(moved[mask]), anomalous_points=moved[mask])
            return DefectResult(moved, out_n, mask, np.arange(len(pts)), rec)
        cut = model.cutter(p, surface)
        keep = _signed_distance(cut.vertices, cut.faces, pts) >= 0
        last = int((~keep).sum())
        if last < min_anomalous or keep.sum() < 10:
            continue
        # the points left that border the vanished samples (within rim of one)
        gone = pts[~keep]
        d, _ = cKDTree(gone).query(pts[keep], k=1, distance_upper_bound=rim)
        mask = np.isfinite(d)
        if mask.sum() < min_anomalous:
            continue
        kept = np.nonzero(keep)[0]
        rec = _record(kind, p, sz, min_shift, _footprint(gone), anomalous_points=gone)
        return DefectResult(pts[keep], nrm[keep], mask, kept, rec)
    raise ValueError(f"{kind}: no placement affected at least {min_anomalous} points in {max_tries} "
                     f"tries (last: {last}); the cloud may be too sparse for the requested size")


def apply_defect_to_mesh(mesh, kind: str, rng: np.random.Generator, *, min_shift: float = 5e-5,
                         max_rel_size: float = 0.4, max_tries: int = 10, csg: bool = True,
                         check_samples: int = 30000, where=None, **size):
    """Apply a defect to a mesh; the returned record labels any later scan of the result.

    "moves" kinds refine the mesh near the defect (edges about 1/14 of a dent's diameter, 1/5 of
    a scratch's width) and displace vertices. "removes" kinds subtract the cutter with
    manifold3d when the mesh is a closed manifold and ``csg`` is True (walls and floors appear),
    otherwise delete the (refined) faces inside the cutter (an opening in the surface). CAD kinds
    rebuild the procedural part with the hole changed.

    Args:
        mesh: ``trimesh.Trimesh`` in metres, or a :class:`~cosarad_ros.core.data.parts.Part`
            (required for CAD kinds).
        kind: one of :data:`ALL_DEFECT_TYPES`.
        rng: random generator.
        min_shift: displacement that counts as "moved" (metres).
        max_rel_size: cap of lengths / diameters relative to the part's longest side.
        max_tries: locations tried until the defect visibly changes the surface.
        csg: use boolean subtraction for removal kinds when possible.
        check_samples: surface samples used to place the defect and measure its footprint.
        where: optional ``callable(points (N, 3), normals (N, 3)) -> (N,) bool`` marking the
            surface where the defect may lie (e.g. what a cell can see): its centre, and at least
            :data:`MIN_WHERE_SHARE` of the surface it changes (each changed sample judged at the
            nearest point of the original surface; a sink centred on the rim of a hole that
            mostly deforms the hole's wall is placed elsewhere); ``None``: anywhere. Ignored by
            CAD kinds (they change a hole) and by ``bend`` (a whole tab).
        **size: fixed sizes in metres (keys of :data:`SIZE_RANGES_MM`; ``hole_index`` for CAD).

    Returns:
        ``(defective trimesh.Trimesh, DefectRecord)``.

    Raises:
        ValueError: unknown kind or size key, a mesh without faces, CAD kinds without a part
        with holes, or no placement changed the surface.
    """
    import trimesh

    _check_kind(kind)
    part = None
    if hasattr(mesh, "mesh") and hasattr(mesh, "holes"):
        part, mesh = mesh, mesh.mesh
    if not hasattr(mesh, "faces") or len(mesh.faces) == 0:
        raise ValueError("mesh has no faces")
    if kind in CAD_DEFECT_TYPES:
        new_part, rec = _cad_hole_defect(part, kind, rng, size, min_shift)
        return new_part.mesh.copy(), rec
    V0 = np.asarray(mesh.vertices, dtype=np.float64)
    F0 = np.asarray(mesh.faces, dtype=np.int64)
    spts, snrm = sample_mesh(mesh, check_samples, seed=int(rng.integers(2**31)))
    surface = _Surface(spts, snrm)
    places = surface
    if where is not None and kind != "bend":
        allowed = np.asarray(where(spts, snrm), dtype=bool).reshape(-1)
        if allowed.shape != (len(spts),):
            raise ValueError(f"where must return one bool per surface sample, got shape {allowed.shape}")
        if not allowed.any():
            raise ValueError(f"{kind}: no surface where the defect may be placed (where() marked none)")
        places = _Surface(spts[allowed], snrm[allowed])
    model = DEFECT_MODELS[kind]
    watertight = None
    hidden = 0
    tries = 0
    while tries < max_tries:
        tries += 1
        sz = _sizes(kind, rng, surface, size, max_rel_size)
        p = {**sz, **model.place(rng, places, sz)}
        if model.moves:
            V, F = refine_mesh_near(V0, F0, lambda x: model.influence(p, x), radius=0.0,
                                    max_edge=model.max_edge(p))
            vn = trimesh.Trimesh(vertices=V, faces=F, process=False).vertex_normals
            D = model.displacement(p, V, np.asarray(vn))
            shift = np.linalg.norm(D, axis=1)
            if int((shift > min_shift).sum()) < 3:
                continue
            out = trimesh.Trimesh(vertices=V + D, faces=F, process=False)
            rec = _record(kind, p, sz, min_shift, 0.0, mesh_vertices=np.asarray(out.vertices),
                          mesh_faces=np.asarray(F), vertex_shift=shift)
        else:
            cut = model.cutter(p, surface)
            res = None
            if csg:
                if watertight is None:
                    watertight = bool(mesh.is_watertight)
                if watertight:
                    res = _csg_subtract(mesh, cut)
            if res is None:
                res = _delete_inside(V0, F0, cut, model.max_edge(p))
            if res is None:
                continue
            out, region = res
            rec = _record(kind, p, sz, min_shift, 0.0, region_vertices=np.asarray(region.vertices),
                          region_faces=np.asarray(region.faces))
        # measure the anomalous footprint on a sample of the result (and check it is visible)
        chk, _ = sample_mesh(out, check_samples, seed=int(rng.integers(2**31)))
        lab = rec.label_points(chk, tol=max(min_shift, 1e-4))
        if lab.sum() < 5:
            continue
        if places is not surface and hidden < HIDDEN_TRIES:
            from scipy.spatial import cKDTree

            _, nearest = cKDTree(spts).query(chk[lab], k=1)
            if allowed[nearest].mean() < MIN_WHERE_SHARE:
                hidden += 1  # mostly where ``where`` forbids: draw again, on its own budget
                tries -= 1
                continue
        rec = replace(rec, footprint=_footprint(chk[lab]))
        return out, rec
    raise ValueError(f"{kind}: no placement changed the surface in {max_tries} tries")
