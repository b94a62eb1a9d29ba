"""The inspection sequence and verdict rule (core, no ROS): every stage failure is
INCONCLUSIVE with its reason, never PASS; scores decide PASS / FAIL.
"""
import json

import numpy as np
import pytest

from cosarad_ros.core.inspection.outcome import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    DefectSummary,
    InspectionOutcome,
    StageClock,
    StageFailed,
    decide_verdict,
    summary_table,
    write_results_json,
)
from cosarad_ros.core.inspection.pipeline import Classified, Detected, Registered, ViewScan, run_inspection


class SphereCell:
    """A cell whose sensor sees a 5 cm sphere; stages can be told to fail or to misbehave."""

    def __init__(self, *, fail=None, label="sphere", fitness=0.95, object_score=0.1, threshold=1.0, n_views=3,
                 box_match="", transform=None):
        self.fail, self.label, self.fitness = fail, label, fitness
        self.box_match, self.transform = box_match, np.eye(4) if transform is None else transform
        self.object_score, self.threshold, self.n_views = object_score, threshold, n_views
        self.calls = []
        self.planned = []
        self.envelopes = []
        rng = np.random.default_rng(0)
        v = rng.normal(size=(3000, 3))
        self.sphere = 0.05 * v / np.linalg.norm(v, axis=1, keepdims=True)

    def _maybe_fail(self, stage):
        self.calls.append(stage)
        if self.fail == stage:
            raise RuntimeError(f"{stage} device stopped answering")

    def plan(self, part_type, envelope=None):
        self._maybe_fail("plan")
        self.planned.append(part_type or ("survey" if envelope is not None else "locate"))
        self.envelopes.append(envelope)
        return self.n_views

    def move(self, index):
        self._maybe_fail("move")
        T = np.eye(4)
        T[2, 3] = 0.4
        return T

    def scan(self, pose):
        self._maybe_fail("scan")
        return ViewScan(self.sphere - pose[:3, 3], pose)

    def fuse(self, scans):
        self._maybe_fail("fuse")
        return np.concatenate([s.points + s.sensor_pose[:3, 3] for s in scans])[: len(self.sphere)]

    def classify(self, points):
        self._maybe_fail("classify")
        reason = "box matches sphere but only 80 % of the scan lies within 1 mm of it" if self.box_match else ""
        return Classified(self.label, 97.0, {"total": 0.9, "grade": "A"}, box_match=self.box_match, reason=reason)

    def register(self, points, part_type, init=None):
        self._maybe_fail("register")
        ok = self.fail != "register_not_ok"
        moved = points @ self.transform[:3, :3].T + self.transform[:3, 3]
        return Registered(ok, "" if ok else "clouds of two different parts", moved, self.transform, self.fitness, 1e-4)

    def detect(self, points, part_type, part_id):
        self._maybe_fail("detect")
        defects = (DefectSummary("anomaly", (0.0, 0.0, 0.05), (0.01, 0.01, 0.002), 3.0, 40),) \
            if self.object_score > self.threshold else ()
        v, r = decide_verdict(object_score=self.object_score, threshold=self.threshold, n_defects=len(defects))
        return Detected(InspectionOutcome(part_id, part_type, v, r, self.object_score, self.threshold, defects),
                        points, np.zeros(len(points)))


def cell_plans(run):
    return [r.stage for r in run.clock.records if r.stage == "plan"]


def test_good_part_passes_with_every_stage_timed():
    cell = SphereCell()
    run = run_inspection(cell, part_id="p1", min_points=100)
    assert cell.planned == ["locate", "survey", "sphere"]
    assert run.outcome.verdict == PASS and run.outcome.reason == ""
    assert run.outcome.part_type == "sphere"  # classified, since no type was given
    assert set(run.outcome.stage_seconds) == {"plan", "move", "scan", "fuse", "classify", "register", "detect"}
    # locate (3 views), survey of the located envelope (3 more) to classify, then the type's own 3 views
    assert [r.stage for r in run.clock.records].count("scan") == 9
    assert cell_plans(run) == ["plan", "plan", "plan"]
    lo, hi = cell.envelopes[1]  # the survey covers the located sphere (radius 5 cm) with a margin
    np.testing.assert_allclose(lo[:2], [-0.055, -0.055], atol=2e-3)
    np.testing.assert_allclose(hi, [0.055, 0.055, 0.055], atol=2e-3)
    assert lo[2] == 0.0
    assert run.outcome.quality["grade"] == "A"


def test_defective_part_fails_with_reason():
    run = run_inspection(SphereCell(object_score=4.0), part_id="p2", part_type="sphere", min_points=100)
    assert run.outcome.verdict == FAIL
    assert "object score 4 > threshold 1" in run.outcome.reason and len(run.outcome.defects) == 1
    assert "classify" not in run.outcome.stage_seconds  # the caller named the type


@pytest.mark.parametrize("stage", ["plan", "move", "scan", "fuse", "classify", "register", "detect"])
def test_any_failing_stage_is_inconclusive_never_pass(stage):
    cell = SphereCell(fail=stage, object_score=0.0)
    run = run_inspection(cell, part_id="p3", min_points=100)
    assert run.outcome.verdict == INCONCLUSIVE
    assert run.outcome.reason == f"stage '{stage}' failed: {stage} device stopped answering"
    assert cell.calls[-1] == stage  # nothing ran after the failure
    assert not [r for r in run.clock.records if r.stage == stage][-1].ok


def test_rejected_registration_unknown_part_and_low_fitness_are_inconclusive():
    run = run_inspection(SphereCell(fail="register_not_ok"), part_id="a", part_type="sphere", min_points=100)
    assert run.outcome.verdict == INCONCLUSIVE and "two different parts" in run.outcome.reason
    run = run_inspection(SphereCell(label="unknown"), part_id="b", min_points=100)
    assert run.outcome.verdict == INCONCLUSIVE and "unknown" in run.outcome.reason
    run = run_inspection(SphereCell(fitness=0.2), part_id="c", part_type="sphere", min_points=100)
    assert run.outcome.verdict == INCONCLUSIVE and "fitness 0.20 below the minimum 0.50" in run.outcome.reason


def test_part_that_fits_a_models_box_but_not_its_shape_is_inspected_as_that_type():
    # a bent part: the classifier names no type, but the box fits one; a defect found against it FAILs
    run = run_inspection(SphereCell(label="unknown", box_match="sphere", object_score=4.0), part_id="e",
                         min_points=100)
    assert run.outcome.verdict == FAIL and run.outcome.part_type == "sphere"
    assert run.outcome.reason.startswith("shape deviates from sphere (box matches sphere but only 80 %")
    # no defect found: the type was never confirmed, so no PASS
    run = run_inspection(SphereCell(label="unknown", box_match="sphere"), part_id="f", min_points=100)
    assert run.outcome.verdict == INCONCLUSIVE and run.outcome.reason.startswith("part type not confirmed")


def test_defects_and_scored_cloud_are_reported_in_the_part_frame():
    # the scan registered onto a turned copy of the model (a symmetric part): the defect the
    # detector reports in the model frame is reported back where it is on the fixture
    turn = np.diag([-1.0, -1.0, 1.0, 1.0])
    turn[0, 3] = 0.01
    run = run_inspection(SphereCell(object_score=4.0, transform=turn), part_id="g", part_type="sphere",
                         min_points=100)
    d = run.outcome.defects[0]
    model_centre = np.array([0.0, 0.0, 0.05])  # where SphereCell.detect reports it
    expected = np.linalg.inv(turn)[:3, :3] @ model_centre + np.linalg.inv(turn)[:3, 3]
    np.testing.assert_allclose(d.centroid, expected, atol=1e-12)
    np.testing.assert_allclose(d.extent, (0.01, 0.01, 0.002), atol=1e-12)
    np.testing.assert_allclose(run.points, run.fused, atol=1e-12)  # the scored cloud is the fused one again


def test_too_few_fused_points_is_inconclusive():
    run = run_inspection(SphereCell(), part_id="d", part_type="sphere", min_points=10_000)
    assert run.outcome.verdict == INCONCLUSIVE and "fused cloud has 3000 points" in run.outcome.reason


def test_decide_verdict_rules():
    assert decide_verdict(object_score=0.5, threshold=1.0) == (PASS, "")
    assert decide_verdict(object_score=0.5, threshold=1.0, n_defects=2)[0] == FAIL
    assert decide_verdict(object_score=float("nan"), threshold=1.0)[0] == INCONCLUSIVE
    with pytest.raises(ValueError, match="needs object_score"):
        decide_verdict()


def test_stage_clock_records_failures_and_totals():
    t = iter(range(100))
    clock = StageClock(clock=lambda: float(next(t)))
    with clock.stage("move"):
        pass
    with pytest.raises(StageFailed) as exc:
        with clock.stage("scan"):
            raise ValueError("no device")
    assert exc.value.stage == "scan" and exc.value.reason == "no device"
    assert clock.totals() == {"move": 1.0, "scan": 1.0}
    assert clock.compute_seconds() == 1.0  # motion excluded


def test_results_json_and_table(tmp_path):
    runs = [run_inspection(SphereCell(), part_id="good", min_points=100),
            run_inspection(SphereCell(object_score=5.0), part_id="bad", min_points=100),
            run_inspection(SphereCell(fail="scan"), part_id="lost", min_points=100)]
    path = write_results_json(tmp_path / "r" / "results.json", [r.outcome for r in runs], seed=3)
    doc = json.loads(path.read_text())
    assert [p["verdict"] for p in doc["parts"]] == ["PASS", "FAIL", "INCONCLUSIVE"]
    assert doc["seed"] == 3 and doc["parts"][2]["object_score"] is None  # NaN -> null, valid JSON
    table = summary_table([r.outcome for r in runs])
    assert "good" in table and "INCONCLUSIVE" in table and "register" in table.splitlines()[0]
