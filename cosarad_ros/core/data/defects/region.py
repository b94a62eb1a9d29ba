"""Defect models that remove material inside a closed cutter solid (``removes`` kinds: crack,
hole, broken), and the two ways of cutting it out of a mesh (CSG subtraction, or deleting the
faces inside the cutter).
"""
from __future__ import annotations

import math

import numpy as np

from .base import RegionDefect, _Surface
from .helpers import _signed_distance, _tangent_frame, refine_mesh_near
from .kinds import _MM


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
    ``z_hi`` along the normal. Returns a trimesh (metres).
    """
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
    cut ``depth`` deep below the local surface.
    """

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
    centred just outside the surface at a point far from the centroid.
    """

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


def _csg_subtract(mesh, cutter):
    """``(mesh - cutter, mesh & cutter)`` with manifold3d, or None when either is not a closed
    manifold or the cutter misses the part. The second mesh is the removed material.
    """
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
