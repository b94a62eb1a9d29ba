"""Deviation of points from a set of registered good templates (a per-point patch input channel).

The COSARAD network (Tarvo, Wan, Chen) sees a patch as bare coordinates. Our partial scans differ
from full templates far more by coverage (what the view hides) than by a sub-millimetre defect, and
a PointNet++ over coordinates alone underfits that contrast (``docs/anomaly.md``, training
diagnostics). :class:`TemplateSurfaces` gives every point one more number, its deviation from the
good templates, so the network can learn *which patterns* of deviation are defects and which are
sampling, edges and noise -- a class-agnostic signal, so features transfer to unseen part types.

Deviation of a point ``p``: over the templates, the smallest
``sqrt(dn^2 + dt^2)`` with ``dn`` the distance along the nearest template point's normal and
``dt`` the part of the straight-line distance beyond the templates' point spacing (two samplings of
one surface do not differ, material beyond an edge does). A template's own points are measured
against the *other* templates (leave-one-out), as a test scan's are against all of them.

:func:`deviation_channel` maps metres to the network's input: patch units (``2 / R``) times a gain,
clipped, so it is scale-free like the coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import as_points

__all__ = ["TemplateSurfaces", "deviation_channel", "DEVIATION_GAIN", "DEVIATION_CLIP"]

#: channel = min(DEVIATION_GAIN x deviation in patch units, DEVIATION_CLIP); with R = 8 mm a
#: 0.25 mm deviation gives 0.625 and 1.6 mm saturates
DEVIATION_GAIN = 10.0
DEVIATION_CLIP = 4.0


def deviation_channel(deviation_m: np.ndarray, radius: float, *, gain: float = DEVIATION_GAIN,
                      clip: float = DEVIATION_CLIP) -> np.ndarray:
    """``(N,)`` deviations [m] -> ``(N, 1)`` float32 network channel for patches of radius ``radius`` [m]."""
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be > 0, got {radius}")
    d = np.asarray(deviation_m, dtype=np.float64)
    return np.minimum(d * (2.0 / radius) * gain, clip).astype(np.float32)[:, None]


@dataclass(frozen=True)
class TemplateSurfaces:
    """Registered good templates with their normals and k-d trees.

    Attributes:
        templates: ``(N_g, 3)`` arrays in one frame [m].
        normals: unit normals (unoriented) per template.
        trees: ``cKDTree`` per template.
        allowance: tangential allowance [m] (``1.5 x`` the median nearest-neighbour spacing).
    """

    templates: tuple
    normals: tuple
    trees: tuple
    allowance: float

    @classmethod
    def build(cls, templates, normals=None) -> "TemplateSurfaces":
        """From ``templates`` (list of ``(N_g, 3)``, already registered); normals are estimated
        (:func:`.visibility.estimate_normals`) unless given.

        Raises:
            ValueError: fewer than 2 templates (leave-one-out needs another one) or bad points.
        """
        if templates is None or len(templates) < 2:
            raise ValueError("template deviations need at least 2 registered templates")
        tmpl = tuple(as_points(t, name=f"template {i}", min_points=3) for i, t in enumerate(templates))
        if normals is None or len(normals) != len(tmpl):
            from .visibility import estimate_normals

            normals = [estimate_normals(t) for t in tmpl]
        normals = tuple(np.asarray(n, dtype=np.float64) for n in normals)
        for i, (t, n) in enumerate(zip(tmpl, normals)):
            if n.shape != t.shape:
                raise ValueError(f"normals of template {i} have shape {n.shape}, expected {t.shape}")
        trees = tuple(cKDTree(t) for t in tmpl)
        step = float(np.median([np.median(tr.query(t, k=2)[0][:, 1]) for tr, t in zip(trees, tmpl)]))
        return cls(tmpl, normals, trees, 1.5 * step)

    def deviation(self, points, *, exclude: int | None = None) -> np.ndarray:
        """``(N,)`` smallest deviation [m] of ``points (N, 3)`` over the templates (all but
        ``exclude``, for a template's own points).
        """
        pts = as_points(points, name="points", min_points=0)
        best = np.full(len(pts), np.inf)
        for g, (t, n, tree) in enumerate(zip(self.templates, self.normals, self.trees)):
            if g == exclude or len(pts) == 0:
                continue
            dist, idx = tree.query(pts, k=1, workers=-1)
            normal = np.abs(((pts - t[idx]) * n[idx]).sum(1))
            tangential = np.maximum(dist - self.allowance, 0.0)
            np.minimum(best, np.sqrt(normal ** 2 + tangential ** 2), out=best)
        return best

    def leave_one_out(self) -> tuple:
        """Deviation of each template's points against the other templates, ``(N_g,)`` each."""
        return tuple(self.deviation(t, exclude=g) for g, t in enumerate(self.templates))
