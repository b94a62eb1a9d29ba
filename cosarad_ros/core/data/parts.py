"""Procedural industrial parts built with constructive solid geometry (manifold3d).

Every part is a watertight, manifold triangle mesh in **metres**, built from a small set of
recorded CAD dimensions, so the CAD classifier can be given the nominal dimensions and holes of
each part type and the defect generator can rebuild a part with one hole moved or resized.

Families (each a small :class:`PartFamily` subclass, chosen by name through :data:`PART_FAMILIES`):

* ``block`` -- rectangular block, rounded vertical edges (fillets), chamfered top edges, a grid
  of through-holes.
* ``pocket_block`` -- block with a rounded-corner pocket milled into the top and corner holes.
* ``flange`` -- disc with a hub (boss), a through bore and a bolt circle, chamfered rim.
* ``bracket`` -- L-bracket with an inner fillet and holes in both legs.
* ``mold_insert`` -- stepped mould insert (shoulder + core), a cavity in the top, ejector-pin
  holes through the cavity floor and a cooling channel through the shoulder (after the insert
  steels of Kwon et al., Electronics 2025).
* ``boss_plate`` -- plate with cylindrical bosses, each with a blind hole.
* ``u_channel`` -- U-profile with slotted base holes.

The CSG library is manifold3d (Lague et al., "Manifold: a robust boolean library",
https://github.com/elalish/manifold), which guarantees manifold output for boolean operations.
Geometry is built in millimetres (the CAD convention, and comfortable for the boolean kernel's
tolerances) and scaled to metres at the end; all public values are in metres.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

__all__ = [
    "Hole",
    "Part",
    "PartFamily",
    "PART_FAMILIES",
    "make_part",
    "random_part",
    "part_catalogue",
    "manifold_to_trimesh",
    "trimesh_to_manifold",
]

_MM = 1e-3


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hole:
    """A drilled cylindrical hole of a part (metres).

    Attributes:
        centre: ``(3,)`` centre of the entry circle, on the surface the drill enters.
        axis: ``(3,)`` unit drilling direction (pointing into the material).
        diameter: hole diameter.
        depth: drilled depth (the material thickness for a through-hole).
        through: whether it comes out on the other side.
    """

    centre: tuple[float, float, float]
    axis: tuple[float, float, float]
    diameter: float
    depth: float
    through: bool = True

    def to_dict(self, *, unit: float = 1.0) -> dict:
        """Plain dict (lists of floats); ``unit=1e-3`` gives millimetres."""
        s = 1.0 / unit
        return {"centre": [round(c * s, 6) for c in self.centre], "axis": list(self.axis),
                "diameter": round(self.diameter * s, 6), "depth": round(self.depth * s, 6),
                "through": bool(self.through)}


@dataclass(frozen=True)
class Part:
    """A part type: its mesh and the CAD facts it was built from.

    Attributes:
        name: part-type label, e.g. ``"flange_03"``.
        family: generating family (``"block"``, ...) or ``"package"`` for package meshes.
        params: recorded dimensions in metres (counts as ints), exactly what ``family.build``
            needs to rebuild the part.
        holes: the part's holes (empty for package meshes).
        mesh: ``trimesh.Trimesh`` in metres, part frame (bottom face on ``z = 0`` for
            procedural parts).
        source: ``"procedural"`` or the file a package mesh was loaded from.
        hole_edits: hole changes applied on top of ``params`` (for CAD-deviation defects).
    """

    name: str
    family: str
    params: Mapping[str, Any]
    holes: tuple[Hole, ...]
    mesh: Any = field(repr=False, compare=False)
    source: str = "procedural"
    hole_edits: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def extents(self) -> np.ndarray:
        """``(3,)`` axis-aligned bounding-box size in metres."""
        return np.asarray(self.mesh.extents, dtype=np.float64)

    @property
    def is_procedural(self) -> bool:
        return self.family in PART_FAMILIES

    def metadata(self) -> dict:
        """YAML/JSON-friendly CAD metadata in **millimetres** (label, family, dimensions, box,
        holes), the form the CAD library of the classifier reads.
        """
        dims = {k: (v if isinstance(v, (int, bool, str)) else round(float(v) / _MM, 4))
                for k, v in self.params.items()}
        return {
            "label": self.name,
            "family": self.family,
            "units": "mm",
            "dimensions": dims,
            "bounding_box": [round(float(e) / _MM, 4) for e in self.extents],
            "holes": [h.to_dict(unit=_MM) for h in self.holes],
            "source": self.source,
        }

    def with_hole_edit(self, index: int, *, offset=(0.0, 0.0, 0.0), diameter: float | None = None,
                       name: str | None = None) -> "Part":
        """Rebuild this procedural part with hole ``index`` moved by ``offset`` (metres, ``(3,)``;
        the component along the hole axis is ignored) and/or given a new ``diameter``.
        """
        if not self.is_procedural:
            raise ValueError(f"part {self.name!r} is not procedural; its holes cannot be rebuilt")
        if not 0 <= index < len(self.holes):
            raise ValueError(f"part {self.name!r} has {len(self.holes)} holes; no hole {index}")
        edits = {int(k): dict(v) for k, v in self.hole_edits.items()}
        e = edits.setdefault(int(index), {})
        off = np.asarray(offset, dtype=np.float64).reshape(3)
        prev = np.asarray(e.get("offset", (0.0, 0.0, 0.0)), dtype=np.float64)
        e["offset"] = tuple(float(v) for v in prev + off)
        if diameter is not None:
            if not diameter > 0:
                raise ValueError(f"hole diameter must be > 0, got {diameter}")
            e["diameter"] = float(diameter)
        return make_part(self.family, self.params, name=name or self.name, hole_edits=edits)


# --------------------------------------------------------------------------------------------
# manifold helpers (millimetres)
# --------------------------------------------------------------------------------------------
def _m3d():
    import manifold3d

    return manifold3d


def _segments(radius_mm: float, sag_mm: float = 0.01) -> int:
    """Circle segments so that the chord sag stays below ``sag_mm`` (16 .. 192)."""
    if radius_mm <= sag_mm:
        return 16
    n = math.pi / math.acos(1.0 - sag_mm / radius_mm)
    return int(min(192, max(16, 4 * math.ceil(n / 4))))


def _frame(axis) -> np.ndarray:
    """A rotation whose z column is ``axis``."""
    z = np.asarray(axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _affine(R: np.ndarray, t) -> list[list[float]]:
    M = np.concatenate([R, np.asarray(t, dtype=np.float64).reshape(3, 1)], axis=1)
    return M.tolist()


def _cylinder(start_mm, axis, length_mm: float, radius_mm: float):
    """Solid cylinder from ``start`` along ``axis`` for ``length`` (millimetres)."""
    m3d = _m3d()
    cyl = m3d.Manifold.cylinder(float(length_mm), float(radius_mm),
                                circular_segments=_segments(radius_mm))
    return cyl.transform(_affine(_frame(axis), start_mm))


def _rounded_rect(lx: float, ly: float, r: float):
    """Rectangle ``lx x ly`` centred at the origin with corner radius ``r`` (millimetres)."""
    m3d = _m3d()
    r = float(min(max(r, 0.0), 0.499 * min(lx, ly)))
    if r <= 1e-6:
        return m3d.CrossSection.square((lx, ly), center=True)
    core = m3d.CrossSection.square((lx - 2 * r, ly - 2 * r), center=True)
    return core.offset(r, m3d.JoinType.Round, circular_segments=_segments(r))


def _prism(section, height: float, chamfer: float = 0.0, z0: float = 0.0):
    """Extrude a convex ``section`` to ``height``; chamfer the top edges by ``chamfer``."""
    m3d = _m3d()
    if chamfer <= 1e-6:
        return m3d.Manifold.extrude(section, height).translate((0, 0, z0))
    lower = m3d.Manifold.extrude(section, height - chamfer)
    top = m3d.Manifold.extrude(section.offset(-chamfer, m3d.JoinType.Round), height)
    return m3d.Manifold.batch_hull([lower, top]).translate((0, 0, z0))


def manifold_to_trimesh(solid, *, scale: float = 1.0):
    """manifold3d ``Manifold`` -> ``trimesh.Trimesh`` (vertices multiplied by ``scale``)."""
    import trimesh

    mesh = solid.to_mesh64() if hasattr(solid, "to_mesh64") else solid.to_mesh()
    V = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3] * scale
    F = np.asarray(mesh.tri_verts, dtype=np.int64)
    return trimesh.Trimesh(vertices=V, faces=F, process=False)


def trimesh_to_manifold(mesh, *, scale: float = 1.0):
    """``trimesh.Trimesh`` -> manifold3d ``Manifold``. Raises ValueError when the mesh is not a
    closed 2-manifold (manifold3d refuses it).
    """
    m3d = _m3d()
    V = np.ascontiguousarray(np.asarray(mesh.vertices, dtype=np.float64) * scale)
    F = np.ascontiguousarray(np.asarray(mesh.faces, dtype=np.uint64))
    try:
        if hasattr(m3d, "Mesh64"):
            solid = m3d.Manifold(m3d.Mesh64(vert_properties=V, tri_verts=F))
        else:
            solid = m3d.Manifold(m3d.Mesh(vert_properties=V.astype(np.float32),
                                          tri_verts=F.astype(np.uint32)))
    except Exception as exc:  # manifold3d raises its own error type
        raise ValueError(f"mesh is not a closed manifold ({exc})") from None
    status = str(solid.status())
    if "NoError" not in status or solid.is_empty():
        raise ValueError(f"mesh is not a closed manifold ({status})")
    return solid


# --------------------------------------------------------------------------------------------
# families
# --------------------------------------------------------------------------------------------
class PartFamily(abc.ABC):
    """One kind of procedural part.

    Subclasses define ``name``, :meth:`sample_params` (random but CAD-like dimensions, metres,
    rounded to 0.1 mm) and :meth:`body_and_holes` (the solid without holes, in millimetres, and
    the list of holes to drill). :meth:`build` drills the holes (after applying ``hole_edits``).
    """

    name: str = ""

    @abc.abstractmethod
    def sample_params(self, rng: np.random.Generator) -> dict:
        """Random CAD dimensions (metres; counts as ints)."""

    @abc.abstractmethod
    def body_and_holes(self, p: Mapping[str, Any]) -> tuple[Any, list[Hole]]:
        """The solid without holes (manifold3d, millimetres) and the holes to drill (mm)."""

    def build(self, params: Mapping[str, Any], hole_edits: Mapping[int, Mapping] | None = None):
        """Returns ``(trimesh.Trimesh in metres, tuple of holes in metres)``."""
        p = {k: (v / _MM if isinstance(v, float) else v) for k, v in params.items()}  # -> mm
        body, holes_mm = self.body_and_holes(p)
        holes_mm = list(holes_mm)
        for idx, edit in (hole_edits or {}).items():
            if not 0 <= int(idx) < len(holes_mm):
                raise ValueError(f"{self.name}: no hole {idx} (has {len(holes_mm)})")
            h = holes_mm[int(idx)]
            off = np.asarray(edit.get("offset", (0.0, 0.0, 0.0)), dtype=np.float64) / _MM
            ax = np.asarray(h.axis, dtype=np.float64)
            off = off - ax * float(off @ ax)  # move across the axis only
            dia = float(edit["diameter"]) / _MM if "diameter" in edit else h.diameter
            holes_mm[int(idx)] = replace(h, centre=tuple(np.asarray(h.centre) + off), diameter=dia)
        cutters = []
        for h in holes_mm:
            ax = np.asarray(h.axis, dtype=np.float64)
            start = np.asarray(h.centre, dtype=np.float64) - ax * 1.0  # start 1 mm outside
            length = h.depth + (2.0 if h.through else 1.0)
            cutters.append(_cylinder(start, ax, length, h.diameter / 2))
        solid = body
        if cutters:
            m3d = _m3d()
            solid = m3d.Manifold.batch_boolean([body] + cutters, m3d.OpType.Subtract)
        mesh = manifold_to_trimesh(solid, scale=_MM)
        holes = tuple(Hole(centre=tuple(float(c) * _MM for c in h.centre),
                           axis=tuple(float(a) for a in h.axis), diameter=h.diameter * _MM,
                           depth=h.depth * _MM, through=h.through) for h in holes_mm)
        return mesh, holes


def _u(rng, lo, hi, step=0.1):
    """Uniform value in ``[lo, hi]`` mm rounded to ``step`` mm, returned in metres."""
    return round(round(float(rng.uniform(lo, hi)) / step) * step, 4) * _MM


def _grid_holes(lx, ly, nx, ny, margin, z_top, dia, depth, cx=0.0, cy=0.0):
    xs = [0.0] if nx == 1 else np.linspace(-lx / 2 + margin, lx / 2 - margin, nx)
    ys = [0.0] if ny == 1 else np.linspace(-ly / 2 + margin, ly / 2 - margin, ny)
    return [Hole((cx + float(x), cy + float(y), z_top), (0.0, 0.0, -1.0), dia, depth, True)
            for x in xs for y in ys]


class BlockFamily(PartFamily):
    name = "block"

    def sample_params(self, rng):
        L, W = _u(rng, 50, 120), _u(rng, 30, 80)
        H = _u(rng, 12, 40)
        d = _u(rng, 4, min(12, W / _MM / 4))
        return dict(length=L, width=W, height=H, fillet=_u(rng, 0, 6), chamfer=_u(rng, 0, 2),
                    hole_diameter=d, holes_x=int(rng.integers(1, 4)), holes_y=int(rng.integers(1, 3)),
                    hole_margin=_u(rng, d / _MM + 4, d / _MM + 8))

    def body_and_holes(self, p):
        body = _prism(_rounded_rect(p["length"], p["width"], p["fillet"]), p["height"], p["chamfer"])
        holes = _grid_holes(p["length"], p["width"], p["holes_x"], p["holes_y"], p["hole_margin"],
                            p["height"], p["hole_diameter"], p["height"])
        return body, holes


class PocketBlockFamily(PartFamily):
    name = "pocket_block"

    def sample_params(self, rng):
        L, W, H = _u(rng, 60, 130), _u(rng, 40, 90), _u(rng, 15, 40)
        return dict(length=L, width=W, height=H, fillet=_u(rng, 1, 5), chamfer=_u(rng, 0.5, 1.5),
                    pocket_length=round(L * rng.uniform(0.35, 0.55), 4),
                    pocket_width=round(W * rng.uniform(0.35, 0.55), 4),
                    pocket_depth=round(H * rng.uniform(0.25, 0.6), 4),
                    pocket_radius=_u(rng, 2, 6), hole_diameter=_u(rng, 5, 9))

    def body_and_holes(self, p):
        m3d = _m3d()
        body = _prism(_rounded_rect(p["length"], p["width"], p["fillet"]), p["height"], p["chamfer"])
        pocket = m3d.Manifold.extrude(_rounded_rect(p["pocket_length"], p["pocket_width"],
                                                    p["pocket_radius"]), p["pocket_depth"] + 1.0)
        body = body - pocket.translate((0, 0, p["height"] - p["pocket_depth"]))
        m = p["hole_diameter"] / 2 + max(4.0, p["fillet"] + 2.0)
        holes = _grid_holes(p["length"], p["width"], 2, 2, m, p["height"], p["hole_diameter"], p["height"])
        return body, holes


class FlangeFamily(PartFamily):
    name = "flange"

    def sample_params(self, rng):
        D = _u(rng, 60, 140)
        hub = round(D * rng.uniform(0.35, 0.55), 4)
        bolt_d = _u(rng, 5, 11)
        return dict(diameter=D, thickness=_u(rng, 8, 18), hub_diameter=hub, hub_height=_u(rng, 5, 25),
                    bore_diameter=round(hub * rng.uniform(0.35, 0.65), 4),
                    bolt_circle=round((hub + D) / 2, 7),
                    bolt_count=int(rng.choice([3, 4, 6, 8])), bolt_diameter=bolt_d,
                    chamfer=_u(rng, 0.5, 2.0))

    def body_and_holes(self, p):
        m3d = _m3d()
        R, t = p["diameter"] / 2, p["thickness"]
        disc = _prism(m3d.CrossSection.circle(R, _segments(R)), t, p["chamfer"])
        rh = p["hub_diameter"] / 2
        hub = _prism(m3d.CrossSection.circle(rh, _segments(rh)), p["hub_height"], min(1.0, p["chamfer"]),
                     z0=t - 0.01)
        body = disc + hub
        top = t + p["hub_height"] - 0.01
        holes = [Hole((0.0, 0.0, top), (0.0, 0.0, -1.0), p["bore_diameter"], top, True)]
        rb = p["bolt_circle"] / 2
        for k in range(int(p["bolt_count"])):
            a = 2 * math.pi * k / p["bolt_count"]
            holes.append(Hole((rb * math.cos(a), rb * math.sin(a), t), (0.0, 0.0, -1.0),
                              p["bolt_diameter"], t, True))
        return body, holes


class BracketFamily(PartFamily):
    name = "bracket"

    def sample_params(self, rng):
        t = _u(rng, 4, 12)
        return dict(width=_u(rng, 30, 80), base_length=_u(rng, 45, 100), upright_height=_u(rng, 35, 90),
                    thickness=t, inner_fillet=_u(rng, 2, 10), hole_diameter=_u(rng, 5, 10),
                    holes_per_leg=int(rng.integers(1, 3)))

    def body_and_holes(self, p):
        m3d = _m3d()
        W, Lb, Hu, t, r = p["width"], p["base_length"], p["upright_height"], p["thickness"], p["inner_fillet"]
        base = m3d.Manifold.cube((Lb, W, t)).translate((0, -W / 2, 0))
        upright = m3d.Manifold.cube((t, W, Hu)).translate((0, -W / 2, 0))
        corner = m3d.Manifold.cube((r, W, r)).translate((t - 0.01, -W / 2, t - 0.01))
        round_cut = _cylinder((t + r, -W / 2 - 1, t + r), (0, 1, 0), W + 2, r)
        body = m3d.Manifold.batch_boolean([base, upright, corner], m3d.OpType.Add) - round_cut
        d, n = p["hole_diameter"], int(p["holes_per_leg"])
        holes = []
        ys = [0.0] if n == 1 else [-W / 4, W / 4]
        xb = t + r + (Lb - t - r) / 2
        zu = t + r + (Hu - t - r) / 2
        for y in ys:
            holes.append(Hole((xb, y, t), (0.0, 0.0, -1.0), d, t, True))
            holes.append(Hole((0.0, y, zu), (1.0, 0.0, 0.0), d, t, True))
        return body, holes


class MoldInsertFamily(PartFamily):
    name = "mold_insert"

    def sample_params(self, rng):
        L, W = _u(rng, 50, 110), _u(rng, 40, 90)
        shoulder_h, core_h = _u(rng, 7, 12), _u(rng, 12, 35)
        s = _u(rng, 3, 7)
        return dict(length=L, width=W, shoulder_height=shoulder_h, shoulder_width=s, core_height=core_h,
                    corner_radius=_u(rng, 1, 6), chamfer=_u(rng, 0.5, 2.0),
                    cavity_length=round((L - 2 * s) * rng.uniform(0.4, 0.65), 4),
                    cavity_width=round((W - 2 * s) * rng.uniform(0.4, 0.65), 4),
                    cavity_depth=round(core_h * rng.uniform(0.2, 0.45), 4), cavity_radius=_u(rng, 2, 5),
                    ejector_diameter=_u(rng, 3, 6), ejector_count=int(rng.integers(1, 4)),
                    cooling_diameter=_u(rng, 3, min(6.0, shoulder_h / _MM - 3)))

    def body_and_holes(self, p):
        m3d = _m3d()
        L, W, s = p["length"], p["width"], p["shoulder_width"]
        hs, hc = p["shoulder_height"], p["core_height"]
        shoulder = _prism(_rounded_rect(L, W, p["corner_radius"]), hs, 0.0)
        core = _prism(_rounded_rect(L - 2 * s, W - 2 * s, max(p["corner_radius"] - s / 2, 0.5)), hc,
                      p["chamfer"], z0=hs - 0.01)
        top = hs + hc - 0.01
        cavity = m3d.Manifold.extrude(_rounded_rect(p["cavity_length"], p["cavity_width"], p["cavity_radius"]),
                                      p["cavity_depth"] + 1.0).translate((0, 0, top - p["cavity_depth"]))
        body = (shoulder + core) - cavity
        floor = top - p["cavity_depth"]
        n = int(p["ejector_count"])
        xs = [0.0] if n == 1 else np.linspace(-p["cavity_length"] / 4, p["cavity_length"] / 4, n)
        holes = [Hole((float(x), 0.0, floor), (0.0, 0.0, -1.0), p["ejector_diameter"], floor, True) for x in xs]
        # cooling channel along y through the shoulder, near one end
        holes.append(Hole((L / 4, -W / 2, hs / 2), (0.0, 1.0, 0.0), p["cooling_diameter"], W, True))
        return body, holes


class BossPlateFamily(PartFamily):
    name = "boss_plate"

    def sample_params(self, rng):
        L, W = _u(rng, 60, 130), _u(rng, 40, 90)
        return dict(length=L, width=W, thickness=_u(rng, 5, 12), fillet=_u(rng, 1, 8),
                    boss_diameter=_u(rng, 10, min(24, W / _MM / 2.5)), boss_height=_u(rng, 5, 20),
                    boss_count=int(rng.integers(1, 5)), hole_diameter=_u(rng, 3, 6), hole_depth=_u(rng, 4, 12))

    def body_and_holes(self, p):
        m3d = _m3d()
        L, W, t = p["length"], p["width"], p["thickness"]
        body = _prism(_rounded_rect(L, W, p["fillet"]), t, 0.0)
        rb = p["boss_diameter"] / 2
        n = int(p["boss_count"])
        xs = [0.0] if n == 1 else np.linspace(-L / 2 + rb + 5, L / 2 - rb - 5, n)
        bosses = [_prism(m3d.CrossSection.circle(rb, _segments(rb)), p["boss_height"], 0.5).translate(
            (float(x), 0.0, t - 0.01)) for x in xs]
        body = m3d.Manifold.batch_boolean([body] + bosses, m3d.OpType.Add)
        top = t + p["boss_height"] - 0.01
        depth = min(p["hole_depth"], top - 1.5)
        holes = [Hole((float(x), 0.0, top), (0.0, 0.0, -1.0), min(p["hole_diameter"], rb), depth, False)
                 for x in xs]
        return body, holes


class UChannelFamily(PartFamily):
    name = "u_channel"

    def sample_params(self, rng):
        return dict(length=_u(rng, 60, 140), width=_u(rng, 30, 70), height=_u(rng, 20, 50),
                    wall=_u(rng, 3, 8), base=_u(rng, 4, 10), hole_diameter=_u(rng, 4, 9),
                    hole_count=int(rng.integers(1, 4)))

    def body_and_holes(self, p):
        m3d = _m3d()
        L, W, H, w, b = p["length"], p["width"], p["height"], p["wall"], p["base"]
        outer = m3d.Manifold.cube((L, W, H), center=True).translate((0, 0, H / 2))
        inner = m3d.Manifold.cube((L + 2, W - 2 * w, H), center=True).translate((0, 0, b + H / 2))
        body = outer - inner
        n = int(p["hole_count"])
        xs = [0.0] if n == 1 else np.linspace(-L / 2 + 12, L / 2 - 12, n)
        holes = [Hole((float(x), 0.0, b), (0.0, 0.0, -1.0), p["hole_diameter"], b, True) for x in xs]
        return body, holes


PART_FAMILIES: dict[str, PartFamily] = {
    f.name: f for f in (BlockFamily(), PocketBlockFamily(), FlangeFamily(), BracketFamily(),
                        MoldInsertFamily(), BossPlateFamily(), UChannelFamily())
}


# --------------------------------------------------------------------------------------------
# public constructors
# --------------------------------------------------------------------------------------------
def make_part(family: str, params: Mapping[str, Any] | None = None, *, seed: int = 0,
              name: str | None = None, hole_edits: Mapping[int, Mapping] | None = None) -> Part:
    """Build a procedural part.

    Args:
        family: one of :data:`PART_FAMILIES` (``block``, ``pocket_block``, ``flange``,
            ``bracket``, ``mold_insert``, ``boss_plate``, ``u_channel``).
        params: dimensions in metres (as returned by ``family.sample_params``); drawn from
            ``seed`` when ``None``.
        seed: seed for the random dimensions.
        name: part-type label (default ``"<family>"``).
        hole_edits: ``{hole_index: {"offset": (3,) metres, "diameter": metres}}``.

    Returns:
        :class:`Part` with a watertight mesh in metres.

    Raises:
        ValueError: unknown family, or a CSG failure (e.g. inconsistent dimensions).
    """
    if family not in PART_FAMILIES:
        raise ValueError(f"unknown part family {family!r}; choose from {sorted(PART_FAMILIES)}")
    fam = PART_FAMILIES[family]
    if params is None:
        params = fam.sample_params(np.random.default_rng(seed))
    params = dict(params)
    mesh, holes = fam.build(params, hole_edits)
    if len(mesh.faces) == 0 or not mesh.is_watertight:
        raise ValueError(f"{family}: CSG produced an empty or open mesh for params {params}")
    return Part(name=name or family, family=family, params=params, holes=holes, mesh=mesh,
                hole_edits={int(k): dict(v) for k, v in (hole_edits or {}).items()})


def random_part(rng: np.random.Generator, family: str | None = None, *, name: str | None = None) -> Part:
    """A part of a random (or the given) family with random dimensions drawn from ``rng``."""
    fams = sorted(PART_FAMILIES)
    fam = family if family is not None else fams[int(rng.integers(len(fams)))]
    if fam not in PART_FAMILIES:
        raise ValueError(f"unknown part family {fam!r}; choose from {fams}")
    params = PART_FAMILIES[fam].sample_params(rng)
    return make_part(fam, params, name=name)


_NEAR_DUP_KEYS = {
    "block": ("length", "width", "height"),
    "pocket_block": ("length", "width", "height"),
    "flange": ("diameter", "thickness", "hub_height"),
    "bracket": ("base_length", "upright_height", "width"),
    "mold_insert": ("length", "width", "core_height"),
    "boss_plate": ("length", "width", "boss_height"),
    "u_channel": ("length", "width", "height"),
}
# features that change without changing the bounding box ("equal boxes, different features")
_FEATURE_KEYS = {
    "block": ("hole_diameter",), "pocket_block": ("pocket_depth", "hole_diameter"),
    "flange": ("bore_diameter", "bolt_diameter"), "bracket": ("hole_diameter", "inner_fillet"),
    "mold_insert": ("cavity_depth", "ejector_diameter"), "boss_plate": ("hole_diameter",),
    "u_channel": ("hole_diameter", "wall"),
}


def part_catalogue(n_types: int = 36, *, seed: int = 0, near_duplicate_fraction: float = 1 / 3,
                   delta_mm=(1.0, 2.0), families=None) -> list[Part]:
    """A catalogue of distinct part types, including near-duplicates.

    Base types cycle through the families with random dimensions. A share
    ``near_duplicate_fraction`` of the catalogue are near-duplicates of earlier base types:
    every other one changes one box dimension by ``delta_mm`` (1-2 mm, either sign), the others
    keep the bounding box and change a feature (a hole diameter, a pocket depth ...) by the
    same amount, so box-only classifiers cannot tell them apart.

    Args:
        n_types: catalogue size (>= 1).
        seed: seed of all random choices (same seed -> same catalogue).
        near_duplicate_fraction: share of near-duplicates, in ``[0, 0.5]``.
        delta_mm: ``(min, max)`` size of the near-duplicate change in millimetres.
        families: restrict to these family names (default: all).

    Returns:
        ``n_types`` :class:`Part` s named ``"<family>_<k>"`` (base) and
        ``"<family>_<k>_d<j>"`` (near-duplicates). Each near-duplicate's ``params`` differ
        from its base in exactly one entry.
    """
    if n_types < 1:
        raise ValueError(f"n_types must be >= 1, got {n_types}")
    if not 0.0 <= near_duplicate_fraction <= 0.5:
        raise ValueError(f"near_duplicate_fraction must be in [0, 0.5], got {near_duplicate_fraction}")
    fams = list(families) if families is not None else sorted(PART_FAMILIES)
    for f in fams:
        if f not in PART_FAMILIES:
            raise ValueError(f"unknown part family {f!r}")
    rng = np.random.default_rng(seed)
    n_dup = int(round(n_types * near_duplicate_fraction))
    n_base = n_types - n_dup
    parts: list[Part] = []
    counters: dict[str, int] = {}
    for i in range(n_base):
        fam = fams[i % len(fams)]
        k = counters.get(fam, 0)
        counters[fam] = k + 1
        for _ in range(20):  # CSG can reject an unlucky combination; draw again
            try:
                parts.append(random_part(rng, fam, name=f"{fam}_{k:02d}"))
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"could not build a valid {fam} part")
    bases = list(parts)
    dup_count: dict[str, int] = {}
    for j in range(n_dup):
        base = bases[j % len(bases)]
        keys = _NEAR_DUP_KEYS[base.family] if j % 2 == 0 else _FEATURE_KEYS[base.family]
        key = keys[int(rng.integers(len(keys)))]
        delta = float(rng.uniform(*delta_mm)) * (1 if rng.random() < 0.5 else -1)
        delta = round(delta, 1) * _MM
        params = dict(base.params)
        params[key] = round(float(params[key]) + delta, 6)
        c = dup_count.get(base.name, 0) + 1
        dup_count[base.name] = c
        parts.append(make_part(base.family, params, name=f"{base.name}_d{c}"))
    return parts
