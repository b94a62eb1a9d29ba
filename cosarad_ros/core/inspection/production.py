"""Simulated production runs for the inspection cell: a CAD library of part types, and a
sequence of parts to inspect (good ones and ones with injected defects), written as mesh files.

Used by ``cosarad demo`` (a short showcase: :func:`make_cell_scenario`), ``cosarad cell-eval``
(many parts, graded defect sizes: :func:`make_production_run`) and the end-to-end tests;
everything is deterministic for a seed.

Like real production, good parts are not copies of their CAD model: each varies within a stated
tolerance (:class:`Variation`: every box dimension within +-0.05 mm, plus a gentle form
deviation of at most 0.02 mm), and must PASS. Defects are centred only where a cell can see them
(not on the fixture contact face, not on faces that look down at the fixture, not where the part
hides the surface from every direction above; see :func:`seen_from_above`).

Part types are procedural families (``block``, ``pocket_block``, ``flange``, ``bracket``,
``mold_insert``, ``boss_plate``, ``u_channel``; :mod:`cosarad_ros.core.data.parts`) or real meshes
that ship with installed packages (``sh1``, ``tr12j``, ... ;
:mod:`cosarad_ros.core.data.package_meshes`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["CellPart", "CellScenario", "Variation", "make_cell_scenario", "make_production_run",
           "make_part_type", "visible_from_above", "seen_from_above", "graded_sizes", "DEFAULT_FAMILIES",
           "DEFAULT_DEFECTS", "EVAL_TYPES", "EVAL_DEFECTS", "GRADED_SIZES_MM", "GROSS_SIZES_MM", "SIZE_PRESETS",
           "severity_of"]

DEFAULT_FAMILIES = ("flange", "bracket", "pocket_block")
DEFAULT_DEFECTS = ("bulge", "sink", "hole")
DEFAULT_DEFECT_SIZES: Mapping[str, Mapping[str, tuple[float, float]]] = {
    # metres; (low, high) drawn uniformly: clearly visible industrial defects for the showcase
    "bulge": {"diameter": (0.014, 0.018), "height": (0.0012, 0.0016)},
    "sink": {"diameter": (0.014, 0.018), "depth": (0.0012, 0.0016)},
    "hole": {"diameter": (0.008, 0.010), "depth": (0.003, 0.005)},
}

#: part types of the production-run evaluation: every procedural family and two real meshes
EVAL_TYPES = ("block", "pocket_block", "flange", "bracket", "mold_insert", "boss_plate", "u_channel",
              "sh1", "tr12j")
#: every defect kind of the data layer
EVAL_DEFECTS = ("bulge", "sink", "scratch", "crack", "hole", "bend", "broken", "hole_position", "hole_diameter")

#: graded sizes of the evaluation, millimetres (degrees for ``angle_deg``): ``(low, high)`` and
#: the primary size first. Primary sizes are stratified over a run on a log scale, so subtle and
#: gross defects are equally common; the others are drawn log-uniformly.
GRADED_SIZES_MM: dict[str, dict[str, tuple[float, float]]] = {
    "bulge": {"height": (0.1, 2.0), "diameter": (3.0, 25.0)},
    "sink": {"depth": (0.1, 2.0), "diameter": (3.0, 25.0)},
    "scratch": {"depth": (0.1, 2.0), "length": (5.0, 50.0), "width": (0.5, 2.0)},
    "crack": {"depth": (0.5, 5.0), "length": (5.0, 30.0), "width": (0.3, 1.0)},
    "hole": {"diameter": (2.0, 10.0), "depth": (0.5, 5.0)},
    "bend": {"angle_deg": (0.5, 5.0), "zone": (2.0, 6.0)},
    "broken": {"radius": (2.0, 12.0)},
    "hole_position": {"offset": (0.8, 2.0)},
    "hole_diameter": {"change": (0.6, 2.0)},
}
#: the gross end of the same ranges: every defect at least 0.5 mm deep (or high) and 5 mm across
GROSS_SIZES_MM: dict[str, dict[str, tuple[float, float]]] = {
    **GRADED_SIZES_MM,
    "bulge": {"height": (0.5, 2.0), "diameter": (5.0, 25.0)},
    "sink": {"depth": (0.5, 2.0), "diameter": (5.0, 25.0)},
    "scratch": {"depth": (0.5, 2.0), "length": (5.0, 50.0), "width": (0.5, 2.0)},
    "hole": {"diameter": (5.0, 10.0), "depth": (1.0, 5.0)},
    "broken": {"radius": (5.0, 12.0)},
    "bend": {"angle_deg": (1.0, 5.0), "zone": (2.0, 6.0)},
}
SIZE_PRESETS = {"graded": GRADED_SIZES_MM, "gross": GROSS_SIZES_MM}

#: defect kinds that need a procedural part with holes
_HOLE_KINDS = ("hole_position", "hole_diameter")


@dataclass(frozen=True)
class CellPart:
    """One part on the line.

    Attributes:
        part_id: serial, e.g. ``"P003"``.
        part_type: CAD label of its type.
        mesh_path: mesh file of this very part (metres, part frame).
        defect: the injected defect (``DefectRecord.to_dict()``: kind, centre, size ... in the
            part frame, metres) or None for a good part.
        expected: ``"PASS"`` for good parts, ``"FAIL"`` for defective ones.
        variation: the part's deviation from its CAD model within tolerance (``Variation`` as a
            dict: ``scale`` per axis, ``form`` amplitude [m]), empty for an exact copy.
        defect_points_path: ``.npy`` file of points sampled on the defect's anomalous surface
            (part frame, metres; about 2 per square millimetre): a scan measured the defect where
            it has points close to these ("" for good parts).
    """

    part_id: str
    part_type: str
    mesh_path: str
    defect: dict | None
    expected: str
    variation: dict | None = None
    defect_points_path: str = ""

    def defect_points(self) -> np.ndarray | None:
        """The anomalous-surface samples of :attr:`defect_points_path` ``(K, 3)``, or None."""
        if not self.defect_points_path or not Path(self.defect_points_path).is_file():
            return None
        return np.load(self.defect_points_path)


@dataclass(frozen=True)
class CellScenario:
    cad_dir: Path
    parts: tuple[CellPart, ...]
    part_types: tuple[str, ...]

    def manifest(self, relative_to=None) -> dict:
        """The ``scenario.json`` document; with ``relative_to`` (the scenario's folder) its paths
        are written relative to that folder, so the folder can be moved or read from anywhere.
        """
        def rel(x: str) -> str:
            if not x or relative_to is None:
                return str(x)
            try:
                return str(Path(x).resolve().relative_to(Path(relative_to).resolve()))
            except ValueError:
                return str(x)

        parts = [{**asdict(p), "mesh_path": rel(p.mesh_path), "defect_points_path": rel(p.defect_points_path)}
                 for p in self.parts]
        return {"cad_dir": rel(str(self.cad_dir)), "part_types": list(self.part_types), "parts": parts}

    @classmethod
    def load(cls, path) -> "CellScenario":
        """Read a ``scenario.json`` written by :func:`make_cell_scenario` / :func:`make_production_run`.

        Raises:
            ValueError: missing keys or files.
        """
        path = Path(path)

        def where(x: str) -> str:
            # relative paths are the scenario folder's; a file written relative to the working
            # folder it was made in is still found from there
            if not x or Path(x).is_absolute() or (not (path.parent / x).exists() and Path(x).exists()):
                return x
            return str(path.parent / x)

        try:
            doc = json.loads(path.read_text())
            parts = tuple(CellPart(**{**p, "mesh_path": where(p["mesh_path"]),
                                      "defect_points_path": where(p.get("defect_points_path", ""))})
                          for p in doc["parts"])
            cad_dir = Path(where(doc["cad_dir"]))
            types = tuple(doc["part_types"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a production-run scenario ({exc})") from None
        missing = [p.mesh_path for p in parts if not Path(p.mesh_path).is_file()]
        if missing:
            raise ValueError(f"{path}: {len(missing)} part meshes are missing, e.g. {missing[0]}")
        return cls(cad_dir, parts, types)


# --------------------------------------------------------------------------------------------
# part types, production variation, defect placement
# --------------------------------------------------------------------------------------------
def make_part_type(name: str, *, seed: int = 0, label: str | None = None, size: float = 0.09):
    """A part type by name: a procedural family (random dimensions from ``seed``) or a package
    mesh (longest side ``size`` metres).

    Returns:
        :class:`~cosarad_ros.core.data.parts.Part` labelled ``label`` (default ``name``).

    Raises:
        ValueError: unknown name, or a package mesh whose package is not installed.
    """
    from cosarad_ros.core.data.package_meshes import PACKAGE_MESHES, load_package_mesh
    from cosarad_ros.core.data.parts import PART_FAMILIES, make_part

    if name in PART_FAMILIES:
        return make_part(name, seed=seed, name=label or name)
    if name in PACKAGE_MESHES:
        part = load_package_mesh(name, size=size)
        return replace(part, name=label or name)
    raise ValueError(f"unknown part type {name!r}: choose a family ({', '.join(sorted(PART_FAMILIES))}) "
                     f"or a package mesh ({', '.join(PACKAGE_MESHES)})")


@dataclass(frozen=True)
class Variation:
    """How one produced part deviates from its CAD model, within tolerance.

    ``x -> centre + scale * (x - centre) + form * warp(x)``: each box dimension changes by
    ``(scale - 1) * extent`` (at most ``dimension`` in absolute terms), about the centre of the
    footprint and the bottom face (the part still rests on the fixture), and a smooth warp of
    wavelength twice the part's size moves the surface by at most ``form``.

    Attributes:
        scale: ``(3,)`` per-axis scale.
        form: warp amplitude [m].
        phase: ``(3, 3)`` warp phases (radians).
    """

    scale: tuple[float, float, float]
    form: float
    phase: tuple

    @classmethod
    def draw(cls, rng: np.random.Generator, extents, *, dimension: float = 5e-5, form: float = 2e-5) -> "Variation":
        """A random variation of a part with box ``extents`` ``(3,)`` [m]: each dimension off by
        up to ``dimension`` [m], a form deviation of up to ``form`` [m].
        """
        ext = np.asarray(extents, dtype=np.float64).reshape(3)
        if not (ext > 0).all():
            raise ValueError(f"extents must be positive, got {ext.tolist()}")
        if dimension < 0 or form < 0:
            raise ValueError(f"dimension and form must be >= 0, got {dimension}, {form}")
        scale = 1.0 + rng.uniform(-dimension, dimension, 3) / ext
        return cls(tuple(float(s) for s in scale), float(rng.uniform(0.5, 1.0) * form),
                   tuple(tuple(float(v) for v in row) for row in rng.uniform(0, 2 * math.pi, (3, 3))))

    def apply(self, points, bounds) -> np.ndarray:
        """Move ``points`` ``(N, 3)`` of a part with ``bounds`` ``(2, 3)``."""
        x = np.asarray(points, dtype=np.float64)
        lo, hi = np.asarray(bounds, dtype=np.float64)
        centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
        size = float((hi - lo).max())
        y = centre + (x - centre) * np.asarray(self.scale)
        if self.form > 0:
            k = math.pi / size  # wavelength 2 x the part's size
            ph = np.asarray(self.phase)
            warp = np.stack([np.sin(k * x[:, (i + 1) % 3] + ph[i, 0]) * np.cos(k * x[:, (i + 2) % 3] + ph[i, 1])
                             for i in range(3)], axis=1)
            y = y + self.form * warp / math.sqrt(3.0)
        return y

    def as_dict(self) -> dict:
        return {"scale": list(self.scale), "form": self.form}


def _vary_mesh(mesh, variation: Variation, bounds):
    import trimesh

    return trimesh.Trimesh(vertices=variation.apply(mesh.vertices, bounds), faces=np.asarray(mesh.faces),
                           process=False)


def _vary_record(record, variation: Variation, bounds):
    """The defect record moved with its part (centre and labelling geometry)."""
    fields = {"centre": tuple(float(v) for v in variation.apply(np.asarray(record.centre)[None], bounds)[0])}
    for key in ("mesh_vertices", "region_vertices", "anomalous_points"):
        v = getattr(record, key)
        if v is not None:
            fields[key] = variation.apply(v, bounds)
    return replace(record, **fields)


def visible_from_above(points, normals, *, min_height: float = 0.003, max_down: float = -0.2) -> np.ndarray:
    """Surface a cell's views from above can measure, by orientation alone: above the fixture
    contact band (``z > min_height`` in the part frame, whose ``z = 0`` is the fixture top) and
    not facing down (normal ``z >= max_down``). ``(N,)`` bool.
    """
    p = np.asarray(points, dtype=np.float64)
    n = np.asarray(normals, dtype=np.float64)
    return (p[:, 2] > min_height) & (n[:, 2] >= max_down)


def seen_from_above(mesh, *, max_incidence_deg: float = 65.0, min_elevation_deg: float = 20.0):
    """A ``where`` for :func:`~cosarad_ros.core.data.defects.apply_defect_to_mesh`: surface points
    :func:`visible_from_above` that a sensor above the fixture could actually see -- a ray leaves
    the point towards at least one direction at least ``min_elevation_deg`` above the horizon and
    within ``max_incidence_deg`` of the surface normal without hitting the part again (so not the
    inside of a deep hole, a pocket's undercut or a face hidden by the part itself).
    """
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
    az = np.radians(np.arange(0.0, 360.0, 30.0))
    dirs = []
    for el in np.radians([min_elevation_deg, 40.0, 60.0, 80.0]):
        dirs += [[np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)] for e, a in zip([el] * len(az), az)]
    dirs = np.asarray(dirs)
    cos_max = np.cos(np.radians(max_incidence_deg))

    def where(points, normals):
        p = np.asarray(points, dtype=np.float64)
        n = np.asarray(normals, dtype=np.float64)
        ok = visible_from_above(p, n)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return ok
        facing = (n[idx] @ dirs.T) >= cos_max                      # (K, D) directions the sensor could use
        rays = np.concatenate([np.repeat(p[idx] + 2e-4 * n[idx], len(dirs), axis=0),
                               np.tile(dirs, (idx.size, 1))], axis=1).astype(np.float32)
        hit = np.isfinite(scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()).reshape(idx.size, len(dirs))
        ok[idx] = (facing & ~hit).any(axis=1)
        return ok

    return where


def _primary_key(kind: str, sizes: Mapping[str, tuple]) -> str:
    return next(iter(sizes[kind]))


def graded_sizes(kind: str, n: int, rng: np.random.Generator,
                 sizes: Mapping[str, Mapping[str, tuple]] = GRADED_SIZES_MM) -> list[dict]:
    """``n`` size dicts (metres; degrees for ``angle_deg``) for ``kind``: the primary size
    stratified on a log scale over its range (one draw per stratum, shuffled), the others
    log-uniform.

    Raises:
        ValueError: unknown kind.
    """
    if kind not in sizes:
        raise ValueError(f"no size range for defect kind {kind!r}; known: {sorted(sizes)}")
    spec = sizes[kind]
    keys = list(spec)
    out = []
    strata = rng.permutation(n)
    for i in range(n):
        d = {}
        for j, key in enumerate(keys):
            lo, hi = spec[key]
            u = (strata[i] + rng.random()) / n if j == 0 else rng.random()
            v = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if lo > 0 else lo + u * (hi - lo)
            d[key] = v if key.endswith("_deg") else v * 1e-3
        out.append(d)
    return out


def severity_of(defect: Mapping) -> dict:
    """``{"depth": m, "across": m}`` of an injected defect (``DefectRecord.to_dict()``): how deep
    (or high, or far off for hole deviations) and how wide across it is, the two numbers a
    specification of detectable defects names. ``across`` is the smallest lateral size (a
    scratch's width, a dent's diameter).
    """
    kind, s = defect["type"], defect["size"]
    depth = {"bulge": s.get("height"), "sink": s.get("depth"), "scratch": s.get("depth"),
             "crack": s.get("depth"), "hole": s.get("depth"), "broken": s.get("radius"),
             "hole_position": s.get("offset"), "hole_diameter": abs(s.get("change", 0.0)) / 2,
             "bend": None}.get(kind)
    across = {"bulge": s.get("diameter"), "sink": s.get("diameter"), "scratch": s.get("width"),
              "crack": s.get("width"), "hole": s.get("diameter"), "broken": 2 * s.get("radius", 0.0),
              "hole_position": s.get("offset"), "hole_diameter": abs(s.get("change", 0.0)),
              "bend": None}.get(kind)
    if kind == "bend":  # the tip of the bent tab moves by about angle x tab length
        depth = math.radians(s.get("angle_deg", 0.0)) * max(defect.get("footprint", 0.0), 0.01)
        across = defect.get("footprint", 0.0)
    return {"depth": float(depth or 0.0), "across": float(across or 0.0)}


# --------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------
def _cad_metadata(part) -> dict:
    """Part metadata in the CAD library's schema (lengths in mm, mesh file in metres)."""
    md = part.metadata()
    return {"label": part.name, "units": "mm", "mesh_units": "m",
            "nominal_dimensions": md["bounding_box"],
            "holes": [{k: h[k] for k in ("centre", "axis", "diameter", "depth")} for h in md["holes"]],
            "description": f"{part.family} part (cosarad_ros.core.data)"}


class _Writer:
    """Writes the CAD library and part meshes of one scenario folder."""

    def __init__(self, out_dir, progress):
        from cosarad_ros.core.cad import CadLibrary

        self.out = Path(out_dir)
        self.cad_dir, self.parts_dir = self.out / "cad", self.out / "parts"
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.library = CadLibrary(self.cad_dir, create=True)
        self.say = progress or (lambda m: None)
        self.queue: list[CellPart] = []

    def add_type(self, part) -> None:
        if part.name not in self.library:
            path = self.parts_dir / f"{part.name}_cad.stl"
            part.mesh.export(path)
            self.library.add(path, label=part.name, metadata=_cad_metadata(part))
        self.say(f"part type {part.name}: {np.round(part.extents * 1000, 1).tolist()} mm")

    def add_part(self, part, mesh, *, defect=None, variation: Variation | None = None,
                 defect_points: np.ndarray | None = None) -> CellPart:
        serial = f"P{len(self.queue) + 1:03d}"
        tag = defect["type"] if defect else "good"
        path = self.parts_dir / f"{serial}_{part.name}_{tag}.stl"
        mesh.export(path)
        dpath = ""
        if defect_points is not None:
            dpath = str(self.parts_dir / f"{serial}_{part.name}_{tag}_defect.npy")
            np.save(dpath, np.asarray(defect_points, dtype=np.float32))
        cp = CellPart(serial, part.name, str(path), defect, "FAIL" if defect else "PASS",
                      variation.as_dict() if variation is not None else None, dpath)
        self.queue.append(cp)
        return cp

    def finish(self, types, rng) -> CellScenario:
        order = rng.permutation(len(self.queue))  # interleave so the run does not look sorted
        scenario = CellScenario(self.cad_dir, tuple(self.queue[i] for i in order), tuple(p.name for p in types))
        (self.out / "scenario.json").write_text(json.dumps(scenario.manifest(relative_to=self.out), indent=2))
        return scenario


def _defective(part, kind: str, rng, size: Mapping[str, float], variation: Variation | None):
    """``(mesh, record dict, anomalous-surface samples (K, 3))`` of ``part`` with defect ``kind``
    of ``size``, then varied.
    """
    from cosarad_ros.core.data.defects import apply_defect_to_mesh
    from cosarad_ros.core.io import sample_mesh

    target = part if kind in _HOLE_KINDS else part.mesh
    mesh, record = apply_defect_to_mesh(target, kind, rng, where=seen_from_above(part.mesh), **size)
    if variation is not None:
        bounds = part.mesh.bounds
        mesh, record = _vary_mesh(mesh, variation, bounds), _vary_record(record, variation, bounds)
    samples, _ = sample_mesh(mesh, int(min(max(2e6 * float(mesh.area), 20000), 400000)), seed=int(rng.integers(2**31)))
    return mesh, record.to_dict(), samples[record.label_points(samples, tol=3e-4)]


def make_cell_scenario(out_dir, *, families: Sequence[str] = DEFAULT_FAMILIES, good_per_type: int = 1,
                       defects: Sequence[str] = DEFAULT_DEFECTS, seed: int = 0,
                       defect_sizes: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
                       vary: bool = True, progress=None) -> CellScenario:
    """Write the CAD library and the part meshes of a short production run into ``out_dir``.

    Args:
        out_dir: folder; ``cad/`` (library) and ``parts/`` (one mesh per inspected part) are
            created in it, plus ``scenario.json``.
        families: one part type per entry (a family or a package mesh, see :func:`make_part_type`).
        good_per_type: good parts per type.
        defects: defect kinds; defect ``k`` goes onto type ``k % len(families)``.
        seed: seed of dimensions, defect placement, variation and order.
        defect_sizes: per kind, ``{size_key: (low, high)}`` in metres (default: clearly visible
            sizes, :data:`DEFAULT_DEFECT_SIZES`).
        vary: good and defective parts vary within tolerance (:class:`Variation`); False: exact
            copies of the CAD model.
        progress: optional ``callback(message: str)``.

    Returns:
        :class:`CellScenario` (parts interleaved: types and good/defective alternate).

    Raises:
        ValueError: no families, unknown family or defect kind.
    """
    from cosarad_ros.core.data.defects import ALL_DEFECT_TYPES

    if not families:
        raise ValueError("at least one part family is needed")
    bad = [d for d in defects if d not in ALL_DEFECT_TYPES]
    if bad:
        raise ValueError(f"unknown defect kinds {bad}; choose from {list(ALL_DEFECT_TYPES)}")
    sizes = {**DEFAULT_DEFECT_SIZES, **(defect_sizes or {})}
    w = _Writer(out_dir, progress)
    rng = np.random.default_rng(seed)
    types = [make_part_type(fam, seed=seed * 100 + i, label=f"{fam}_{i}") for i, fam in enumerate(families)]
    for part in types:
        w.add_type(part)

    def variation(part):
        return Variation.draw(rng, part.extents) if vary else None

    for part in types:
        for _ in range(good_per_type):
            v = variation(part)
            w.add_part(part, _vary_mesh(part.mesh, v, part.mesh.bounds) if v else part.mesh, variation=v)
    for k, kind in enumerate(defects):
        part = types[k % len(types)]
        size = {key: float(rng.uniform(*lohi)) for key, lohi in sizes.get(kind, {}).items()}
        v = variation(part)
        mesh, record, where = _defective(part, kind, rng, size, v)
        w.add_part(part, mesh, defect=record, variation=v, defect_points=where)
        w.say(f"defect {kind} on {part.name}: {json.dumps({k: round(x * 1000, 2) for k, x in size.items()})} mm")
    return w.finish(types, rng)


def make_production_run(out_dir, *, types: Sequence[str] = EVAL_TYPES, parts_per_type: int = 6,
                        good_share: float = 1 / 3, defects: Sequence[str] = EVAL_DEFECTS,
                        sizes: str | Mapping = "graded", seed: int = 1, vary: bool = True,
                        progress=None) -> CellScenario:
    """Write a production run for the evaluation: ``parts_per_type`` parts of every type, a
    ``good_share`` of them good, the rest with one defect each, the kinds taken in turn from
    ``defects`` (hole deviations only on types with holes) and their sizes graded over the run
    (:func:`graded_sizes`).

    Args:
        out_dir: folder (``cad/``, ``parts/``, ``scenario.json``).
        types: part types (families or package meshes; see :func:`make_part_type`). The label of
            type ``i`` is ``<name>_<i>``.
        parts_per_type: parts per type (>= 1).
        good_share: share of good parts per type (at least one good part when ``parts_per_type > 1``).
        defects: defect kinds.
        sizes: ``"graded"`` (0.1-2 mm deep, 3-25 mm across, ...), ``"gross"`` (at least 0.5 mm
            deep and 5 mm across), or a mapping like :data:`GRADED_SIZES_MM` (millimetres).
        seed: seed of dimensions, placement, sizes, variation and order.
        vary: parts vary within tolerance (:class:`Variation`).
        progress: optional ``callback(message: str)``.

    Raises:
        ValueError: unknown type, defect kind or size preset; ``parts_per_type < 1``.
    """
    from cosarad_ros.core.data.defects import ALL_DEFECT_TYPES

    if parts_per_type < 1:
        raise ValueError(f"parts_per_type must be >= 1, got {parts_per_type}")
    if not types:
        raise ValueError("at least one part type is needed")
    if not 0 <= good_share <= 1:
        raise ValueError(f"good_share must be in [0, 1], got {good_share}")
    bad = [d for d in defects if d not in ALL_DEFECT_TYPES]
    if bad:
        raise ValueError(f"unknown defect kinds {bad}; choose from {list(ALL_DEFECT_TYPES)}")
    if isinstance(sizes, str):
        if sizes not in SIZE_PRESETS:
            raise ValueError(f"unknown size preset {sizes!r}; choose from {sorted(SIZE_PRESETS)} or give a mapping")
        sizes = SIZE_PRESETS[sizes]
    w = _Writer(out_dir, progress)
    rng = np.random.default_rng(seed)
    parts = [make_part_type(name, seed=seed * 100 + i, label=f"{name}_{i}") for i, name in enumerate(types)]
    for part in parts:
        w.add_type(part)
    n_good = min(parts_per_type, max(1 if parts_per_type > 1 or not defects else 0,
                                     int(round(good_share * parts_per_type))))
    # which defect kinds each type gets, in turn over the whole run
    plan: list[tuple[object, str]] = []
    turn = 0
    for part in parts:
        allowed = [k for k in defects if k not in _HOLE_KINDS or part.holes]
        for _ in range(parts_per_type - n_good if allowed else 0):
            kinds = [k for k in (defects[(turn + j) % len(defects)] for j in range(len(defects))) if k in allowed]
            plan.append((part, kinds[0]))
            turn = defects.index(kinds[0]) + 1
    per_kind = {k: graded_sizes(k, sum(1 for _, kk in plan if kk == k), rng, sizes)
                for k in dict.fromkeys(k for _, k in plan)}
    for part in parts:
        for _ in range(n_good):
            v = Variation.draw(rng, part.extents) if vary else None
            w.add_part(part, _vary_mesh(part.mesh, v, part.mesh.bounds) if v else part.mesh, variation=v)
    for part, kind in plan:
        size = per_kind[kind].pop()
        v = Variation.draw(rng, part.extents) if vary else None
        try:
            mesh, record, where = _defective(part, kind, rng, size, v)
        except ValueError as exc:  # e.g. a hole too small to change; the run goes on without it
            w.say(f"skipped {kind} on {part.name}: {exc}")
            continue
        w.add_part(part, mesh, defect=record, variation=v, defect_points=where)
    w.say(f"{len(w.queue)} parts of {len(parts)} types ({n_good * len(parts)} good)")
    return w.finish(parts, rng)
