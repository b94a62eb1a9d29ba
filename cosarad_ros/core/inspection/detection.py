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

import inspect
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from cosarad_ros.core.geometry import as_points
from cosarad_ros.core.inspection.outcome import DefectSummary, InspectionOutcome, decide_verdict

__all__ = ["TemplateSource", "FolderTemplates", "CadTemplates", "PartInspector", "DetectionReport", "make_inspector"]

CLOUD_SUFFIXES = (".pcd", ".ply", ".xyz", ".txt", ".pts")
#: a registered scan point within this distance of the part's surface counts as on it [m]
ON_SURFACE = 1e-3
#: the rule-based checks as the cell runs them: the paper's hole tolerances, each hole measured
#: net of the bias and widened by the spread that good scans of the part show
#: (:func:`~cosarad_ros.core.cad.rules.hole_allowances`) -- so a hole rim between points up to
#: 1.5 mm apart (two fusion voxels) is judged too, its reading-wide bias being the cell's, not the
#: part's; dents and scratches from 1 mm deep (shallower ones are the deviation banks' work, which
#: know each location's noise; the rules' global noise estimate false-alarms on complex parts
#: below that)
CELL_RULES = {"hole": {"max_spacing": 1.5e-3}, "dent": {"min_depth": 1e-3}, "scratch": {"depth_threshold": 1e-3}}


class TemplateSource(Protocol):
    """Where good templates of a part type come from (and its CAD model, when there is one)."""

    def has(self, part_type: str) -> bool: ...

    def templates(self, part_type: str) -> list[np.ndarray]: ...

    def mesh(self, part_type: str):
        """The part type's CAD mesh (trimesh, metres, part frame), or None."""

    def model(self, part_type: str):
        """The part type's :class:`~cosarad_ros.core.cad.library.CadModel`, or None."""


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

    def mesh(self, part_type: str):
        return None

    def model(self, part_type: str):
        return None


@dataclass(frozen=True)
class CadTemplates:
    """Templates simulated from CAD: ``model_for(part_type) -> CadModel | None`` (the library's
    model: mesh, holes, tolerances) and ``make_templates(mesh, n, seed) -> list[(N, 3)]``.
    """

    model_for: Callable[[str], object]
    make_templates: Callable[[object, int, int], list]
    n_templates: int = 4
    seed: int = 0

    def has(self, part_type: str) -> bool:
        return self.model_for(part_type) is not None

    def templates(self, part_type: str) -> list[np.ndarray]:
        model = self.model_for(part_type)
        if model is None:
            raise ValueError(f"no CAD model for part type '{part_type}'")
        return list(self.make_templates(model.mesh, self.n_templates, self.seed))

    def mesh(self, part_type: str):
        model = self.model_for(part_type)
        return None if model is None else model.mesh

    def model(self, part_type: str):
        return self.model_for(part_type)


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
        min_fitness: a scan with a smaller share of its points on the part's surface (within
            :data:`ON_SURFACE` of the CAD model, or of the reference template without one) is
            INCONCLUSIVE: it did not register onto the part.
        min_coverage: a would-be PASS whose scan covered a smaller share of the surface the good
            templates (simulated through the planned views) measured is INCONCLUSIVE.
        min_quality: a would-be PASS whose ISO 25012 total (against the reference template) is
            lower is INCONCLUSIVE.
        rules: run the rule-based checks of the hybrid inspection (Kwon et al., Electronics 2025:
            scratch, dent, hole position and diameter against the CAD model and its hole
            metadata; :class:`~cosarad_ros.core.cad.rules.RuleBasedInspector`) on the registered
            scan where the part type has a CAD model; their findings are typed defects and count
            toward the verdict. ``None``: the rules' defaults; a sequence or mapping selects and
            configures them; ``()``: off.
    """

    def __init__(self, detector, sources: Sequence[TemplateSource] = (), *, cache_dir: str | None = None,
                 min_points: int = 100, min_fitness: float = 0.5, min_coverage: float = 0.85,
                 min_quality: float = 0.0, rules=None):
        for name, v in (("min_fitness", min_fitness), ("min_coverage", min_coverage), ("min_quality", min_quality)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        self.detector = detector
        self.sources = list(sources)
        self.cache_dir = cache_dir
        self.min_points = int(min_points)
        self.min_fitness, self.min_coverage, self.min_quality = (float(min_fitness), float(min_coverage),
                                                                 float(min_quality))
        self.rules = None
        if rules is None or len(rules):
            from cosarad_ros.core.cad.rules import RuleBasedInspector

            self.rules = RuleBasedInspector(CELL_RULES if rules is None else rules)
        self._hole_allowances: dict = {}
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
                    kwargs = {}
                    mesh = src.mesh(part_type)
                    params = inspect.signature(self.detector.fit).parameters
                    if mesh is not None and "mesh" in params:
                        kwargs["mesh"] = mesh  # detectors that measure against the CAD model
                    elif mesh is not None and "aligned" in params:
                        kwargs["aligned"] = True  # templates simulated in the part (CAD) frame
                    self.detector.fit(part_type, src.templates(part_type), cache_dir=self.cache_dir, **kwargs)
                    return
        raise ValueError(f"unknown part type '{part_type}': no templates or CAD model for it")

    def prepare(self, part_type: str) -> None:
        """Everything the first inspection of ``part_type`` would otherwise do first: fit its memory
        banks (:meth:`ensure`) and measure how the cell reads its holes (the hole rule's
        allowances, from the good templates), so the first part is judged as fast as a repeat.

        Raises:
            ValueError: unknown part type.
        """
        self.ensure(part_type)
        self._allowances(part_type)

    def _allowances(self, part_type: str):
        """``(CadModel, hole allowances)`` of ``part_type`` for the rules, or ``(None, None)``
        without rules or a CAD model; the allowances are measured once per part type.
        """
        if self.rules is None:
            return None, None
        src = next((s for s in self.sources if s.has(part_type) and s.model(part_type) is not None), None)
        if src is None:
            return None, None
        model = src.model(part_type)
        with self._lock:
            allowances = self._hole_allowances.get(part_type)
            if allowances is None and model.holes:
                from cosarad_ros.core.cad.rules import hole_allowances

                allowances = self._hole_allowances[part_type] = hole_allowances(
                    self.rules, src.templates(part_type), model)
        return model, allowances

    def _fitness(self, bank, reg: np.ndarray) -> float:
        """Share of the registered scan ``reg`` on the part's surface."""
        surface = getattr(bank, "surface", None)
        if surface is not None:
            return float((surface.distance(reg) <= ON_SURFACE).mean())
        from scipy.spatial import cKDTree

        ref = np.asarray(bank.reference, dtype=np.float64)
        tree = cKDTree(ref)
        spacing = float(np.median(tree.query(ref[:: max(1, len(ref) // 2000)], k=2)[0][:, 1]))
        return float((tree.query(reg, k=1)[0] <= max(ON_SURFACE, 3.0 * spacing)).mean())

    def _rule_defects(self, reg: np.ndarray, part_type: str) -> tuple[DefectSummary, ...]:
        """Findings of the rule-based checks on the registered scan (scores in millimetres of
        deviation, as the rules report them).
        """
        model, allowances = self._allowances(part_type)
        if model is None:
            return ()
        report = self.rules.inspect(reg, model, allowances=allowances)
        return tuple(DefectSummary(f.type, tuple(map(float, f.centroid)), tuple(map(float, f.extent)),
                                   float(f.score) * 1e3, int(f.point_count)) for f in report.defects)

    def inspect(self, points, part_type: str, *, part_id: str = "", registered: bool = False) -> DetectionReport:
        """Score a scan of ``part_type`` (metres; any frame, or already registered onto the part
        type's reference with ``registered=True``, when the detector does not register again).

        The outcome's ``registration_fitness``, ``coverage`` and ``quality`` are measured on this
        scan, and the verdict rule (:func:`~.outcome.decide_verdict`) applies the minima.

        Raises:
            ValueError: empty / non-finite / too small scan, unknown part type.
        """
        from cosarad_ros.core.cad.quality import quality_report
        from cosarad_ros.core.geometry import transform_points

        pts = as_points(points, name="scan", min_points=self.min_points)
        self.ensure(part_type)
        s = self.detector.score(pts, part_type, register=False) if registered else self.detector.score(pts, part_type)
        reg = transform_points(s.transform, pts)
        bank = self.detector.part_bank(part_type)
        fitness = self._fitness(bank, reg)
        quality = quality_report(reg, np.asarray(bank.reference, dtype=np.float64)).as_dict()
        defects = tuple(
            DefectSummary(getattr(d, "kind", "anomaly"), tuple(map(float, d.centroid)), tuple(map(float, d.extent)),
                          float(d.score), int(d.point_count)) for d in s.defects)
        defects += self._rule_defects(reg, part_type)
        verdict, reason = decide_verdict(object_score=float(s.object_score), threshold=float(s.threshold),
                                         n_defects=len(defects), registration_fitness=fitness,
                                         min_fitness=self.min_fitness, coverage=float(s.coverage),
                                         min_coverage=self.min_coverage, quality_total=float(quality["total"]),
                                         min_quality=self.min_quality)
        outcome = InspectionOutcome(part_id=part_id, part_type=part_type, verdict=verdict, reason=reason,
                                    object_score=float(s.object_score), threshold=float(s.threshold),
                                    defects=defects, registration_fitness=fitness, quality=quality,
                                    coverage=float(s.coverage), extra={"chamfer": float(s.chamfer)})
        return DetectionReport(outcome, reg, np.asarray(s.point_scores), np.asarray(s.transform))


def make_inspector(*, method: str = "deviation", cad_library: str = "", template_dir: str = "",
                   n_templates: int = 3, cache_dir: str | None = None, detector: dict | None = None,
                   min_points: int = 200, min_fitness: float = 0.5, min_coverage: float = 0.85,
                   min_quality: float = 0.0) -> PartInspector:
    """The part inspector of a cell: the ``anomaly_node`` builds it from its parameters, the
    in-process cell from the same values, so both judge a part alike.

    Args:
        method: detector (``deviation``, ``cosarad``, ``fpfh``, ``global-bank``).
        cad_library: CAD library folder; part types without template scans get templates
            simulated from their CAD model (and the deviation banks measure against it).
        template_dir: folder of good scans ``<template_dir>/<part_type>/*``.
        n_templates: templates simulated per part type.
        cache_dir: memory-bank cache (None: none).
        detector: further detector options (constructor arguments of the method's class).
        min_points, min_fitness, min_coverage, min_quality: see :class:`PartInspector`.

    Raises:
        ValueError: unknown method or option, bad minima.
    """
    from cosarad_ros.core.anomaly import make_detector

    det = make_detector({"method": method, **(detector or {})})
    sources: list = []
    if template_dir:
        sources.append(FolderTemplates(template_dir))
    if cad_library:
        from cosarad_ros.core.inspection.templates import cad_template_source

        sources.append(cad_template_source(cad_library, n_templates=n_templates, cache_dir=cache_dir))
    return PartInspector(det, sources, cache_dir=cache_dir, min_points=min_points, min_fitness=min_fitness,
                         min_coverage=min_coverage, min_quality=min_quality)
