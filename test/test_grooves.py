"""The narrow-groove line test: a scratch too narrow for the location banks is found, and
ordinary scan noise, a gentle form deviation and a scanned edge are not taken for one.
"""
import numpy as np
import pytest
import trimesh

from cosarad_ros.core.anomaly import DeviationDetector
from cosarad_ros.core.anomaly.grooves import GrooveField, groove_scores

BOX = (0.06, 0.04, 0.01)  # metres; the top face is z = +5 mm
NOISE = 1.5e-4  # one point's depth noise [m], about the simulated sensor's after fusion
SPACING = 7e-4  # the cell's fused point spacing [m]


def _top_face(seed: int, *, groove=None, form: float = 0.0) -> np.ndarray:
    """A scan of the box's top face: jittered grid, depth noise; ``groove`` = (centre xy, angle,
    length, width, depth) cuts a parabolic groove; ``form`` bows the face by that much.
    """
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(-0.028, 0.028, SPACING), np.arange(-0.018, 0.018, SPACING))
    xy = np.column_stack([x.ravel(), y.ravel()]) + rng.uniform(-0.25, 0.25, (x.size, 2)) * SPACING
    z = np.full(len(xy), BOX[2] / 2) + rng.normal(0.0, NOISE, len(xy))
    z += form * (1 - (xy[:, 0] / 0.028) ** 2)
    if groove is not None:
        (cx, cy), angle, length, width, depth = groove
        d = np.array([np.cos(angle), np.sin(angle)])
        rel = xy - [cx, cy]
        along, across = rel @ d, rel @ [-d[1], d[0]]
        inside = (np.abs(along) < length / 2) & (np.abs(across) < width / 2)
        z[inside] -= depth * (1 - (2 * across[inside] / width) ** 2)
    return np.column_stack([xy, z])


@pytest.fixture(scope="module")
def detector():
    det = DeviationDetector(register=False, seed=0)
    det.fit("box", [_top_face(s) for s in (1, 2, 3)], mesh=trimesh.creation.box(extents=BOX))
    return det


GROOVE = ((0.004, -0.002), 0.5, 0.02, 0.001, 6e-4)  # 20 mm long, 1 mm wide, 0.6 mm deep


def test_a_narrow_scratch_fails_as_a_scratch_where_it_is(detector):
    s = detector.score(_top_face(11, groove=GROOVE), "box")
    assert s.is_anomalous, s.object_score
    kinds = [d.kind for d in s.defects]
    assert "scratch" in kinds, kinds
    found = s.defects[kinds.index("scratch")]
    assert np.linalg.norm(found.centroid[:2] - GROOVE[0]) < 0.006
    # the location banks alone do not see it: the groove covers too little of a neighbourhood
    no_grooves = DeviationDetector(register=False, seed=0)
    no_grooves.fit("box", [_top_face(s) for s in (1, 2, 3)], mesh=trimesh.creation.box(extents=BOX))
    from dataclasses import replace

    no_grooves._parts["box"] = replace(no_grooves._parts["box"], groove=None)
    assert not no_grooves.score(_top_face(11, groove=GROOVE), "box").is_anomalous


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_good_faces_and_gentle_form_pass(detector, seed):
    assert not detector.score(_top_face(seed), "box").is_anomalous
    # a bow of 0.05 mm over the face (within a production tolerance) is no groove
    assert not detector.score(_top_face(seed, form=5e-5), "box").is_anomalous


def test_the_strip_statistic_is_a_z_score_under_noise(detector):
    """On good scans the strongest of all strip tests stays where a few thousand standard-normal
    tests put their maximum; on the groove it is above the threshold, and the strip reads part of
    the groove's depth (its points lie across the groove's profile), never more.
    """
    bank = detector.part_bank("box")
    tops = []
    for seed in (31, 32, 33):
        pts = _top_face(seed)
        dev = bank.surface.signed_distance(pts)
        nrm = bank.surface.closest(pts)[1]
        g = groove_scores(bank.groove, pts, dev, nrm, bank.location_tree.query(pts)[1], threshold=6.0, tolerance=1e-4)
        tops.append(g.score.max() if len(g.score) else 0.0)
    assert max(tops) < 5.0, tops
    pts = _top_face(34, groove=GROOVE)
    dev, nrm = bank.surface.signed_distance(pts), bank.surface.closest(pts)[1]
    g = groove_scores(bank.groove, pts, dev, nrm, bank.location_tree.query(pts)[1], threshold=6.0, tolerance=1e-4)
    k = int(np.argmax(g.score))
    assert g.score[k] > 6.5
    assert 1e-4 < g.depth[k] < 6e-4
    assert g.point_scores(len(pts)).max() == pytest.approx(g.score[k])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2 or more templates"):
        GrooveField.fit([_top_face(1)], [np.zeros(10)], location_tree=None, min_std=1e-5)
    det = DeviationDetector(register=False)
    det.fit("box", [_top_face(s) for s in (1, 2, 3)], mesh=trimesh.creation.box(extents=BOX))
    bank = det.part_bank("box")
    pts = _top_face(5)
    with pytest.raises(ValueError, match="one row per scan point"):
        groove_scores(bank.groove, pts, np.zeros(3), np.zeros((len(pts), 3)), np.zeros(len(pts), dtype=int),
                      threshold=6.0, tolerance=1e-4)
