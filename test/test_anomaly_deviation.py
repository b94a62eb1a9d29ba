"""The deviation detector: location-specific banks of point-to-template deviation scored by Cohen's d."""
import numpy as np
import pytest

from cosarad_ros.core.anomaly import DeviationDetector, make_detector
from cosarad_ros.core.anomaly.dataset import toy_class
from cosarad_ros.core.anomaly.evaluation import auroc


def _plane(z: float) -> np.ndarray:
    g = np.stack(np.meshgrid(np.arange(0, 0.06, 0.001), np.arange(0, 0.04, 0.001)), -1).reshape(-1, 2)
    return np.column_stack([g, np.full(len(g), z)])


def test_cohens_d_against_hand_computed_value():
    """Templates at z = 0, +a, -a: every template's leave-one-out deviation is a (std 0, floored by
    min_std); a test plane at z = h deviates by h - a from the nearest template, so
    d = (h - a - a) / min_std everywhere.
    """
    a, h, min_std = 1e-4, 6e-4, 5e-5
    det = DeviationDetector(min_std=min_std, register=False, tolerance=2.5e-4, threshold=6.0)
    bank = det.fit("plate", [_plane(0.0), _plane(a), _plane(-a)], aligned=True)
    assert np.nanmax(np.abs(bank.mean - a)) < 1e-9
    s = det.score(_plane(h), "plate")
    assert s.object_score == pytest.approx((h - 2 * a) / min_std, rel=1e-6)  # 8.0
    assert s.is_anomalous and len(s.defects) == 1
    # a FAIL names a place even when the anomalous region is smaller than min_region_points
    small = _plane(0.0)
    small[np.linalg.norm(small[:, :2] - [0.03, 0.02], axis=1) < 0.0015, 2] += 3e-3
    det_small = DeviationDetector(min_std=min_std, register=False, location_spacing=0.002, min_region_points=500)
    det_small.fit("plate", [_plane(0.0), _plane(a), _plane(-a)], aligned=True)
    r = det_small.score(small, "plate")
    assert r.is_anomalous and len(r.defects) == 1 and r.defects[0].point_count < 500
    assert np.linalg.norm(r.defects[0].centroid[:2] - [0.03, 0.02]) < 0.003
    # the same excess below the tolerance is not a defect, however unusual it is
    det_tol = DeviationDetector(min_std=min_std, register=False, tolerance=1e-3, threshold=6.0)
    det_tol.fit("plate", [_plane(0.0), _plane(a), _plane(-a)], aligned=True)
    s2 = det_tol.score(_plane(h), "plate")
    assert s2.object_score == pytest.approx(6.0 * (h - 2 * a) / 1e-3, rel=1e-6) and not s2.is_anomalous


@pytest.fixture(scope="module")
def toy():
    cls = toy_class(3, n_good=3, n_bad=3, points=6000)
    det = make_detector({"method": "deviation"})
    det.fit("toy", list(cls.templates))
    return cls, det


def test_bulged_parts_fail_good_parts_pass_and_the_bulge_scores_highest(toy):
    cls, det = toy
    for s in cls.tests:
        r = det.score(s.points, "toy")  # random pose: registered onto the templates here
        assert r.registration_ok
        assert r.is_anomalous == s.is_anomalous, (s.name, r.object_score, r.threshold)
        if s.is_anomalous:
            assert auroc(r.point_scores, s.labels) > 0.8
            assert s.labels[int(np.argmax(r.point_scores))]  # the top-scoring point is on the bulge


def test_bad_input_gets_clear_errors(toy):
    cls, det = toy
    with pytest.raises(ValueError, match="at least 3"):
        DeviationDetector().fit("two", list(cls.templates[:2]))
    with pytest.raises(ValueError, match="unknown part type 'nope'"):
        det.score(cls.tests[0].points, "nope")
    with pytest.raises(ValueError):
        det.score(np.zeros((0, 3)), "toy")
    bad = cls.tests[0].points.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError):
        det.score(bad, "toy")
    with pytest.raises(ValueError, match="tolerance"):
        DeviationDetector(tolerance=-1.0)
    with pytest.raises(ValueError, match="unknown method"):
        make_detector({"method": "magic"})
    with pytest.raises(ValueError, match="unknown DeviationDetector config keys"):
        make_detector({"method": "deviation", "num_patches": 12})
    # keys of the learned network are ignored for this method, so one config serves all methods
    assert isinstance(make_detector({"method": "deviation", "model": None, "num_threads": 2}), DeviationDetector)


def test_locations_a_scan_only_grazes_are_not_scored():
    """COSARAD's |P|min rule: a location holding less than min_location_fraction of the templates'
    points there (the rim of a partial view) is skipped.
    """
    a = 1e-4
    templates = [_plane(0.0), _plane(a), _plane(-a)]
    sparse = _plane(6e-4)[::4]  # a quarter of the templates' density everywhere
    strict = DeviationDetector(register=False, location_spacing=0.003, min_location_fraction=0.5)
    strict.fit("plate", templates, aligned=True)
    with pytest.raises(ValueError, match="overlaps none"):
        strict.score(sparse, "plate")
    lax = DeviationDetector(register=False, location_spacing=0.003, min_location_fraction=0.0)
    lax.fit("plate", templates, aligned=True)
    assert lax.score(sparse, "plate").is_anomalous


def test_the_floor_of_a_sink_deeper_than_the_location_radius_is_seen():
    """Points on the floor of a 5 mm deep sink are farther from the template surface than the
    location radius (3 mm here); they still count for the locations above them.
    """
    a = 1e-4
    templates = [_plane(0.0), _plane(a), _plane(-a)]
    scan = _plane(0.0)
    floor = (np.abs(scan[:, 0] - 0.03) < 0.008) & (np.abs(scan[:, 1] - 0.02) < 0.008)
    scan[floor, 2] -= 0.005
    near_only = DeviationDetector(register=False, location_spacing=0.002, assign_factor=1.0)
    near_only.fit("plate", templates, aligned=True)
    assert not near_only.score(scan, "plate").is_anomalous  # the floor is out of reach: unseen
    det = DeviationDetector(register=False, location_spacing=0.002)
    det.fit("plate", templates, aligned=True)
    s = det.score(scan, "plate")
    assert s.is_anomalous and s.defects
    assert np.linalg.norm(s.defects[0].centroid[:2] - [0.03, 0.02]) < 0.004
