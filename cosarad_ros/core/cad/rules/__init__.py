"""Rule-based defect checks of a scan against its CAD model (Kwon et al., Electronics 2025, sec. 3.7).

The scan must already be in the model frame (e.g. ``ClassificationResult.transform`` applied, or
any registration). Every scan point gets a signed deviation from the CAD surface (negative inside
the material) and a surface variation ``lambda3 / (lambda1 + lambda2 + lambda3)`` of its ``k``
nearest neighbours (Pauly et al., "Efficient simplification of point-sampled surfaces", IEEE Vis
2002). Three rules, each a small class chosen by name in :class:`RuleBasedInspector`:

* :class:`ScratchRule` - points deviating more than ``depth_threshold`` (paper: 2 mm) whose surface
  variation exceeds ``curvature_threshold`` (k = 50 in the paper), clustered with DBSCAN; beyond
  the paper a cluster must also be elongated (a scratch is long and narrow) to be called one.
* :class:`DentRule` - deviation normalised by the robust noise level (``|d| / sigma``, sigma from
  the median absolute deviation) above ``z_threshold`` and ``min_depth``, clustered with DBSCAN
  (Ester et al., KDD 1996; MinPts = 10 as in the paper); inward clusters are ``dent``, outward
  ones ``bulge``.
* :class:`HoleRule` - every nominal hole of the model's metadata: the points around the hole's
  entry face are projected onto the plane normal to its axis, the 2D alpha-shape boundary
  (Edelsbrunner et al., IEEE Trans. Inf. Theory 29(4), 1983) nearest the nominal centre is fitted
  with a circle (algebraic fit, Kasa, IEEE Trans. Instrum. Meas. 1976, refined by Gauss-Newton on
  the geometric distance), refined on the visible hole wall when there is one, and the hole is
  defective when its centre is off by more than ``position_tolerance`` (paper: 0.6 mm) or its
  diameter by more than ``diameter_tolerance`` (paper: 0.5 mm); a hole whose area is covered by
  material is ``missing``.

All thresholds are parameters in metres; the defaults are the paper's values.
"""
from __future__ import annotations

from .blocks import alpha_boundary, dbscan, fit_circle, fit_circle_robust, surface_variation
from .context import InspectionContext, Rule
from .dent import DentRule
from .hole import HoleRule
from .inspector import RULES, RuleBasedInspector, detect_defects, hole_allowances
from .results import HOLE_DEFECT_TYPES, DefectFinding, DefectReport, HoleAllowance, HoleMeasurement
from .scratch import ScratchRule

__all__ = [
    "DefectFinding",
    "HoleMeasurement",
    "HoleAllowance",
    "DefectReport",
    "InspectionContext",
    "Rule",
    "ScratchRule",
    "DentRule",
    "HoleRule",
    "RULES",
    "RuleBasedInspector",
    "detect_defects",
    "hole_allowances",
    "surface_variation",
    "dbscan",
    "fit_circle",
    "fit_circle_robust",
    "alpha_boundary",
    "HOLE_DEFECT_TYPES",
]
