"""Geometric defects with point-level ground truth.

Kinds (:data:`DEFECT_TYPES`, the Real3D-AD / Anomaly-ShapeNet types, and
:data:`CAD_DEFECT_TYPES`, the deviations the rule-based CAD checks look for):

==================  ================================================================  ==========
kind                what happens to the surface                                       model
==================  ================================================================  ==========
``bulge``           smooth bump of diameter D and height h, pushed out along n        moves
``sink``            smooth dent (impact) of diameter D and depth h, pushed in          moves
``scratch``         groove of length L, width w, depth d (parabolic cross-section)     moves
``bend``            the part beyond a plane is rotated by a small angle                moves
``crack``           thin tapered, wandering slot of length L, opening w, depth d       removes
``hole``            drilled-out blind opening of diameter D and depth d                removes
``broken``          a chunk near an extremity broken off (rough sphere of radius R)    removes
``hole_position``   one CAD hole moved sideways by 0.8-2 mm (procedural parts)         removes/adds
``hole_diameter``   one CAD hole made 0.6-2 mm larger or smaller (procedural parts)    removes/adds
==================  ================================================================  ==========

Default sizes follow industrial practice (:data:`SIZE_RANGES_MM`): scratches 5-50 mm long and
0.1-2 mm deep, dents and bulges 5-25 mm across and 0.2-2 mm deep, with depths drawn
log-uniformly so subtle defects are common; lengths and diameters are also capped relative to the
part (``max_rel_size`` of its longest side). The hole deviations exceed the 0.6 mm (position)
and 0.5 mm (diameter) tolerances of Kwon et al. (Electronics 2025, section 3.7).

Ground truth: *a point is anomalous exactly where the surface moved or vanished.*

* "moves" kinds: a displacement field ``D(x)`` is applied; a point is anomalous when
  ``|D| > min_shift`` (default 0.05 mm).
* "removes" kinds: material inside a closed *cutter* solid is removed; the anomalous surface is
  everything within ``tol`` of the removed material: the new walls and floor, and a rim of
  width ``tol`` around the vanished surface (the nearest remaining points to it, as in
  Anomaly-ShapeNet's hole labels). On point clouds: the points within ``rim`` of a removed
  point.

Two ways to apply a defect:

* :func:`apply_defect` works on a sampled cloud (points + normals) and returns the mask directly.
  Removed points are dropped (openings are not re-surfaced with wall points).
* :func:`apply_defect_to_mesh` changes a mesh (locally refined, then displaced; or CSG-cut with
  manifold3d when the mesh is watertight, else the faces inside the cutter are deleted) and
  returns a :class:`DefectRecord` whose :meth:`DefectRecord.label_points` labels *any later
  scan* of that mesh (points in the part frame), e.g. the ray-cast scans of the simulated cell.

Both are deterministic for a given ``numpy.random.Generator`` state.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from ...geometry import as_points
from ...io import sample_mesh

__all__ = [
    "DEFECT_TYPES",
    "CAD_DEFECT_TYPES",
    "ALL_DEFECT_TYPES",
    "SIZE_RANGES_MM",
    "DefectRecord",
    "DefectResult",
    "DefectModel",
    "DisplacementDefect",
    "RegionDefect",
    "DEFECT_MODELS",
    "apply_defect",
    "apply_defect_to_mesh",
    "refine_mesh_near",
]

DEFECT_TYPES = ("bulge", "sink", "scratch", "crack", "hole", "bend", "broken")
CAD_DEFECT_TYPES = ("hole_position", "hole_diameter")
ALL_DEFECT_TYPES = DEFECT_TYPES + CAD_DEFECT_TYPES

_MM = 1e-3

# (low, high) in millimetres (degrees for angle_deg); "log" marks log-uniform draws.
SIZE_RANGES_MM: dict[str, dict[str, tuple]] = {
    "bulge": {"diameter": (5.0, 25.0), "height": (0.2, 2.0, "log")},
    "sink": {"diameter": (5.0, 25.0), "depth": (0.2, 2.0, "log")},
    "scratch": {"length": (5.0, 50.0), "width": (0.5, 2.0), "depth": (0.1, 2.0, "log")},
    "crack": {"length": (5.0, 30.0), "width": (0.3, 1.0), "depth": (1.0, 5.0)},
    "hole": {"diameter": (2.0, 10.0), "depth": (1.0, 5.0)},
    "bend": {"angle_deg": (1.0, 5.0), "zone": (2.0, 6.0)},
    "broken": {"radius": (3.0, 12.0)},
    "hole_position": {"offset": (0.8, 2.0)},
    "hole_diameter": {"change": (0.6, 2.0)},
}

_LENGTH_KEYS = {"diameter", "length", "radius"}


# --------------------------------------------------------------------------------------------
# small geometry helpers
# --------------------------------------------------------------------------------------------
def _o3d_scene(V, F):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(V, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(F, dtype=np.uint32)))
    return scene


def _signed_distance(V, F, x) -> np.ndarray:
    """Signed distance of ``x (N, 3)`` to the closed mesh (V, F); negative inside."""
    import open3d as o3d

    if len(x) == 0:
        return np.zeros(0)
    scene = _o3d_scene(V, F)
    q = o3d.core.Tensor(np.asarray(x, dtype=np.float32))
    return scene.compute_signed_distance(q).numpy().astype(np.float64)


def _distance(V, F, x) -> np.ndarray:
    """Unsigned distance of ``x (N, 3)`` to the triangles (V, F)."""
    import open3d as o3d

    if len(x) == 0:
        return np.zeros(0)
    scene = _o3d_scene(V, F)
    return scene.compute_distance(o3d.core.Tensor(np.asarray(x, dtype=np.float32))).numpy().astype(np.float64)


def _tangent_frame(n, rng) -> tuple[np.ndarray, np.ndarray]:
    """Random unit tangent ``t`` and ``b = n x t``."""
    n = np.asarray(n, dtype=np.float64)
    helper = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(n, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    a = rng.uniform(0, 2 * math.pi)
    t = math.cos(a) * e1 + math.sin(a) * e2
    return t, np.cross(n, t)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _normal_weight(normals, n0, lo_deg: float = 80.0, hi_deg: float = 50.0) -> np.ndarray:
    """1 where the surface normal is within ``hi_deg`` of ``n0``, 0 beyond ``lo_deg``, smooth in
    between (keeps a defect on the face it was put on, off back faces)."""
    c = np.asarray(normals) @ np.asarray(n0)
    lo, hi = math.cos(math.radians(lo_deg)), math.cos(math.radians(hi_deg))
    return _smoothstep((c - lo) / (hi - lo))


def _rotation_about(axis, angle) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _rotate_batch(x, axis, angles) -> np.ndarray:
    """Rotate rows of ``x`` about the unit ``axis`` (through the origin) by per-row ``angles``
    (Rodrigues' formula)."""
    a = np.asarray(axis, dtype=np.float64)
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    return x * c + np.cross(a, x) * s + a * (x @ a)[:, None] * (1 - c)


def _bisect_once(V, F, need):
    """One pass of conforming longest-edge bisection (Rivara, "Mesh refinement processes based on
    the generalized bisection of simplices", SIAM J. Numer. Anal. 21(3), 1984).

    ``need (F,)`` marks faces that must be split. Every split face is cut at the midpoint of its
    longest edge; a face that has any split edge also splits its longest edge (so the mesh stays
    conforming: no T-junctions), and each face is then cut into 2, 3 or 4 triangles.
    """
    tri = V[F]
    # local edge k joins vertex k and k+1; lengths (F, 3)
    elen = np.stack([np.linalg.norm(tri[:, (k + 1) % 3] - tri[:, k], axis=1) for k in range(3)], 1)
    longest = np.argmax(elen, axis=1)
    pairs = np.sort(np.stack([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]], axis=1).reshape(-1, 2), axis=1)
    ukey, inv = np.unique(pairs[:, 0] * np.int64(len(V)) + pairs[:, 1], return_inverse=True)
    uniq = np.stack([ukey // len(V), ukey % len(V)], axis=1)
    fe = inv.reshape(-1, 3)  # (F, 3) edge ids
    rows = np.arange(len(F))
    marked = np.zeros(len(uniq), dtype=bool)
    marked[fe[rows[need], longest[need]]] = True
    while True:  # propagate: a face with a marked edge must also split its longest edge
        has = marked[fe].any(axis=1)
        lid = fe[rows, longest]
        add = has & ~marked[lid]
        if not add.any():
            break
        marked[lid[add]] = True
    ids = np.nonzero(marked)[0]
    mid_index = np.full(len(uniq), -1, dtype=np.int64)
    mid_index[ids] = len(V) + np.arange(len(ids))
    Vn = np.concatenate([V, 0.5 * (V[uniq[ids, 0]] + V[uniq[ids, 1]])], axis=0)
    split = marked[fe].any(axis=1)
    out = [F[~split]]
    fs = np.nonzero(split)[0]
    if fs.size:
        L = longest[fs]
        # rotate so the longest edge is local edge 0: (a, b) with apex c
        a = F[fs, L]
        b = F[fs, (L + 1) % 3]
        c = F[fs, (L + 2) % 3]
        m = mid_index[fe[fs, L]]
        n = mid_index[fe[fs, (L + 1) % 3]]  # on edge b-c
        q = mid_index[fe[fs, (L + 2) % 3]]  # on edge c-a
        hn, hq = n >= 0, q >= 0
        # half 1: (a, m, c), split by q when edge c-a is marked
        out.append(np.stack([a[~hq], m[~hq], c[~hq]], 1))
        out.append(np.stack([a[hq], m[hq], q[hq]], 1))
        out.append(np.stack([q[hq], m[hq], c[hq]], 1))
        # half 2: (m, b, c), split by n when edge b-c is marked
        out.append(np.stack([m[~hn], b[~hn], c[~hn]], 1))
        out.append(np.stack([m[hn], b[hn], n[hn]], 1))
        out.append(np.stack([m[hn], n[hn], c[hn]], 1))
    return Vn, np.concatenate(out, axis=0)


def refine_mesh_near(vertices, faces, distance_fn, *, radius: float, max_edge: float,
                     max_faces: int = 1_500_000):
    """Refine a triangle mesh near a region until faces there have edges <= ``max_edge``.

    Conforming longest-edge bisection: only faces that may lie within ``radius`` of the region
    (and their neighbours, to stay conforming) are split, so a watertight mesh stays watertight
    and a coarse CAD mesh gets small triangles only where a defect will act.

    Args:
        vertices: ``(V, 3)``.
        faces: ``(F, 3)`` int.
        distance_fn: ``x (N, 3) -> (N,)`` lower bound of the distance from ``x`` to the region.
        radius: refine faces that may come within this distance of the region.
        max_edge: target longest edge there (> 0).
        max_faces: refuse (ValueError) to grow the mesh beyond this.

    Returns:
        ``(vertices (V', 3), faces (F', 3))``; the first ``V`` vertices are the input ones.
    """
    V = np.asarray(vertices, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    if not max_edge > 0:
        raise ValueError(f"max_edge must be > 0, got {max_edge}")
    for _ in range(200):
        tri = V[F]
        longest = np.max(np.stack([np.linalg.norm(tri[:, (k + 1) % 3] - tri[:, k], axis=1)
                                   for k in range(3)], 1), axis=1)
        cand = np.nonzero(longest > max_edge)[0]
        if cand.size == 0:
            break
        cen = tri[cand].mean(axis=1)
        rad = np.linalg.norm(tri[cand] - cen[:, None, :], axis=2).max(axis=1)
        sel = cand[distance_fn(cen) - rad <= radius]
        if sel.size == 0:
            break
        need = np.zeros(len(F), dtype=bool)
        need[sel] = True
        V, F = _bisect_once(V, F, need)
        if len(F) > max_faces:
            raise ValueError(f"refining to {max_edge * 1e3:.3f} mm edges needs more than {max_faces} faces")
    return V, F


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DefectRecord:
    """What was done to a part, in the part frame (metres), and how to label scans of it.

    Attributes:
        kind: one of :data:`ALL_DEFECT_TYPES`.
        centre: ``(3,)`` defect centre on the surface.
        normal: ``(3,)`` outward surface normal at the centre.
        direction: ``(3,)`` scratch / crack direction, bend plane normal, hole shift direction
            (zeros when not meaningful).
        size: the defect's dimensions in metres (``angle_deg`` in degrees), e.g.
            ``{"diameter": 0.012, "depth": 0.0004}``.
        footprint: measured diameter of the anomalous surface region, metres.
        min_shift: a moved point counts as anomalous above this displacement, metres.
        extra: other facts (hole index, nominal/actual hole diameter ...).
    """

    kind: str
    centre: tuple
    normal: tuple
    direction: tuple
    size: Mapping[str, float]
    footprint: float = 0.0
    min_shift: float = 5e-5
    extra: Mapping[str, Any] = field(default_factory=dict)
    # labelling geometry (not part of equality / repr)
    mesh_vertices: np.ndarray | None = field(default=None, repr=False, compare=False)
    mesh_faces: np.ndarray | None = field(default=None, repr=False, compare=False)
    vertex_shift: np.ndarray | None = field(default=None, repr=False, compare=False)
    region_vertices: np.ndarray | None = field(default=None, repr=False, compare=False)
    region_faces: np.ndarray | None = field(default=None, repr=False, compare=False)
    anomalous_points: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def removes_material(self) -> bool:
        return self.region_vertices is not None

    def label_points(self, points, tol: float = 3e-4) -> np.ndarray:
        """Label points of a scan of the defective part (part frame, metres).

        Args:
            points: ``(N, 3)``.
            tol: for "removes" kinds, points within ``tol`` of the removed material (its
                new walls and floor, and a rim of width ``tol`` around the vanished surface);
                for "moves" kinds, points within ``tol`` of the defective surface whose nearest
                surface point moved more than ``min_shift``. Records made by
                :func:`apply_defect` (point clouds) label points within ``tol`` of a moved or
                removed sample.

        Returns:
            ``(N,)`` bool.
        """
        import open3d as o3d

        pts = as_points(points, name="points")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if self.region_vertices is not None:
            # surface points never lie inside the removed material, so the unsigned distance
            # to it decides (walls and floor at 0, the rim within tol)
            return _distance(self.region_vertices, self.region_faces, pts) <= tol
        if self.mesh_vertices is not None:
            scene = _o3d_scene(self.mesh_vertices, self.mesh_faces)
            ans = scene.compute_closest_points(o3d.core.Tensor(pts.astype(np.float32)))
            cp = ans["points"].numpy().astype(np.float64)
            prim = ans["primitive_ids"].numpy().astype(np.int64)
            uv = ans["primitive_uvs"].numpy().astype(np.float64)
            f = self.mesh_faces[prim]
            s = self.vertex_shift
            shift = (1 - uv[:, 0] - uv[:, 1]) * s[f[:, 0]] + uv[:, 0] * s[f[:, 1]] + uv[:, 1] * s[f[:, 2]]
            return (shift > self.min_shift) & (np.linalg.norm(pts - cp, axis=1) <= tol)
        if self.anomalous_points is not None and len(self.anomalous_points):
            from scipy.spatial import cKDTree

            d, _ = cKDTree(self.anomalous_points).query(pts, k=1, distance_upper_bound=tol)
            return np.isfinite(d)
        return np.zeros(len(pts), dtype=bool)

    def to_dict(self, *, transform=None, scale: float = 1.0) -> dict:
        """JSON-friendly summary. ``transform`` (4x4, part frame -> file frame) and ``scale``
        (metres -> file units) map ``centre`` / ``normal`` / ``direction`` and the sizes into a
        written file's frame and units; ``angle_deg`` is never scaled."""
        c = np.asarray(self.centre, dtype=np.float64)
        n = np.asarray(self.normal, dtype=np.float64)
        d = np.asarray(self.direction, dtype=np.float64)
        if transform is not None:
            T = np.asarray(transform, dtype=np.float64)
            c, n, d = T[:3, :3] @ c + T[:3, 3], T[:3, :3] @ n, T[:3, :3] @ d
        out = {
            "type": self.kind,
            "centre": [round(float(v) * scale, 6) for v in c],
            "normal": [round(float(v), 6) for v in n],
            "direction": [round(float(v), 6) for v in d],
            "size": {k: round(float(v) * (1.0 if k.endswith("_deg") else scale), 6)
                     for k, v in self.size.items()},
            "footprint": round(float(self.footprint) * scale, 6),
        }
        if self.extra:
            out["extra"] = {k: (round(float(v) * scale, 6) if isinstance(v, float) else v)
                            for k, v in self.extra.items()}
        return out


@dataclass(frozen=True)
class DefectResult:
    """A defect applied to a point cloud.

    Attributes:
        points: ``(M, 3)`` the defective cloud (``M <= N``: removed points are gone).
        normals: ``(M, 3)`` or ``None`` (rotated for bends, otherwise the input normals).
        mask: ``(M,)`` bool, True where the surface moved by more than ``min_shift`` or lies
            within ``rim`` of removed material.
        kept: ``(M,)`` int64 row of each output point in the input cloud.
        record: the :class:`DefectRecord`.
    """

    points: np.ndarray
    normals: np.ndarray | None
    mask: np.ndarray
    kept: np.ndarray
    record: DefectRecord


# --------------------------------------------------------------------------------------------
# surface sample used to place defects
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Surface:
    points: np.ndarray
    normals: np.ndarray

    @property
    def lo(self):
        return self.points.min(axis=0)

    @property
    def hi(self):
        return self.points.max(axis=0)

    @property
    def max_extent(self) -> float:
        return float((self.hi - self.lo).max())


def _draw(rng, lo, hi, log=False):
    if hi <= lo:
        return float(lo)
    if log:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def _sizes(kind, rng, surface: _Surface, size: Mapping[str, float], max_rel_size: float) -> dict:
    """Draw sizes (metres) not given in ``size``; cap lengths relative to the part."""
    out = {}
    cap = max_rel_size * surface.max_extent
    for key, spec in SIZE_RANGES_MM[kind].items():
        if key in size:
            v = float(size[key])
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{kind}: size {key} must be > 0, got {size[key]}")
            out[key] = v
            continue
        lo, hi = spec[0], spec[1]
        log = len(spec) > 2 and spec[2] == "log"
        if key.endswith("_deg"):
            out[key] = _draw(rng, lo, hi, log)
            continue
        lo_m, hi_m = lo * _MM, hi * _MM
        if key in _LENGTH_KEYS:
            hi_m = max(min(hi_m, cap), lo_m)
        out[key] = _draw(rng, lo_m, hi_m, log)
    unknown = set(size) - set(SIZE_RANGES_MM[kind])
    if unknown:
        raise ValueError(f"{kind}: unknown size keys {sorted(unknown)}; "
                         f"expected {sorted(SIZE_RANGES_MM[kind])}")
    return out


# --------------------------------------------------------------------------------------------
# defect models
# --------------------------------------------------------------------------------------------
class DefectModel:
    """One kind of defect. ``moves`` models implement :meth:`displacement`; ``removes``
    models implement :meth:`cutter`. :meth:`place` draws a location and sizes."""

    kind: str = ""
    moves: bool = True

    def place(self, rng, surface: _Surface, size: dict) -> dict:
        """Location and orientation: ``{"centre", "normal", "direction", ...}``."""
        i = int(rng.integers(len(surface.points)))
        c, n = surface.points[i], surface.normals[i]
        t, b = _tangent_frame(n, rng)
        return {"centre": c, "normal": n, "direction": t, "binormal": b}

    def max_edge(self, p: dict) -> float:
        return 1e-3

    def influence(self, p: dict, x) -> np.ndarray:
        """Lower bound of the distance from ``x`` to where the defect acts."""
        return np.linalg.norm(x - p["centre"], axis=1) - self.reach(p)

    def reach(self, p: dict) -> float:
        return 0.0


class DisplacementDefect(DefectModel, abc.ABC):
    """A defect that moves the surface: ``x -> x + displacement(p, x, n)``."""

    moves = True

    @abc.abstractmethod
    def displacement(self, p: dict, x, n) -> np.ndarray:
        """``(N, 3)`` displacement of surface points ``x (N, 3)`` with normals ``n (N, 3)``."""


class RegionDefect(DefectModel, abc.ABC):
    """A defect that removes the material inside a closed cutter solid."""

    moves = False

    @abc.abstractmethod
    def cutter(self, p: dict, surface: _Surface):
        """Closed ``trimesh.Trimesh`` (metres) of the removed material."""


class _Bump(DisplacementDefect):
    sign = 1.0
    depth_key = "height"

    def reach(self, p):
        return p["diameter"] / 2

    def max_edge(self, p):
        return p["diameter"] / 14

    def displacement(self, p, x, n):
        R, h = p["diameter"] / 2, p[self.depth_key]
        r = np.linalg.norm(x - p["centre"], axis=1) / R
        prof = np.where(r < 1, (1 - np.minimum(r, 1) ** 2) ** 2, 0.0)  # C1 quartic bump
        w = _normal_weight(n, p["normal"])
        return (self.sign * h * prof * w)[:, None] * p["normal"]


class Bulge(_Bump):
    """Smooth bump ``h (1 - (r/R)^2)^2`` pushed out along the surface normal."""
    kind, sign, depth_key = "bulge", 1.0, "height"


class Sink(_Bump):
    """Smooth dent ``h (1 - (r/R)^2)^2`` pushed in along the surface normal (an impact)."""
    kind, sign, depth_key = "sink", -1.0, "depth"


class Scratch(DisplacementDefect):
    """Straight groove along a tangent: parabolic cross-section of width ``w`` and depth ``d``,
    tapered over one width at both ends; confined to the face it starts on (normal weight and a
    2 mm band along the normal)."""

    kind = "scratch"

    def reach(self, p):
        return p["length"] / 2 + p["width"]

    def max_edge(self, p):
        return p["width"] / 5

    def _band(self, p):
        return max(2e-3, 2 * p["depth"])

    def influence(self, p, x):
        rel = x - p["centre"]
        along = np.maximum(np.abs(rel @ p["direction"]) - p["length"] / 2, 0.0)
        across = np.maximum(np.abs(rel @ p["binormal"]) - p["width"] / 2, 0.0)
        up = np.maximum(np.abs(rel @ p["normal"]) - self._band(p), 0.0)
        return np.sqrt(along ** 2 + across ** 2 + up ** 2)

    def displacement(self, p, x, n):
        rel = x - p["centre"]
        u = rel @ p["direction"]
        v = rel @ p["binormal"]
        h = rel @ p["normal"]
        L, w, d = p["length"], p["width"], p["depth"]
        across = np.clip(1 - (2 * v / w) ** 2, 0.0, None)
        taper = _smoothstep((L / 2 - np.abs(u)) / w)
        band = np.abs(h) < self._band(p)
        amount = d * across * taper * _normal_weight(n, p["normal"]) * band
        return -amount[:, None] * p["normal"]


class Bend(DisplacementDefect):
    """The part beyond a plane is bent by ``angle_deg`` about an axis in that plane; the angle
    ramps up smoothly over a ``zone`` (a bend radius), so the surface stays continuous."""

    kind = "bend"

    def place(self, rng, surface, size):
        # bend across the longest side, so the bent side is a tab of 15-40 % of the part
        ext = surface.hi - surface.lo
        axis_i = int(np.argmax(ext))
        t = np.zeros(3)
        t[axis_i] = 1.0 if rng.random() < 0.5 else -1.0
        s = surface.points @ t
        lo, hi = s.min(), s.max()
        s0 = lo + rng.uniform(0.6, 0.85) * (hi - lo)
        others = [k for k in range(3) if k != axis_i]
        k = others[int(np.argmin(ext[others]))]  # bend about the axis across the thin side
        a = np.zeros(3)
        a[[k2 for k2 in others if k2 != k][0]] = 1.0
        centroid = surface.points.mean(axis=0)
        pivot = centroid + (s0 - centroid @ t) * t
        near = np.abs(s - s0) < 0.02 * (hi - lo) + 1e-4
        idx = np.nonzero(near)[0]
        i = int(idx[rng.integers(len(idx))]) if idx.size else int(np.argmin(np.abs(s - s0)))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return {"centre": surface.points[i], "normal": surface.normals[i], "direction": t,
                "binormal": a * sign, "pivot": pivot, "s0": s0}

    def max_edge(self, p):
        return max(p["zone"] / 3, 3e-4)

    def influence(self, p, x):
        # distance to the bending zone s0 <= s <= s0 + zone (beyond it the part moves rigidly)
        s = x @ p["direction"] - p["s0"] - p["zone"] / 2
        return np.abs(s) - p["zone"] / 2

    def reach(self, p):
        return 0.0

    def _angles(self, p, x):
        s = x @ p["direction"] - p["s0"]
        return math.radians(p["angle_deg"]) * _smoothstep(s / p["zone"])

    def displacement(self, p, x, n):
        ang = self._angles(p, x)
        moved = _rotate_batch(x - p["pivot"], p["binormal"], ang) + p["pivot"]
        return moved - x

    def rotate_normals(self, p, x, n):
        return _rotate_batch(n, p["binormal"], self._angles(p, x))


def _local_relief(p, surface: _Surface, radius: float) -> tuple[float, float]:
    """(rise above, drop below) the tangent plane at the centre within ``radius`` on the same face."""
    rel = surface.points - p["centre"]
    near = (np.linalg.norm(rel, axis=1) < radius) & (surface.normals @ p["normal"] > 0.3)
    h = rel[near] @ p["normal"]
    if h.size == 0:
        return 0.0, 0.0
    return float(max(h.max(), 0.0)), float(max(-h.min(), 0.0))


def _extrude_polygon(poly_uv, p, z_lo: float, z_hi: float):
    """Closed prism: polygon in the (direction, binormal) plane at the centre, from ``z_lo`` to
    ``z_hi`` along the normal. Returns a trimesh (metres)."""
    import manifold3d as m3d

    from ..parts import manifold_to_trimesh

    poly = np.asarray(poly_uv, dtype=np.float64) / _MM
    area = 0.5 * np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1])
    if area < 0:
        poly = poly[::-1]
    cs = m3d.CrossSection([poly])
    solid = m3d.Manifold.extrude(cs, (z_hi - z_lo) / _MM).translate((0, 0, z_lo / _MM))
    R = np.stack([p["direction"], p["binormal"], p["normal"]], axis=1)
    M = np.concatenate([R, (np.asarray(p["centre"]) / _MM).reshape(3, 1)], axis=1)
    return manifold_to_trimesh(solid.transform(M.tolist()), scale=_MM)


class Crack(RegionDefect):
    """A thin slot that wanders (two random sine components) and tapers to points at both ends,
    cut ``depth`` deep below the local surface."""

    kind = "crack"

    def place(self, rng, surface, size):
        p = super().place(rng, surface, size)
        p["wiggle"] = (rng.uniform(0.02, 0.08), rng.uniform(0.6, 1.6), rng.uniform(0, 2 * math.pi),
                       rng.uniform(0.01, 0.04), rng.uniform(2.0, 4.0), rng.uniform(0, 2 * math.pi))
        return p

    def max_edge(self, p):
        return p["width"] / 3

    def reach(self, p):
        return p["length"] / 2 + p["width"]

    def cutter(self, p, surface):
        L, w = p["length"], p["width"]
        a1, f1, ph1, a2, f2, ph2 = p["wiggle"]
        u = np.linspace(-L / 2, L / 2, 61)
        x = (u + L / 2) / L
        v0 = L * (a1 * np.sin(2 * math.pi * f1 * x + ph1) + a2 * np.sin(2 * math.pi * f2 * x + ph2))
        v0 -= v0[30]  # passes through the centre
        hw = 0.5 * w * np.maximum(np.sin(math.pi * x), 0.0) ** 0.5
        hw = np.maximum(hw, 0.02 * w)
        lower = np.stack([u, v0 - hw], axis=1)
        upper = np.stack([u, v0 + hw], axis=1)[::-1]
        rise, drop = _local_relief(p, surface, L / 2 + w)
        return _extrude_polygon(np.concatenate([lower, upper]), p, -(p["depth"] + drop), rise + 1e-3)


class HoleDefect(RegionDefect):
    """A blind cylindrical opening of ``diameter`` and ``depth`` (below the local surface)."""

    kind = "hole"

    def max_edge(self, p):
        return p["diameter"] / 10

    def reach(self, p):
        return p["diameter"] / 2

    def cutter(self, p, surface):
        r = p["diameter"] / 2
        rise, drop = _local_relief(p, surface, r)
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        circle = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
        return _extrude_polygon(circle, p, -(p["depth"] + drop), rise + 1e-3)


class Broken(RegionDefect):
    """A chunk broken off near an extremity: a rough sphere (radius varying by about +-15 %)
    centred just outside the surface at a point far from the centroid."""

    kind = "broken"

    def place(self, rng, surface, size):
        d = np.linalg.norm(surface.points - surface.points.mean(axis=0), axis=1)
        cand = np.nonzero(d >= np.quantile(d, 0.85))[0]
        i = int(cand[rng.integers(len(cand))])
        c, n = surface.points[i], surface.normals[i]
        t, b = _tangent_frame(n, rng)
        waves = [(rng.normal(size=3), rng.uniform(0, 2 * math.pi)) for _ in range(3)]
        return {"centre": c, "normal": n, "direction": t, "binormal": b, "waves": waves}

    def max_edge(self, p):
        return p["radius"] / 10

    def reach(self, p):
        return p["radius"] * 1.5

    def cutter(self, p, surface):
        import trimesh

        ico = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
        dirs = np.asarray(ico.vertices)
        rad = np.ones(len(dirs))
        for k, ph in p["waves"]:
            rad += 0.05 * np.cos(3.0 * dirs @ (k / np.linalg.norm(k)) + ph)
        centre = np.asarray(p["centre"]) + 0.25 * p["radius"] * np.asarray(p["normal"])
        V = centre + dirs * (p["radius"] * rad)[:, None]
        return trimesh.Trimesh(vertices=V, faces=np.asarray(ico.faces), process=False)


DEFECT_MODELS: dict[str, DefectModel] = {m.kind: m for m in (
    Bulge(), Sink(), Scratch(), Crack(), HoleDefect(), Bend(), Broken())}


# --------------------------------------------------------------------------------------------
# CAD hole deviations (need a procedural Part)
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
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
            surface where the defect may be centred (e.g. the faces a cell can see); ``None``:
            anywhere. Ignored by CAD kinds (they change a hole) and by ``bend`` (a whole tab).
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
    for _ in range(max_tries):
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
        rec = replace(rec, footprint=_footprint(chk[lab]))
        return out, rec
    raise ValueError(f"{kind}: no placement changed the surface in {max_tries} tries")


def _csg_subtract(mesh, cutter):
    """``(mesh - cutter, mesh & cutter)`` with manifold3d, or None when either is not a closed
    manifold or the cutter misses the part. The second mesh is the removed material."""
    from ..parts import manifold_to_trimesh, trimesh_to_manifold

    try:
        a = trimesh_to_manifold(mesh, scale=1 / _MM)
        b = trimesh_to_manifold(cutter, scale=1 / _MM)
    except ValueError:
        return None
    removed = a ^ b
    if removed.is_empty() or removed.volume() <= 0:
        return None
    res = a - b
    if res.is_empty():
        return None
    return manifold_to_trimesh(res, scale=_MM), manifold_to_trimesh(removed, scale=_MM)


def _delete_inside(V0, F0, cutter, max_edge):
    import trimesh

    cv, cf = np.asarray(cutter.vertices), np.asarray(cutter.faces)

    def dist(x):
        return np.abs(_signed_distance(cv, cf, x))

    V, F = refine_mesh_near(V0, F0, dist, radius=0.0, max_edge=max_edge)
    cen = V[F].mean(axis=1)
    inside = _signed_distance(cv, cf, cen) < 0
    if not inside.any():
        return None
    out = trimesh.Trimesh(vertices=V, faces=F[~inside], process=False)
    out.remove_unreferenced_vertices()
    gone = trimesh.Trimesh(vertices=V, faces=F[inside], process=False)  # the vanished surface
    gone.remove_unreferenced_vertices()
    return out, gone
