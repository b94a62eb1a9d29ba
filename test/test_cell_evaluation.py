"""Production runs and their evaluation: part variation, defect placement, POD / a90."""
import json

import numpy as np
import pytest

from cosarad_ros.core.inspection.evaluation import (
    PartRecord,
    fit_pod,
    locate,
    measured_points,
    measured_share,
    summarize,
)
from cosarad_ros.core.inspection.production import (
    GRADED_SIZES_MM,
    Variation,
    graded_sizes,
    make_production_run,
    severity_of,
    visible_from_above,
)


def test_pod_fit_recovers_a90_of_a_known_curve():
    rng = np.random.default_rng(0)
    mu, sigma = np.log(0.3), 0.25
    a = np.exp(rng.uniform(np.log(0.05), np.log(3.0), 4000))
    hits = rng.random(4000) < 1 / (1 + np.exp(-(np.log(a) - mu) / sigma))
    fit = fit_pod(a, hits)
    assert fit.note == ""
    truth = np.exp(mu + sigma * np.log(9))
    assert abs(fit.a90 - truth) / truth < 0.1, (fit.a90, truth)
    assert fit.pod([truth])[0] == pytest.approx(0.9, abs=0.03)


def test_the_back_of_a_thin_wall_does_not_measure_a_defect_on_its_front():
    """A scan of the back face of a 0.8 mm wall lies within 1 mm of a defect on its front face:
    by distance alone it would count as measuring the defect; the faces face opposite ways.
    """
    import trimesh

    wall = trimesh.creation.box(extents=(0.03, 0.03, 0.0008))  # front z = +0.4 mm, back z = -0.4 mm
    g = np.stack(np.meshgrid(np.linspace(-0.004, 0.004, 9), np.linspace(-0.004, 0.004, 9)), -1).reshape(-1, 2)
    samples = np.column_stack([g, np.full(len(g), 0.0004)])  # the defect's surface, on the front
    back = np.column_stack([g + 0.0003, np.full(len(g), -0.0004)])
    front = np.column_stack([g + 0.0003, np.full(len(g), 0.0004)])
    defect = {"centre": [0.0, 0.0, 0.0004]}
    assert measured_points(defect, back, samples) == len(back)  # distance alone is fooled
    assert measured_points(defect, back, samples, mesh=wall) == 0
    assert measured_share(back, samples, mesh=wall) == 0.0
    assert measured_points(defect, front, samples, mesh=wall) == len(front)
    assert measured_share(front, samples, mesh=wall) == 1.0


def test_pod_fit_edge_cases_are_named():
    assert fit_pod([1, 2], [True, False]).note == "too few"
    assert fit_pod([1, 2, 3, 4], [True] * 4).note == "all found"
    assert fit_pod([1, 2, 3, 4], [False] * 4).note == "none found"
    sep = fit_pod([0.1, 0.2, 0.5, 1.0], [False, False, True, True])
    assert sep.note == "separated" and sep.a90 == 0.5
    with pytest.raises(ValueError, match="sizes"):
        fit_pod([0.0, 1, 2, 3], [True] * 4)


def test_graded_sizes_cover_the_range_evenly_on_a_log_scale():
    sizes = graded_sizes("sink", 20, np.random.default_rng(1))
    depth = np.array(sorted(s["depth"] for s in sizes)) * 1e3
    lo, hi = GRADED_SIZES_MM["sink"]["depth"]
    assert lo <= depth.min() and depth.max() <= hi
    # one draw per log stratum: every decile of the log range is hit twice
    u = (np.log(depth) - np.log(lo)) / (np.log(hi) - np.log(lo))
    assert np.bincount((u * 10).astype(int), minlength=10).tolist() == [2] * 10


def test_variation_stays_within_the_stated_tolerance():
    from cosarad_ros.core.data.parts import make_part

    part = make_part("block", seed=0)
    rng = np.random.default_rng(3)
    for _ in range(5):
        v = Variation.draw(rng, part.extents, dimension=5e-5, form=2e-5)
        moved = v.apply(part.mesh.vertices, part.mesh.bounds)
        change = (moved.max(0) - moved.min(0)) - part.extents
        assert np.abs(change).max() <= 5e-5 + 2e-5 + 1e-9
        assert np.abs(moved - part.mesh.vertices).max() <= 5e-5 + 2e-5 + 1e-9
        assert np.abs(moved[:, 2].min() - part.mesh.vertices[:, 2].min()) <= 2e-5  # still on the fixture


def test_visible_from_above_excludes_the_fixture_contact_face():
    pts = np.array([[0, 0, 0.0], [0, 0, 0.02], [0, 0, 0.01], [0, 0, 0.01]])
    nrm = np.array([[0, 0, -1.0], [0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0]])
    assert visible_from_above(pts, nrm).tolist() == [False, True, False, True]


def test_production_run_has_good_parts_and_every_defect_kind(tmp_path):
    sc = make_production_run(tmp_path / "run", types=["block", "flange"], parts_per_type=6,
                             defects=["bulge", "sink", "hole_position"], seed=5)
    assert len(sc.parts) == 12 and set(sc.part_types) == {"block_0", "flange_1"}
    good = [p for p in sc.parts if p.expected == "PASS"]
    bad = [p for p in sc.parts if p.expected == "FAIL"]
    assert len(good) == 4 and all(p.defect is None and p.variation for p in good)
    assert {p.defect["type"] for p in bad} == {"bulge", "sink", "hole_position"}
    for p in bad:  # placed where the cell can see: above the fixture band
        assert p.defect["centre"][2] > 0.002 or p.defect["type"] == "hole_position"
    doc = json.loads((tmp_path / "run" / "scenario.json").read_text())
    assert len(doc["parts"]) == 12
    from cosarad_ros.core.inspection.production import CellScenario

    assert CellScenario.load(tmp_path / "run" / "scenario.json").parts == sc.parts


def test_summary_counts_escapes_false_rejects_and_unmeasured_defects():
    def rec(i, expected, verdict, defect=None, measured=None, hit=None):
        return PartRecord(f"P{i}", "block_0", "deviation", expected, verdict, "", defect=defect,
                          measured=measured, hit=hit, stage_seconds={"scan": 1.0})

    gross = {"type": "sink", "size": {"depth": 0.001, "diameter": 0.012}, "centre": [0, 0, 0], "footprint": 0.01}
    small = {"type": "sink", "size": {"depth": 0.0002, "diameter": 0.012}, "centre": [0, 0, 0], "footprint": 0.01}
    recs = [rec(1, "PASS", "PASS"), rec(2, "PASS", "FAIL"), rec(3, "FAIL", "PASS", gross, True, False),
            rec(4, "FAIL", "FAIL", small, True, True), rec(5, "FAIL", "PASS", small, False, False),
            rec(6, "PASS", "INCONCLUSIVE")]
    s = summarize(recs)
    assert s["correct"] == 2 and s["false_rejects"] == 1 and s["escapes"] == 1 and s["escapes_gross"] == 1
    assert s["unmeasured_defects"] == 1 and s["inconclusive"] == 1
    assert s["pod"]["sink"]["n"] == 2 and s["pod"]["sink>=8mm"]["hits"] == 1
    assert severity_of(gross) == {"depth": 0.001, "across": 0.012}


def test_locate_needs_a_defect_near_the_injected_one():
    d = {"centre": [0.0, 0.0, 0.0], "footprint": 0.004}
    assert locate(d, [{"centroid": [0.005, 0, 0]}]) == (True, 0.005)
    assert locate(d, [{"centroid": [0.03, 0, 0]}])[0] is False
    assert locate(d, []) == (False, None)


def test_seen_from_above_excludes_the_inside_of_a_deep_hole():
    import trimesh

    from cosarad_ros.core.inspection.production import seen_from_above

    # a 40 mm cube with a 4 mm wide, 30 mm deep blind hole from the top
    box = trimesh.creation.box(extents=[0.04, 0.04, 0.04])
    box.apply_translation([0, 0, 0.02])
    hole = trimesh.creation.cylinder(radius=0.002, height=0.03, sections=32)
    hole.apply_translation([0, 0, 0.04 - 0.015 + 1e-4])
    part = box.difference(hole)
    where = seen_from_above(part)
    pts = np.array([[0.0, 0.0, 0.04], [0.01, 0.01, 0.04], [0.0, -0.002, 0.015], [0.02, 0.0, 0.02]])
    nrm = np.array([[0, 0, 1.0], [0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]])
    # the top face and a side face are seen; the hole's wall 25 mm down is not
    assert where(pts[1:], nrm[1:]).tolist() == [True, False, True]
