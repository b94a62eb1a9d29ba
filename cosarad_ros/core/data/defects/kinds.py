"""The defect kinds (:data:`DEFECT_TYPES`, :data:`CAD_DEFECT_TYPES`) and their default size ranges
(:data:`SIZE_RANGES_MM`).
"""
from __future__ import annotations

DEFECT_TYPES = ("bulge", "sink", "scratch", "crack", "hole", "bend", "broken")
CAD_DEFECT_TYPES = ("hole_position", "hole_diameter")
ALL_DEFECT_TYPES = DEFECT_TYPES + CAD_DEFECT_TYPES

_MM = 1e-3

# (low, high) in millimetres (degrees for angle_deg); "log" marks log-uniform draws.
SIZE_RANGES_MM: dict[str, dict[str, tuple]] = {
    "bulge": {"diameter": (5.0, 25.0), "height": (0.2, 2.0, "log")},
    "sink": {"diameter": (5.0, 25.0), "depth": (0.2, 2.0, "log")},
    "scratch": {"length": (5.0, 50.0), "width": (0.5, 2.0), "depth": (0.1, 2.0, "log")},
    "crack": {"length": (5.0, 30.0), "width": (0.3, 1.0), "depth": (1.0, 5.0)},
    "hole": {"diameter": (2.0, 10.0), "depth": (1.0, 5.0)},
    "bend": {"angle_deg": (1.0, 5.0), "zone": (2.0, 6.0)},
    "broken": {"radius": (3.0, 12.0)},
    "hole_position": {"offset": (0.8, 2.0)},
    "hole_diameter": {"change": (0.6, 2.0)},
}

_LENGTH_KEYS = {"diameter", "length", "radius"}
