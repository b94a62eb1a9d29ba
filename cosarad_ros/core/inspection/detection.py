"""Part-level anomaly inspection: an :class:`~cosarad_ros.core.anomaly.AnomalyDetector` plus
where each part type's good templates come from, turned into an
:class:`~cosarad_ros.core.inspection.InspectionOutcome`.

Template sources (tried in order for a part type the detector has not seen yet):

* :class:`FolderTemplates` -- scans of good parts: ``ROOT/<part_type>/*.{pcd,ply,xyz,txt}``.
* :class:`CadTemplates` -- simulated scans of the part's CAD model (so a new part type needs only
  its CAD file), made by a callable ``make_templates(mesh, n, seed) -> list[(N, 3)]``.

This is the object the ``anomaly_node`` holds; the node only converts messages.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from cosarad_ros.core.geometry import as_points
from cosarad_ros.core.inspection.outcome import (DefectSummary, InspectionOutcome, decide_verdict)

__all__ = ["TemplateSource", "FolderTemplates", "CadTemplates", "PartInspector", "DetectionReport"]

CLOUD_SUFFIXES = (".pcd", ".ply", ".xyz", ".txt", ".pts")


class TemplateSource(Protocol):
    """Where good templates of a part type come from."""

    def has(self, part_type: str) -> bool: ...

    def templates(self, part_type: str) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class FolderTemplates:
    """Templates stored as files: ``root/<part_type>/*.{pcd,ply,xyz,txt,pts}`` (metres)."""

    root: str

    def _files(self, part_type: str) -> list[Path]:
        d = Path(self.root) / part_type
        return sorted(p for p in d.glob("*") if p.suffix.lower() in CLOUD_SUFFIXES) if d.is_dir() else []

    def has(self, part_type: str) -> bool:
        return bool(self._files(part_type))

    def templates(self, part_type: str) -> list[np.ndarray]:
        from cosarad_ros.core.io import read_points

        files = self._files(part_type)
        if not files:
            raise ValueError(f"no template files for part type '{part_type}' in {Path(self.root) / part_type}")
        return [read_points(f) for f in files]


@dataclass(frozen=True)
class CadTemplates:
    """Templates simulated from CAD: ``mesh_for(part_type) -> trimesh | None`` and
    ``make_templates(mesh, n, seed) -> list[(N, 3)]``."""

    mesh_for: Callable[[str], object]
    make_templates: Callable[[object, int, int], list]
    n_templates: int = 4
    seed: int = 0

    def has(self, part_type: str) -> bool:
        return self.mesh_for(part_type) is not None

    def templates(self, part_type: str) -> list[np.ndarray]:
        mesh = self.mesh_for(part_type)
        if mesh is None:
            raise ValueError(f"no CAD model for part type '{part_type}'")
        return list(self.make_templates(mesh, self.n_templates, self.seed))


@dataclass(frozen=True)
class DetectionReport:
    """What one detection produced: the outcome plus the arrays behind it.

    Attributes:
        outcome: verdict, scores, defects (part frame, metres).
        points: ``(N, 3)`` scan points in the template (part) frame.
        point_scores: ``(N,)``.
        transform: ``(4, 4)`` input scan frame -> template frame.
    """

    outcome: InspectionOutcome
    points: np.ndarray
    point_scores: np.ndarray
    transform: np.ndarray


class PartInspector:
    """Score scans of known part types; fit banks lazily from the first source that has them.

    Args:
        detector: an ``AnomalyDetector`` (``fit``, ``has_part``, ``score``).
        sources: template sources, tried in order.
        cache_dir: where the detector caches memory banks (None: no disk cache).
        min_points: scans with fewer points are refused.
    """

    def __init__(self, detector, sources: Sequence[TemplateSource] = (), *, cache_dir: str | None = None,
                 min_points: int = 100):
        self.detector = detector
        self.sources = list(sources)
        self.cache_dir = cache_dir
        self.min_points = int(min_points)
        self._lock = threading.Lock()

    def known(self, part_type: str) -> bool:
        return self.detector.has_part(part_type) or any(s.has(part_type) for s in self.sources)

    def ensure(self, part_type: str) -> None:
        """Fit the memory banks of ``part_type`` if needed.

        Raises:
            ValueError: unknown part type (no source has templates for it).
        """
        if not part_type:
            raise ValueError("part type is empty")
        with self._lock:
            if self.detector.has_part(part_type):
                return
            for src in self.sources:
                if src.has(part_type):
                    self.detector.fit(part_type, src.templates(part_type), cache_dir=self.cache_dir)
                    return
        raise ValueError(f"unknown part type '{part_type}': no templates or CAD model for it")

    def inspect(self, points, part_type: str, *, part_id: str = "") -> DetectionReport:
        """Score a scan (metres, any frame) of ``part_type``.

        Raises:
            ValueError: empty / non-finite / too small scan, unknown part type.
        """
        pts = as_points(points, name="scan", min_points=self.min_points)
        self.ensure(part_type)
        s = self.detector.score(pts, part_type)
        defects = tuple(
            DefectSummary("anomaly", tuple(map(float, d.centroid)), tuple(map(float, d.extent)),
                          float(d.score), int(d.point_count)) for d in s.defects)
        verdict, reason = decide_verdict(object_score=float(s.object_score), threshold=float(s.threshold),
                                         n_defects=len(defects))
        from cosarad_ros.core.geometry import transform_points

        outcome = InspectionOutcome(part_id=part_id, part_type=part_type, verdict=verdict, reason=reason,
                                    object_score=float(s.object_score), threshold=float(s.threshold),
                                    defects=defects, extra={"chamfer": float(s.chamfer)})
        return DetectionReport(outcome, transform_points(s.transform, pts), np.asarray(s.point_scores),
                               np.asarray(s.transform))
