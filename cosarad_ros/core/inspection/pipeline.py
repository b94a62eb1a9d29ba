"""The inspection sequence, independent of how each stage is carried out.

``plan views -> move -> scan (per view) -> fuse -> classify -> register to the reference ->
detect``, every stage timed, any failure ending the inspection as INCONCLUSIVE with the stage's
reason (never a PASS). The ``inspection_manager`` node implements :class:`Cell` with ROS service
calls; tests and notebooks can implement it with core objects directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from cosarad_ros.core.geometry import as_points
from cosarad_ros.core.inspection.fusion import part_envelope
from cosarad_ros.core.inspection.outcome import (
    FAIL,
    INCONCLUSIVE,
    InspectionOutcome,
    StageClock,
    StageFailed,
    decide_verdict,
)

__all__ = ["Cell", "ViewScan", "Registered", "Detected", "Classified", "InspectionRun", "in_part_frame",
           "run_inspection"]


@dataclass(frozen=True)
class ViewScan:
    """One scan: ``points`` ``(N, 3)`` in the sensor optical frame, ``sensor_pose`` ``(4, 4)``
    optical -> world.
    """

    points: np.ndarray
    sensor_pose: np.ndarray


@dataclass(frozen=True)
class Classified:
    """The part type named from the survey scan.

    Attributes:
        label: CAD label, ``"unknown"`` when nothing matched.
        score: similarity in percent.
        quality: ISO 25012 quality of the survey scan against the model.
        transform: ``(4, 4)`` survey scan (part frame) -> the frame of ``reference_label``'s
            model, or None: it seeds the inspection's registration when that model is the part
            type inspected.
        reference_label: the model ``transform`` refers to ("" if none).
        box_match: with label ``"unknown"``, the model whose box the scan fits although its
            shape deviates ("" otherwise): the part is inspected as that type, and only a FAIL
            stands (a would-be PASS is INCONCLUSIVE: the type was never confirmed).
        reason: why the label is ``"unknown"``.
    """

    label: str
    score: float
    quality: dict = field(default_factory=dict)
    transform: np.ndarray | None = None
    reference_label: str = ""
    box_match: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Registered:
    """The fused cloud registered onto the part type's reference."""

    ok: bool
    reason: str
    points: np.ndarray          # (N, 3) in the CAD model's frame
    transform: np.ndarray       # (4, 4) part frame (the fused cloud's) -> CAD model frame
    fitness: float
    rmse: float


@dataclass(frozen=True)
class Detected:
    outcome: InspectionOutcome
    points: np.ndarray          # (N, 3) the frame of the cloud given to detect
    point_scores: np.ndarray    # (N,)


def _unconfirmed(outcome: InspectionOutcome, classified: Classified) -> InspectionOutcome:
    """The outcome of a part inspected as the type whose box it fits (``classified.box_match``)
    although the classifier found its shape deviating: a FAIL names that; anything else is
    INCONCLUSIVE, since the part type was never confirmed.
    """
    why = classified.reason or "its shape does not match the model"
    if outcome.verdict == FAIL:
        return replace(outcome, reason=f"shape deviates from {classified.box_match} ({why}); {outcome.reason}")
    return replace(outcome, verdict=INCONCLUSIVE,
                   reason=f"part type not confirmed: {why}; no defect found against {classified.box_match} -- "
                          "check the part, or add its CAD model to the library if it is a new type")


def in_part_frame(det: Detected, transform: np.ndarray) -> Detected:
    """``det`` (scored in the CAD model's frame) moved back into the part frame by the inverse of
    the registration ``transform`` (4, 4): the scored cloud and every defect are reported where
    they are on the part on the fixture. On a part that is symmetric but for small features the
    model frame can be a turned copy of the part frame, so only the part frame tells the
    operator where to look.
    """
    T = np.asarray(transform, dtype=np.float64)
    if T.shape != (4, 4) or np.allclose(T, np.eye(4)):
        return det
    inv = np.linalg.inv(T)
    R, t = inv[:3, :3], inv[:3, 3]
    pts = None if det.points is None else np.asarray(det.points, dtype=np.float64) @ R.T + t
    defects = tuple(replace(d, centroid=tuple(float(v) for v in R @ np.asarray(d.centroid) + t),
                            extent=tuple(float(v) for v in np.abs(R) @ np.asarray(d.extent)))
                    for d in det.outcome.defects)
    return replace(det, outcome=replace(det.outcome, defects=defects), points=pts)


class Cell(Protocol):
    """What an inspection cell must offer (arm, sensor, and the analysis services)."""

    def plan(self, part_type: str, envelope: tuple | None = None) -> int:
        """Plan views and return their number: of the part type's CAD model; with an empty part
        type, of ``envelope`` (``(lo (3,), hi (3,))`` box in the part frame, survey views of a
        part of unknown type), or, without one, views from above that locate whatever lies on the
        fixture.
        """

    def move(self, index: int) -> np.ndarray:
        """Move to view ``index``; return the sensor pose reached ``(4, 4)``."""

    def scan(self, sensor_pose: np.ndarray) -> ViewScan: ...

    def fuse(self, scans: list[ViewScan]) -> np.ndarray:
        """Merge scans into one ``(N, 3)`` cloud of the part, in the part frame."""

    def classify(self, points: np.ndarray) -> Classified: ...

    def register(self, points: np.ndarray, part_type: str, init: np.ndarray | None = None) -> Registered:
        """Register the fused cloud (part frame) onto the part type's reference, from the
        nominal pose and, when given, ``init`` (the classifier's pose).
        """

    def detect(self, points: np.ndarray, part_type: str, part_id: str) -> Detected: ...


@dataclass(frozen=True)
class InspectionRun:
    """Result of :func:`run_inspection`: the outcome, the stage records and the arrays."""

    outcome: InspectionOutcome
    clock: StageClock
    points: np.ndarray | None = None
    point_scores: np.ndarray | None = None
    classified: Classified | None = None
    registered: Registered | None = None
    fused: np.ndarray | None = None


def run_inspection(cell: Cell, *, part_id: str, part_type: str = "", min_fitness: float = 0.5, min_points: int = 200,
                   progress=None) -> InspectionRun:
    """Run one inspection through ``cell``.

    Args:
        cell: the stages.
        part_id: caller's id for this part.
        part_type: CAD label; empty: locate the part from above (``cell.plan("")``), survey
            its envelope (``cell.plan("", envelope)``), classify the fused survey (``unknown`` ->
            INCONCLUSIVE), then inspect as that type.
        min_fitness: registrations with lower fitness give INCONCLUSIVE.
        min_points: a fused cloud with fewer points gives INCONCLUSIVE.
        progress: optional ``callback(stage: str, fraction: float)``.

    Returns:
        :class:`InspectionRun`; its outcome's verdict is PASS, FAIL or INCONCLUSIVE (never raises
        for a stage failure).
    """
    clock = StageClock()
    report = progress or (lambda stage, frac: None)
    classified = registered = fused = None

    def acquire(plan_for: str, lo: float, hi: float, *, envelope=None, earlier=()) -> tuple[np.ndarray, list]:
        """Plan -> (move, scan) per view -> fuse (with the ``earlier`` scans); returns the fused
        cloud (part frame) and this acquisition's scans.
        """
        report("plan", lo)
        with clock.stage("plan"):
            n_views = int(cell.plan(plan_for, envelope) if envelope is not None else cell.plan(plan_for))
            if n_views <= 0:
                raise StageFailed("plan", "the planner returned no views")
        scans: list[ViewScan] = []
        for k in range(n_views):
            report("move", lo + (hi - lo) * 0.9 * k / n_views)
            with clock.stage("move"):
                pose = cell.move(k)
            report("scan", lo + (hi - lo) * 0.9 * (k + 0.5) / n_views)
            with clock.stage("scan"):
                scans.append(cell.scan(pose))
        report("fuse", lo + (hi - lo) * 0.95)
        with clock.stage("fuse"):
            fused = cell.fuse(list(earlier) + scans)
            if len(fused) < min_points:
                raise StageFailed("fuse", f"fused cloud has {len(fused)} points (< {min_points}): "
                                          "the part is not where the sensor looked")
            return as_points(fused, name="fused cloud"), scans

    try:
        if not part_type:
            # locate what lies on the fixture from above, then survey views planned for its
            # envelope (thin, low and off-centre parts included), then classify all of it
            located, first = acquire("", 0.0, 0.1)
            box = part_envelope(located)
            fused, _ = acquire("", 0.1, 0.3, envelope=box, earlier=first)
            report("classify", 0.3)
            with clock.stage("classify"):
                classified = cell.classify(fused)
                if classified.label in ("", "unknown") and not classified.box_match:
                    raise StageFailed("classify", "part type unknown: no CAD model matches the scan (add the "
                                                  "part's CAD model to the library, or check the part)")
                part_type = classified.label if classified.label not in ("", "unknown") else classified.box_match
        fused, _ = acquire(part_type, 0.35 if classified else 0.0, 0.75)
        report("register", 0.8)
        with clock.stage("register"):
            posed = classified is not None and classified.reference_label == part_type
            registered = cell.register(fused, part_type, classified.transform if posed else None)
            if not registered.ok:
                raise StageFailed("register", registered.reason or "registration failed")
            if registered.fitness < min_fitness:
                raise StageFailed("register", f"fitness {registered.fitness:.2f} below the minimum {min_fitness:.2f}: "
                                              "scores would not be comparable")
        report("detect", 0.9)
        with clock.stage("detect"):
            det = in_part_frame(cell.detect(registered.points, part_type, part_id), registered.transform)
        # fitness, coverage and data quality as the detection measured them on the inspection scan;
        # the registration's where the detector did not measure them
        o = det.outcome
        fitness = o.registration_fitness if np.isfinite(o.registration_fitness) else registered.fitness
        quality = dict(o.quality) if o.quality else (dict(classified.quality) if classified else {})
        outcome = replace(o, part_id=part_id, part_type=part_type, stage_seconds=clock.totals(),
                          registration_fitness=fitness, registration_rmse=registered.rmse, quality=quality)
        if classified is not None and classified.label != part_type:
            outcome = _unconfirmed(outcome, classified)
        return InspectionRun(outcome, clock, det.points, det.point_scores, classified, registered, fused)
    except StageFailed:
        failed = next(r for r in reversed(clock.records) if not r.ok)  # the clock recorded the failure
        verdict, reason = decide_verdict(failed_stage=failed)
        outcome = InspectionOutcome(part_id=part_id, part_type=part_type, verdict=verdict, reason=reason,
                                    object_score=float("nan"), threshold=float("nan"),
                                    stage_seconds=clock.totals(),
                                    registration_fitness=registered.fitness if registered else float("nan"),
                                    registration_rmse=registered.rmse if registered else float("nan"),
                                    quality=dict(classified.quality) if classified else {})
        return InspectionRun(outcome, clock, None, None, classified, registered, fused)
