"""One inspection as data: stage timings, the verdict rule, and the report files.

The ``inspection_manager`` node and the offline demo both use this module, so the rule that
turns stage outcomes into PASS / FAIL / INCONCLUSIVE lives in exactly one place:

* any stage that failed -> ``INCONCLUSIVE`` with that stage's reason (never a PASS);
* registration accepted but with fitness below ``min_fitness`` -> ``INCONCLUSIVE`` (the scan is
  not on the part: scores would not be comparable);
* object score above the threshold, or any defect found -> ``FAIL``;
* a would-be PASS on data that cannot vouch for the part -> ``INCONCLUSIVE`` with what to do:
  the scan measured less than ``min_coverage`` of the surface the planned views should measure,
  or its ISO 25012 data quality is below ``min_quality``;
* otherwise ``PASS``.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

__all__ = [
    "PASS", "FAIL", "INCONCLUSIVE", "VERDICTS", "StageRecord", "StageFailed", "StageClock",
    "DefectSummary", "InspectionOutcome", "decide_verdict", "summary_table", "write_results_json",
]

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)  # index == InspectionResult.VERDICT_* constant

STAGES = ("plan", "move", "scan", "fuse", "classify", "register", "detect", "publish")


class StageFailed(RuntimeError):
    """Raised inside a :class:`StageClock` stage to end the inspection as INCONCLUSIVE."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason


@dataclass(frozen=True)
class StageRecord:
    """Wall-clock seconds of one stage, and whether it succeeded."""

    stage: str
    seconds: float
    ok: bool = True
    message: str = ""


class StageClock:
    """Times named stages; a stage that raises is recorded as failed and re-raised as
    :class:`StageFailed` (so the caller's single ``except StageFailed`` decides the verdict).

    ``simulated`` stages (motion of a simulated arm) are timed but excluded from
    :attr:`compute_seconds`.
    """

    def __init__(self, clock=time.perf_counter):
        self._clock = clock
        self.records: list[StageRecord] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = self._clock()
        try:
            yield
        except StageFailed as exc:
            self.records.append(StageRecord(name, self._clock() - t0, False, exc.reason))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reason
            reason = str(exc) or type(exc).__name__
            self.records.append(StageRecord(name, self._clock() - t0, False, reason))
            raise StageFailed(name, reason) from exc
        self.records.append(StageRecord(name, self._clock() - t0, True, ""))

    def seconds(self, name: str) -> float:
        """Total seconds spent in stage ``name`` (stages may repeat, e.g. move/scan per view)."""
        return float(sum(r.seconds for r in self.records if r.stage == name))

    def totals(self) -> dict[str, float]:
        """Seconds per stage name, in first-seen order."""
        out: dict[str, float] = {}
        for r in self.records:
            out[r.stage] = out.get(r.stage, 0.0) + r.seconds
        return out

    def compute_seconds(self, exclude: Sequence[str] = ("move",)) -> float:
        """Seconds of every stage except ``exclude`` (simulated motion by default)."""
        return float(sum(r.seconds for r in self.records if r.stage not in exclude))


@dataclass(frozen=True)
class DefectSummary:
    """A defect as reported (metres, part frame)."""

    type: str
    centroid: tuple[float, float, float]
    extent: tuple[float, float, float]
    score: float
    point_count: int


@dataclass(frozen=True)
class InspectionOutcome:
    """Everything one inspection decided, ready for ``results.json`` and the ROS message."""

    part_id: str
    part_type: str
    verdict: str
    reason: str
    object_score: float
    threshold: float
    defects: tuple[DefectSummary, ...] = ()
    stage_seconds: dict = field(default_factory=dict)
    registration_fitness: float = float("nan")
    registration_rmse: float = float("nan")
    quality: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    coverage: float = float("nan")

    def to_json(self) -> dict:
        d = asdict(self)
        d["defects"] = [asdict(x) for x in self.defects]
        return _jsonable(d)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def decide_verdict(*, failed_stage: StageRecord | None = None, object_score: float | None = None,
                   threshold: float | None = None, n_defects: int = 0,
                   registration_fitness: float | None = None, min_fitness: float = 0.0,
                   coverage: float | None = None, min_coverage: float = 0.0,
                   quality_total: float | None = None, min_quality: float = 0.0) -> tuple[str, str]:
    """The verdict rule (see the module docstring).

    Args:
        failed_stage: the stage that failed, if any.
        object_score, threshold: the detector's object score and its threshold.
        n_defects: defect regions found.
        registration_fitness, min_fitness: share of the scan on the part's surface, and its minimum.
        coverage, min_coverage: share of the planned surface the scan measured, and its minimum.
        quality_total, min_quality: ISO 25012 total of the scan, and its minimum.

    Returns:
        ``(verdict, reason)``; ``reason`` is non-empty for FAIL and INCONCLUSIVE.

    Raises:
        ValueError: no failed stage but no score/threshold either (nothing to decide on).
    """
    if failed_stage is not None:
        return INCONCLUSIVE, f"stage '{failed_stage.stage}' failed: {failed_stage.message}"
    if object_score is None or threshold is None:
        raise ValueError("decide_verdict needs object_score and threshold when no stage failed")
    if not np.isfinite(object_score):
        return INCONCLUSIVE, "object score is not finite"
    if registration_fitness is not None and not registration_fitness >= min_fitness:
        return INCONCLUSIVE, (f"only {100 * registration_fitness:.0f} % of the scan lies on the part's surface "
                              f"(minimum {100 * min_fitness:.0f} %): wrong part type, part not on the fixture, "
                              "or a scan in the wrong unit")
    if object_score > threshold or n_defects > 0:
        parts = []
        if object_score > threshold:
            parts.append(f"object score {object_score:.3g} > threshold {threshold:.3g}")
        if n_defects:
            parts.append(f"{n_defects} defect region(s)")
        return FAIL, "; ".join(parts)
    if coverage is not None and not coverage >= min_coverage:
        return INCONCLUSIVE, (f"the scan measured {100 * coverage:.0f} % of the surface the planned views should "
                              f"see (minimum {100 * min_coverage:.0f} %): check the part's placement and the "
                              "sensor's view (dirt, reflections), then scan again")
    if quality_total is not None and not quality_total >= min_quality:
        return INCONCLUSIVE, (f"scan data quality {quality_total:.2f} below the minimum {min_quality:.2f} "
                              "(ISO 25012): check the sensor's calibration and exposure, then scan again")
    return PASS, ""


def summary_table(outcomes: Sequence[InspectionOutcome], stages: Sequence[str] = STAGES) -> str:
    """A fixed-width table: part, type, verdict, score, defects, seconds per stage."""
    shown = [s for s in stages if any(s in o.stage_seconds for o in outcomes)]
    head = f"{'part':<18}{'type':<16}{'verdict':<14}{'score':>8}{'thr':>8}{'defects':>8}" + "".join(
        f"{s:>9}" for s in shown)
    lines = [head, "-" * len(head)]
    for o in outcomes:
        row = (f"{o.part_id[:17]:<18}{o.part_type[:15]:<16}{o.verdict:<14}"
               f"{_fmt(o.object_score):>8}{_fmt(o.threshold):>8}{len(o.defects):>8}")
        row += "".join(f"{o.stage_seconds.get(s, float('nan')):>9.2f}" if s in o.stage_seconds else f"{'-':>9}"
                       for s in shown)
        lines.append(row)
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.3g}"


def write_results_json(path: str | Path, outcomes: Sequence[InspectionOutcome], **meta) -> Path:
    """Write ``results.json``: ``{"parts": [<one entry per part, with "verdict">], **meta}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"parts": [o.to_json() for o in outcomes], **_jsonable(meta)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)  # never leave a half-written report behind
    return path
