"""The dent rule: clusters of noise-normalised deviation (dents inward, bulges outward, and long
narrow inward clusters as scratches).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .blocks import dbscan
from .context import InspectionContext, Rule, _elongation, _finding
from .results import DefectFinding


class DentRule(Rule):
    """Dents (inward) and bulges (outward): clusters of noise-normalised deviation.

    Args:
        z_threshold: least ``|d| / sigma`` of a dent point (sigma: robust noise of the deviation).
        min_depth: least absolute deviation [m].
        eps: DBSCAN radius [m]; ``None``: 3 x the point spacing where the candidates lie.
        min_points: DBSCAN MinPts (paper: 10) and smallest dent.
        min_size: smallest dent diameter [m] (largest extent of the cluster).
        report_bulges: also report outward clusters as ``bulge``.
        scratch_elongation: beyond the paper, an inward cluster at least this elongated
            (length / width) and at most ``scratch_max_width`` wide is reported as a ``scratch``
            (wide or shallow grooves have too little curvature for :class:`ScratchRule`);
            ``None`` disables it.
        scratch_max_width: widest such scratch [m].
        scratch_link: inward clusters closer than this [m] are joined when together they form
            such a groove.
    """

    name = "dent"

    def __init__(self, *, z_threshold: float = 4.0, min_depth: float = 0.0002, eps: float | None = None,
                 min_points: int = 10, min_size: float = 0.0, report_bulges: bool = True,
                 scratch_elongation: float | None = 2.5, scratch_max_width: float = 0.0025,
                 scratch_link: float = 0.005):
        if z_threshold <= 0 or min_depth < 0 or min_points < 1 or min_size < 0:
            raise ValueError("dent rule: z_threshold > 0, min_depth >= 0, min_points >= 1, min_size >= 0")
        if eps is not None and eps <= 0:
            raise ValueError(f"dent rule: eps must be > 0, got {eps}")
        self.z_threshold = float(z_threshold)
        self.min_depth = float(min_depth)
        self.eps = eps
        self.min_points = int(min_points)
        self.min_size = float(min_size)
        self.report_bulges = bool(report_bulges)
        self.scratch_elongation = None if scratch_elongation is None else float(scratch_elongation)
        self.scratch_max_width = float(scratch_max_width)
        self.scratch_link = float(scratch_link)

    def find(self, ctx: InspectionContext) -> list[DefectFinding]:
        z = np.abs(ctx.deviation) / max(ctx.noise_sigma, 1e-9)
        cand = np.flatnonzero((z > self.z_threshold) & (np.abs(ctx.deviation) > self.min_depth) & ~ctx.claimed)
        out = []
        if len(cand) < self.min_points:
            return out
        eps = ctx.eps(self.eps, 3.0, cand)
        lab = dbscan(ctx.points[cand], eps=eps, min_points=self.min_points)
        clusters = [cand[lab == c] for c in range(lab.max() + 1 if len(lab) else 0)]
        clusters = [c for c in clusters if len(c) >= self.min_points]
        if self.scratch_elongation is not None:
            clusters = self._link_grooves(ctx, clusters)
        for idx in clusters:
            size = float(np.ptp(ctx.points[idx], axis=0).max())
            if size < self.min_size:
                continue
            dev = ctx.deviation[idx]
            kind = "dent" if np.median(dev) < 0 else "bulge"
            details = {"depth": float(np.abs(dev).max()), "size": size, "max_z": float(z[idx].max())}
            if self.scratch_elongation is not None and kind == "dent" and self._groove(ctx, idx):
                # long and narrow: a scratch too wide or shallow for the curvature filter
                length, width, elong = _elongation(ctx.surface[idx])
                kind = "scratch"
                details.update(length=length, width=width, elongation=elong)
            if kind == "bulge" and not self.report_bulges:
                continue
            out.append(_finding(kind, ctx.points, idx, np.abs(dev).max(), details))
            ctx.claimed[idx] = True
        return out

    def _groove(self, ctx: InspectionContext, idx: np.ndarray) -> bool:
        # shape on the CAD surface: the depth of a deep narrow groove must not count as width
        _, width, elong = _elongation(ctx.surface[idx])
        return elong >= self.scratch_elongation and width <= self.scratch_max_width

    def _link_grooves(self, ctx: InspectionContext, clusters: list[np.ndarray]) -> list[np.ndarray]:
        """Join inward clusters within ``scratch_link`` of each other when their union is a groove
        (a narrow scratch is seen in pieces, and a short piece alone looks like a small dent).
        """
        clusters = [c for c in clusters]
        inward = [bool(np.median(ctx.deviation[c]) < 0) for c in clusters]
        merged = True
        while merged:
            merged = False
            for i in range(len(clusters)):
                for j in range(i + 1, len(clusters)):
                    if not (inward[i] and inward[j]):
                        continue
                    if not (self._groove(ctx, clusters[i]) or self._groove(ctx, clusters[j])):
                        continue
                    gap, _ = cKDTree(ctx.points[clusters[i]]).query(ctx.points[clusters[j]], k=1)
                    if gap.min() > self.scratch_link:
                        continue
                    union = np.concatenate([clusters[i], clusters[j]])
                    if self._groove(ctx, union):
                        clusters[i] = union
                        del clusters[j], inward[j]
                        merged = True
                        break
                if merged:
                    break
        return clusters
