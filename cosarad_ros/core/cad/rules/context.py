"""What the rules share: the per-scan :class:`InspectionContext`, the :class:`Rule` interface and
two helpers that make findings and measure their elongation.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy.spatial import cKDTree

from cosarad_ros.core.cad.library import CadModel

from .results import DefectFinding


@dataclass
class InspectionContext:
    """Per-scan quantities shared by the rules (computed once by :class:`RuleBasedInspector`)."""

    points: np.ndarray          # (N, 3) model frame
    model: CadModel
    deviation: np.ndarray       # (N,) signed
    curvature: np.ndarray       # (N,)
    noise_sigma: float
    spacing: float
    tree: cKDTree
    claimed: np.ndarray         # (N,) bool, points already given to a finding
    local_spacing: np.ndarray   # (N,) mean distance to the 4 nearest neighbours
    surface: np.ndarray         # (N, 3) closest points on the CAD surface (shapes of defects on it)
    hole_measurements: list = field(default_factory=list)  # filled by HoleRule
    allowances: Mapping = field(default_factory=dict)      # hole name -> HoleAllowance (bias, extra tolerance) [m]

    def eps(self, eps: float | None, factor: float = 3.0, idx: np.ndarray | None = None) -> float:
        """DBSCAN radius: ``eps`` when given, else ``factor`` x the point spacing where the
        candidates ``idx`` lie (faces seen obliquely are sampled more sparsely).
        """
        if eps is not None:
            return float(eps)
        sp = self.spacing
        if idx is not None and len(idx):
            sp = max(sp, float(np.percentile(self.local_spacing[idx], 75)))
        return max(factor * sp, 1e-6)


def _finding(kind: str, pts: np.ndarray, idx: np.ndarray, score: float, details: Mapping) -> DefectFinding:
    sub = pts[idx]
    return DefectFinding(type=kind, centroid=sub.mean(axis=0), extent=np.ptp(sub, axis=0), score=float(score),
                         point_count=int(len(idx)), indices=np.asarray(idx, dtype=np.int64), details=dict(details))


def _elongation(sub: np.ndarray) -> tuple[float, float, float]:
    """``(length, width, length / width)`` of a cluster from its two main principal extents."""
    if len(sub) < 3:
        return 0.0, 0.0, 1.0
    c = sub - sub.mean(axis=0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    proj = c @ vt[:2].T
    ext = np.ptp(proj, axis=0)
    length, width = float(ext[0]), float(ext[1])
    return length, width, length / max(width, 1e-9)


class Rule(ABC):
    """A defect rule: ``find(ctx) -> list of DefectFinding`` (hole rules also append their
    measurements to ``ctx.hole_measurements``).
    """

    name = "rule"

    @abstractmethod
    def find(self, ctx: InspectionContext) -> list[DefectFinding]:
        """Findings in ``ctx``; a rule marks the points it used in ``ctx.claimed``."""
