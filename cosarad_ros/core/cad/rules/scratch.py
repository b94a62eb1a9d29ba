"""The scratch rule: deep deviation on high surface variation, elongated clusters."""
from __future__ import annotations

import numpy as np

from .blocks import dbscan
from .context import InspectionContext, Rule, _elongation, _finding
from .results import DefectFinding


class ScratchRule(Rule):
    """Scratches: deep deviation on high surface variation, elongated clusters.

    Args:
        depth_threshold: least absolute deviation of a scratch point [m] (paper: 2 mm).
        curvature_threshold: least surface variation of a scratch point (k-neighbourhood of the
            inspector; a 0.3 mm deep groove gives about 0.007 at k = 50 and 0.3 mm point spacing,
            a plane with 20 um noise 0.0003, a smooth 10 mm dent 0.0005).
        eps: DBSCAN radius [m]; ``None``: 8 x the point spacing where the candidates lie (a
            narrow groove is seen only in pieces, so the clusters need a wide radius).
        min_points: DBSCAN MinPts and smallest scratch.
        min_elongation: least length / width of a scratch cluster (1 = no shape check).
        min_length: shortest scratch [m].
        max_surround: a cluster is no scratch when more than this many deviating points per
            cluster point lie around it (it is part of a wider defect); ``None`` disables the check.
    """

    name = "scratch"

    def __init__(self, *, depth_threshold: float = 0.002, curvature_threshold: float = 0.002,
                 eps: float | None = None, min_points: int = 5, min_elongation: float = 4.0,
                 min_length: float = 0.003, max_surround: float | None = 1.0):
        if depth_threshold <= 0 or not 0 <= curvature_threshold <= 1 / 3 or min_points < 1:
            raise ValueError("scratch rule: depth_threshold > 0, curvature_threshold in [0, 1/3], min_points >= 1")
        if eps is not None and eps <= 0:
            raise ValueError(f"scratch rule: eps must be > 0, got {eps}")
        self.depth_threshold = float(depth_threshold)
        self.curvature_threshold = float(curvature_threshold)
        self.eps = eps
        self.min_points = int(min_points)
        self.min_elongation = float(min_elongation)
        self.min_length = float(min_length)
        self.max_surround = None if max_surround is None else float(max_surround)

    def find(self, ctx: InspectionContext) -> list[DefectFinding]:
        cand = np.flatnonzero((np.abs(ctx.deviation) > self.depth_threshold)
                              & (ctx.curvature > self.curvature_threshold) & ~ctx.claimed)
        out = []
        if len(cand) < self.min_points:
            return out
        lab = dbscan(ctx.points[cand], eps=ctx.eps(self.eps, 8.0, cand), min_points=self.min_points)
        deviating = np.abs(ctx.deviation) > self.depth_threshold
        for c in range(lab.max() + 1 if len(lab) else 0):
            idx = cand[lab == c]
            length, width, elong = _elongation(ctx.surface[idx])
            if len(idx) < self.min_points or elong < self.min_elongation or length < self.min_length:
                continue
            if self.max_surround is not None:
                # a scratch is a narrow groove in nominal surface; a curved, elongated piece of a
                # larger deviating area (e.g. the rim of a wide dent) is left to the dent rule
                r = ctx.eps(self.eps, 3.0, idx)
                near = np.unique(np.concatenate(ctx.tree.query_ball_point(ctx.points[idx], r)))
                around = np.setdiff1d(near[deviating[near] & ~ctx.claimed[near]], idx)
                if len(around) > self.max_surround * len(idx):
                    continue
            dev = ctx.deviation[idx]
            out.append(_finding("scratch", ctx.points, idx, np.abs(dev).max(),
                                {"depth": float(np.abs(dev).max()), "length": length, "width": width,
                                 "elongation": elong, "mean_curvature": float(ctx.curvature[idx].mean())}))
            ctx.claimed[idx] = True
        return out
