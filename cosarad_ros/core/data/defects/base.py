"""What every defect model builds on: the surface sample defects are placed on, the size draw, and
the model base classes (:class:`DefectModel`, :class:`DisplacementDefect`, :class:`RegionDefect`).
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .helpers import _tangent_frame
from .kinds import _LENGTH_KEYS, _MM, SIZE_RANGES_MM


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
    models implement :meth:`cutter`. :meth:`place` draws a location and sizes.
    """

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
