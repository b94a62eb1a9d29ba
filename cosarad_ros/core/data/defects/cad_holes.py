"""CAD hole deviations (``hole_position``, ``hole_diameter``): one hole of a procedural part
moved or resized, with the changed material as the labelling region.
"""
from __future__ import annotations

import numpy as np

from .base import _draw
from .helpers import _tangent_frame
from .kinds import _MM, SIZE_RANGES_MM
from .records import DefectRecord


def _hole_cylinder(h, *, extra: float = 1e-3):
    """Closed cylinder (trimesh) of a ``Hole``, extended ``extra`` beyond both ends."""
    import trimesh

    ax = np.asarray(h.axis, dtype=np.float64)
    length = h.depth + 2 * extra
    cyl = trimesh.creation.cylinder(radius=h.diameter / 2, height=length, sections=96)
    from ..parts import _frame

    T = np.eye(4)
    T[:3, :3] = _frame(ax)
    T[:3, 3] = np.asarray(h.centre) + ax * (h.depth / 2)
    cyl.apply_transform(T)
    return cyl


def _cad_hole_defect(part, kind, rng, size, min_shift):
    from ..parts import manifold_to_trimesh, trimesh_to_manifold

    if part is None or not getattr(part, "holes", ()):
        raise ValueError(f"{kind} needs a procedural Part with holes (got "
                         f"{'a mesh' if part is None else repr(getattr(part, 'name', part))})")
    if not part.is_procedural:
        raise ValueError(f"{kind}: part {part.name!r} is not procedural")
    unknown = set(size) - set(SIZE_RANGES_MM[kind]) - {"hole_index"}
    if unknown:
        raise ValueError(f"{kind}: unknown size keys {sorted(unknown)}")
    idx = int(size["hole_index"]) if "hole_index" in size else int(rng.integers(len(part.holes)))
    if not 0 <= idx < len(part.holes):
        raise ValueError(f"{kind}: part has {len(part.holes)} holes; no hole {idx}")
    old = part.holes[idx]
    ax = np.asarray(old.axis, dtype=np.float64)
    t, _ = _tangent_frame(ax, rng)
    if kind == "hole_position":
        lo, hi = SIZE_RANGES_MM[kind]["offset"]
        mag = float(size["offset"]) if "offset" in size else _draw(rng, lo * _MM, hi * _MM)
        new_part = part.with_hole_edit(idx, offset=t * mag)
        sz, direction = {"offset": mag}, t
    else:
        lo, hi = SIZE_RANGES_MM[kind]["change"]
        change = float(size["change"]) if "change" in size else _draw(rng, lo * _MM, hi * _MM)
        if "change" not in size and (rng.random() < 0.5 and old.diameter - change > 1e-3):
            change = -change
        if old.diameter + change <= 5e-4:
            raise ValueError(f"{kind}: hole {idx} of diameter {old.diameter * 1e3:.2f} mm cannot "
                             f"change by {change * 1e3:.2f} mm")
        new_part = part.with_hole_edit(idx, diameter=old.diameter + change)
        sz, direction = {"change": change}, np.zeros(3)
    new = new_part.holes[idx]
    c_old = trimesh_to_manifold(_hole_cylinder(old), scale=1 / _MM)
    c_new = trimesh_to_manifold(_hole_cylinder(new), scale=1 / _MM)
    region = manifold_to_trimesh((c_old - c_new) + (c_new - c_old), scale=_MM)
    rec = DefectRecord(
        kind=kind, centre=tuple(float(v) for v in new.centre), normal=tuple(float(v) for v in -ax),
        direction=tuple(float(v) for v in direction), size=sz, min_shift=min_shift,
        footprint=float(max(old.diameter, new.diameter) + np.linalg.norm(
            np.asarray(new.centre) - np.asarray(old.centre))),
        extra={"hole_index": idx, "nominal_diameter": float(old.diameter),
               "actual_diameter": float(new.diameter),
               "nominal_centre": [float(v) for v in old.centre]},
        region_vertices=np.asarray(region.vertices), region_faces=np.asarray(region.faces))
    return new_part, rec
