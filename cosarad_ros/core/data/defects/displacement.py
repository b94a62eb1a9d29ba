"""Defect models that move the surface (``moves`` kinds): bulge, sink, scratch and bend."""
from __future__ import annotations

import math

import numpy as np

from .base import DisplacementDefect
from .helpers import _normal_weight, _rotate_batch, _smoothstep


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
    2 mm band along the normal).
    """

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
    ramps up smoothly over a ``zone`` (a bend radius), so the surface stays continuous.
    """

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
