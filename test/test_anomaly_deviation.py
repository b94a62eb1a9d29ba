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


def _wall_scan(rng, *, sink: float = 0.0) -> np.ndarray:
    """Points on the top and the two long sides of a 60 x 3 x 30 mm wall (0.5 mm grid, 0.05 mm
    noise along each face's normal); ``sink`` lowers the top face over 25 < x < 35 mm.
    """
    xs = np.arange(0.0005, 0.06, 0.0005)
    top = np.stack(np.meshgrid(xs, np.arange(0.00025, 0.003, 0.0005)), -1).reshape(-1, 2)
    top = np.column_stack([top, np.full(len(top), 0.03)])
    top[(top[:, 0] > 0.025) & (top[:, 0] < 0.035), 2] -= sink
    side = np.stack(np.meshgrid(xs, np.arange(0.0005, 0.03, 0.0005)), -1).reshape(-1, 2)
    front = np.column_stack([side[:, 0], np.zeros(len(side)), side[:, 1]])
    back = np.column_stack([side[:, 0], np.full(len(side), 0.003), side[:, 1]])
    top[:, 2] += rng.normal(0.0, 5e-5, len(top))
    front[:, 1] += rng.normal(0.0, 5e-5, len(front))
    back[:, 1] += rng.normal(0.0, 5e-5, len(back))
    return np.concatenate([top, front, back])


def test_a_sink_on_a_narrow_face_is_not_averaged_away_by_the_faces_beside_it():
    """A 0.15 mm sink across the 3 mm wide top of a thin wall: the CAD banks pool only points on
    faces facing the same way, so the wall's sides do not dilute it (pooled with them it scores
    about 5, below the threshold of 6); a good wall passes.
    """
    import trimesh

    rng = np.random.default_rng(0)
    wall = trimesh.creation.box(extents=(0.06, 0.003, 0.03))
    wall.apply_translation((0.03, 0.0015, 0.015))
    det = DeviationDetector(register=False, location_spacing=0.002)
    det.fit("wall", [_wall_scan(rng) for _ in range(3)], mesh=wall)
    assert det._parts["wall"].location_normals is not None
    good = det.score(_wall_scan(rng), "wall", register=False)
    bad = det.score(_wall_scan(rng, sink=1.5e-4), "wall", register=False)
    assert not good.is_anomalous, good.object_score
    assert bad.is_anomalous and bad.defects, bad.object_score
    c = bad.defects[0].centroid
    assert abs(c[0] - 0.03) < 0.006 and c[2] > 0.027
