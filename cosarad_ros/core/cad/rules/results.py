"""What the rules report: :class:`DefectFinding` (one defect), :class:`HoleMeasurement` (one
nominal hole), :class:`HoleAllowance` (what a cell measures of a good hole) and
:class:`DefectReport` (a whole scan).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

import numpy as np

from cosarad_ros.core.cad.library import HoleSpec

HOLE_DEFECT_TYPES = ("hole_position", "hole_diameter", "missing", "hole")


@dataclass(frozen=True)
class DefectFinding:
    """One defect (maps onto ``msg/Defect``).

    Attributes:
        type: ``scratch``, ``dent``, ``bulge``, ``hole_position``, ``hole_diameter``, ``missing``
            or ``hole`` (a surface finding in the column of a hole too obliquely seen to be measured).
        centroid: ``(3,)`` centre of its points [m] (model frame).
        extent: ``(3,)`` axis-aligned size of its points [m].
        score: largest absolute deviation [m] (surface defects) or the out-of-tolerance error [m]
            (holes).
        point_count: number of scan points.
        indices: ``(point_count,)`` indices into the scan.
        details: rule-specific values (depth, length, hole name, measured diameter...).
    """

    type: str
    centroid: np.ndarray
    extent: np.ndarray
    score: float
    point_count: int
    indices: np.ndarray = field(repr=False)
    details: Mapping = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"type": self.type, "centroid": [float(v) for v in self.centroid],
                "extent": [float(v) for v in self.extent], "score": float(self.score),
                "point_count": int(self.point_count), "details": _plain(self.details)}


@dataclass(frozen=True)
class HoleMeasurement:
    """Measurement of one nominal hole.

    Attributes:
        hole: the nominal :class:`HoleSpec`.
        observed: enough scan points around the hole to judge it.
        found: a circular opening was found near the nominal position.
        centre: ``(3,)`` measured centre on the entry plane [m] (NaN when not found).
        diameter: measured diameter [m] (NaN when not found).
        centre_error: distance of the measured centre from the nominal one [m].
        diameter_error: measured minus nominal diameter [m].
        ok: within both tolerances (``False`` when missing; ``True`` when not observed).
        method: ``"wall"`` or ``"boundary"`` (which points the final circle was fitted to), or
            ``"coverage"`` (missing hole, or a hole narrower than the alpha shape can open,
            measured where the material starts).
        fit_points: points of the final circle fit.
    """

    hole: HoleSpec
    observed: bool
    found: bool
    centre: np.ndarray
    diameter: float
    centre_error: float
    diameter_error: float
    ok: bool
    method: str = ""
    fit_points: int = 0

    def as_dict(self) -> dict:
        return {"name": self.hole.name, "nominal_centre": [float(v) for v in self.hole.centre],
                "nominal_diameter": float(self.hole.diameter), "observed": self.observed,
                "found": self.found, "centre": [float(v) for v in self.centre],
                "diameter": float(self.diameter), "centre_error": float(self.centre_error),
                "diameter_error": float(self.diameter_error), "ok": self.ok, "method": self.method,
                "fit_points": int(self.fit_points)}


class HoleAllowance(NamedTuple):
    """What a cell's good scans show of one hole (:func:`~.inspector.hole_allowances`).

    Attributes:
        position: added to the position tolerance [m] (``inf``: the hole is not judged).
        diameter: added to the diameter tolerance [m] (``inf``: not judged).
        centre_bias: ``(3,)`` mean offset of the measured centre from the nominal one in the
            good scans [m], taken off each measurement.
        diameter_bias: mean measured-minus-nominal diameter of the good scans [m], taken off.
    """

    position: float
    diameter: float
    centre_bias: tuple = (0.0, 0.0, 0.0)
    diameter_bias: float = 0.0


@dataclass(frozen=True)
class DefectReport:
    """Result of :func:`detect_defects`.

    Attributes:
        defects: every finding, largest score first.
        holes: one measurement per nominal hole.
        deviation: ``(N,)`` signed point-to-CAD deviation [m] (negative inside the material).
        curvature: ``(N,)`` surface variation in [0, 1/3].
        labels: ``(N,)`` index into ``defects`` of each point, -1 for none.
        noise_sigma: robust standard deviation of the deviation [m].
        spacing: median nearest-neighbour spacing of the scan [m].
    """

    defects: tuple[DefectFinding, ...]
    holes: tuple[HoleMeasurement, ...]
    deviation: np.ndarray = field(repr=False)
    curvature: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    noise_sigma: float = 0.0
    spacing: float = 0.0

    @property
    def ok(self) -> bool:
        """No defect found."""
        return not self.defects

    def of_type(self, *types: str) -> tuple[DefectFinding, ...]:
        return tuple(d for d in self.defects if d.type in types)

    def point_mask(self, *types: str) -> np.ndarray:
        """``(N,)`` bool: points belonging to a defect (of the given types, or any)."""
        mask = self.labels >= 0
        if types:
            keep = np.array([d.type in types for d in self.defects] + [False])
            mask &= keep[self.labels]
        return mask

    def as_dict(self) -> dict:
        return {"defects": [d.as_dict() for d in self.defects], "holes": [h.as_dict() for h in self.holes],
                "noise_sigma": float(self.noise_sigma), "spacing": float(self.spacing)}


def _plain(obj):
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
