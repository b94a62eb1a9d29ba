"""A simulated production run for the inspection cell: a CAD library of a few part types, and
a sequence of parts to inspect (good ones and ones with injected defects), written as mesh files.

Used by ``cosarad demo`` and the end-to-end tests; everything is deterministic for a seed.
Defect sizes default to clearly visible industrial values (bulges / sinks 14-18 mm across and
1.2-1.6 mm high, holes 8-10 mm); pass ``defect_sizes`` for subtler ones.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["CellPart", "CellScenario", "make_cell_scenario", "DEFAULT_FAMILIES", "DEFAULT_DEFECTS"]

DEFAULT_FAMILIES = ("flange", "bracket", "pocket_block")
DEFAULT_DEFECTS = ("bulge", "sink", "hole")
DEFAULT_DEFECT_SIZES: Mapping[str, Mapping[str, tuple[float, float]]] = {
    # metres; (low, high) drawn uniformly
    "bulge": {"diameter": (0.014, 0.018), "height": (0.0012, 0.0016)},
    "sink": {"diameter": (0.014, 0.018), "depth": (0.0012, 0.0016)},
    "hole": {"diameter": (0.008, 0.010), "depth": (0.003, 0.005)},
}


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
    """

    part_id: str
    part_type: str
    mesh_path: str
    defect: dict | None
    expected: str


@dataclass(frozen=True)
class CellScenario:
    cad_dir: Path
    parts: tuple[CellPart, ...]
    part_types: tuple[str, ...]

    def manifest(self) -> dict:
        return {"cad_dir": str(self.cad_dir), "part_types": list(self.part_types),
                "parts": [asdict(p) for p in self.parts]}


def _cad_metadata(part) -> dict:
    """Part metadata in the CAD library's schema (lengths in mm, mesh file in metres)."""
    md = part.metadata()
    return {"label": part.name, "units": "mm", "mesh_units": "m",
            "nominal_dimensions": md["bounding_box"],
            "holes": [{k: h[k] for k in ("centre", "axis", "diameter", "depth")} for h in md["holes"]],
            "description": f"procedural {part.family} part (cosarad_ros.core.data)"}


def make_cell_scenario(out_dir, *, families: Sequence[str] = DEFAULT_FAMILIES, good_per_type: int = 1,
                       defects: Sequence[str] = DEFAULT_DEFECTS, seed: int = 0,
                       defect_sizes: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
                       progress=None) -> CellScenario:
    """Write the CAD library and the part meshes of a production run into ``out_dir``.

    Args:
        out_dir: folder; ``cad/`` (library) and ``parts/`` (one mesh per inspected part) are
            created in it, plus ``scenario.json``.
        families: one part type per family (see ``cosarad_ros.core.data.parts.PART_FAMILIES``).
        good_per_type: good parts per type.
        defects: defect kinds; defect ``k`` goes onto type ``k % len(families)``.
        seed: seed of dimensions, defect placement and order.
        defect_sizes: per kind, ``{size_key: (low, high)}`` in metres.
        progress: optional ``callback(message: str)``.

    Returns:
        :class:`CellScenario` (parts interleaved: types and good/defective alternate).

    Raises:
        ValueError: no families, unknown family or defect kind.
    """
    from cosarad_ros.core.cad import CadLibrary
    from cosarad_ros.core.data.defects import ALL_DEFECT_TYPES, apply_defect_to_mesh
    from cosarad_ros.core.data.parts import make_part

    if not families:
        raise ValueError("at least one part family is needed")
    bad = [d for d in defects if d not in ALL_DEFECT_TYPES]
    if bad:
        raise ValueError(f"unknown defect kinds {bad}; choose from {list(ALL_DEFECT_TYPES)}")
    sizes = {**DEFAULT_DEFECT_SIZES, **(defect_sizes or {})}
    say = progress or (lambda m: None)
    out = Path(out_dir)
    cad_dir, parts_dir = out / "cad", out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    library = CadLibrary(cad_dir, create=True)
    rng = np.random.default_rng(seed)
    types = []
    for i, fam in enumerate(families):
        part = make_part(fam, seed=seed * 100 + i, name=f"{fam}_{i}")
        types.append(part)
        if part.name not in library:
            path = parts_dir / f"{part.name}_cad.stl"
            part.mesh.export(path)
            library.add(path, label=part.name, metadata=_cad_metadata(part))
        say(f"part type {part.name}: {np.round(part.extents * 1000, 1).tolist()} mm")
    queue: list[CellPart] = []
    serial = 0
    for i, part in enumerate(types):
        for _ in range(good_per_type):
            serial += 1
            path = parts_dir / f"P{serial:03d}_{part.name}_good.stl"
            part.mesh.export(path)
            queue.append(CellPart(f"P{serial:03d}", part.name, str(path), None, "PASS"))
    for k, kind in enumerate(defects):
        part = types[k % len(types)]
        size = {key: float(rng.uniform(*lohi)) for key, lohi in sizes.get(kind, {}).items()}
        mesh, record = apply_defect_to_mesh(part if kind.startswith("hole_") else part.mesh, kind, rng, **size)
        serial += 1
        path = parts_dir / f"P{serial:03d}_{part.name}_{kind}.stl"
        mesh.export(path)
        queue.append(CellPart(f"P{serial:03d}", part.name, str(path), record.to_dict(), "FAIL"))
        say(f"defect {kind} on {part.name}: {json.dumps({k: round(v * 1000, 2) for k, v in size.items()})} mm")
    # interleave good and defective parts so the run does not look sorted
    order = rng.permutation(len(queue))
    scenario = CellScenario(cad_dir, tuple(queue[i] for i in order), tuple(p.name for p in types))
    (out / "scenario.json").write_text(json.dumps(scenario.manifest(), indent=2))
    return scenario
