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

from .apply import DEFECT_MODELS, apply_defect, apply_defect_to_mesh
from .base import DefectModel, DisplacementDefect, RegionDefect
from .helpers import refine_mesh_near
from .kinds import ALL_DEFECT_TYPES, CAD_DEFECT_TYPES, DEFECT_TYPES, SIZE_RANGES_MM
from .records import DefectRecord, DefectResult

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
