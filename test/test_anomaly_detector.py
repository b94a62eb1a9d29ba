"""AnomalyDetector: fit / score contract, localisation of a bulge on a held-out part, caching,
bad input. Toy parts (procedural, never seen in training) keep it fast.
"""
import os

import numpy as np
import pytest
import torch

from cosarad_ros.core.anomaly import AnomalyDetector, AnomalyScore, DefectRegion
from cosarad_ros.core.anomaly.dataset import add_bump, toy_class
from cosarad_ros.core.anomaly.evaluation import auroc
from cosarad_ros.core.anomaly.model import CosaradNet, default_model_path, save_model
from cosarad_ros.core.geometry import random_rotation, transform_points
from cosarad_ros.core.io import sample_mesh

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def toy():
    return make_toy()


def make_toy():
    """Four full templates of a toy part and a full test scan with a 1.5 mm bulge, random poses."""
    from cosarad_ros.core.anomaly.dataset import _toy_mesh

    mesh = _toy_mesh(7)
    rng = np.random.default_rng(3)
    templates = []
    for g in range(4):
        p, _ = sample_mesh(mesh, 12000, seed=10 + g)
        templates.append(p @ random_rotation(rng).T + rng.uniform(-0.05, 0.05, 3))
    p, n = sample_mesh(mesh, 12000, seed=99)
    # put the bulge in the middle of a flat top face: the top point farthest from any other face
    from scipy.spatial import cKDTree

    top = np.nonzero(n[:, 2] > 0.99)[0]
    far, _ = cKDTree(p[n[:, 2] < 0.99]).query(p[top])
    centre = int(top[np.argmax(far)])
    bulged, mask = add_bump(p, n, rng, radius=0.005, height=0.0015, centre_index=centre)
    T = np.eye(4)
    T[:3, :3] = random_rotation(rng)
    T[:3, 3] = [0.02, -0.01, 0.03]
    good, _ = sample_mesh(mesh, 12000, seed=98)
    return templates, transform_points(T, bulged), mask, transform_points(T, good)


def _check_localised(s: AnomalyScore, mask):
    assert s.point_scores.shape == mask.shape
    assert auroc(s.point_scores, mask) > 0.9
    top = np.argsort(-s.point_scores)[: int(mask.sum())]
    assert mask[top].mean() > 0.5  # the highest-scoring points are the bulge


def test_fpfh_localises_bulge_and_contract(toy, tmp_path):
    templates, bulged, mask, good = toy
    # the paper's point scores (no per-point deviation term): FPFH features alone localise the bulge
    det = AnomalyDetector.from_config({"method": "fpfh", "num_patches": 96, "partial_scans": False,
                                       "registration_attempts": 1, "point_deviation_weight": 0.0})
    assert not det.has_part("toy")
    det.fit("toy", templates)
    assert det.has_part("toy")
    s = det.score(bulged, "toy")
    _check_localised(s, mask)
    assert s.transform.shape == (4, 4) and s.registration_ok and s.chamfer < 1e-3
    assert s.patch_centres.shape == (96, 3) and s.patch_scores.shape == (96,)
    g = det.score(good, "toy")
    assert s.object_score > g.object_score
    assert s.is_anomalous and s.object_score > s.threshold
    # the defect region is where the bulge is (template frame)
    assert s.defects and isinstance(s.defects[0], DefectRegion)
    d = s.defects[0]
    bulge_centre = transform_points(s.transform, bulged[mask]).mean(0)
    assert np.linalg.norm(d.centroid - bulge_centre) < 0.01
    assert d.point_count == len(d.indices) and mask[d.indices].sum() >= 0.8 * mask.sum()
    # with the deviation term, point scores rise by exactly the point's deviation in tolerances
    # (clipped at 4); the object score and the verdict stay the paper's
    det.config = det.config.with_options(point_deviation_weight=1.0)
    s1 = det.score(bulged, "toy")
    dev = det._surfaces(det.part_bank("toy")).deviation(transform_points(s1.transform, bulged))
    assert np.allclose(s1.point_scores - s.point_scores, np.minimum(dev / 0.25e-3, 4.0), atol=1e-6)
    assert s1.object_score == pytest.approx(s.object_score) and s1.is_anomalous
    assert auroc(s1.point_scores, mask) >= auroc(s.point_scores, mask) - 1e-9
    with pytest.raises(ValueError, match="point_deviation_weight"):
        AnomalyDetector.from_config({"method": "fpfh", "point_deviation_weight": -1.0})


def test_shipped_model_localises_bulge_on_held_out_part(toy):
    assert os.path.isfile(default_model_path()), "the default model must ship with the package"
    templates, bulged, mask, good = toy
    det = AnomalyDetector.from_config({"method": "cosarad", "model": None, "num_patches": 96,
                                       "partial_scans": False, "registration_attempts": 1})
    assert not any(c.startswith("toy") for c in det.classes_seen)  # a held-out part
    assert det.uses_deviation  # the shipped models take each point's deviation from the templates
    det.fit("toy", templates)
    s = det.score(bulged, "toy")
    _check_localised(s, mask)
    assert s.object_score > det.score(good, "toy").object_score


def test_global_bank_and_cache_round_trip(toy, tmp_path):
    templates, bulged, mask, _ = toy
    model = str(tmp_path / "rand.safetensors")
    save_model(model, CosaradNet("tiny"))
    cfg = {"method": "global-bank", "model": model, "num_patches": 48, "partial_scans": False,
           "registration_attempts": 1}
    det = AnomalyDetector.from_config(cfg)
    pb = det.fit("toy", templates, cache_dir=str(tmp_path / "banks"))
    files = os.listdir(tmp_path / "banks")
    assert len(files) == 1 and files[0].startswith("toy-")
    det2 = AnomalyDetector.from_config(cfg)
    pb2 = det2.fit("toy", templates, cache_dir=str(tmp_path / "banks"))  # loaded, not rebuilt
    assert np.array_equal(pb.bank.features, pb2.bank.features) and pb2.threshold == pb.threshold
    s1 = det.score(bulged, "toy")
    s2 = det2.score(bulged, "toy", transform=s1.transform)  # a known pose skips registration
    assert np.allclose(s1.point_scores, s2.point_scores)
    assert s2.timings["register"] < s1.timings["register"]
    # other templates -> another cache entry
    det2.fit("toy", templates[:3], cache_dir=str(tmp_path / "banks"))
    assert len(os.listdir(tmp_path / "banks")) == 2


def test_bank_cache_key_follows_the_code_and_the_configuration(toy, monkeypatch):
    """A cached bank is keyed by the source of the modules that fit it: changed code is never
    served a bank the old code fitted, with no version number to bump by hand.
    """
    import cosarad_ros.core.cachekey as cachekey

    templates = toy[0]
    det = AnomalyDetector.from_config({"method": "fpfh", "num_patches": 48})
    key = det._cache_key(templates)
    assert key == AnomalyDetector.from_config({"method": "fpfh", "num_patches": 48})._cache_key(templates)
    assert key != AnomalyDetector.from_config({"method": "fpfh", "num_patches": 64})._cache_key(templates)
    monkeypatch.setattr(cachekey, "source_fingerprint", lambda *modules: "edited")
    assert det._cache_key(templates) != key


def test_config_groups_take_flat_options_and_name_bad_fields():
    """Flat options land in their groups (and group dicts too), the defaults are the documented
    ones, each group names a bad field, and the constructor takes a DetectorConfig.
    """
    from cosarad_ros.core.anomaly import DetectorConfig, PatchConfig, ScoringConfig

    det = AnomalyDetector.from_config({"method": "fpfh", "num_patches": 64, "threshold": 5.0, "seed": 3,
                                       "registration": {"symmetry_check": False}})
    c = det.config
    assert c.patches.num_patches == 64 and c.calibration.threshold == 5.0 and det.seed == 3
    assert not c.registration.symmetry_check and c.registration.registration_attempts == 3
    assert c.banks.view_matching and c.banks.support_tolerance == 0.25 and c.scoring.std_prior_weight == 32.0
    assert c.options()["num_patches"] == 64 and set(c.options()) == set(DetectorConfig.option_names())
    assert det.register and det.registration_attempts == 3 and det.max_template_points == 60_000
    same = AnomalyDetector("fpfh", config=DetectorConfig(patches=PatchConfig(num_patches=64),
                                                         calibration={"threshold": 5.0}), seed=3)
    assert same.config == DetectorConfig.from_options({"num_patches": 64, "threshold": 5.0})
    assert same.config == c.with_options(symmetry_check=True)
    with pytest.raises(AttributeError):
        c.patches.num_patches = 12  # frozen
    for field, value in (("num_patches", 1), ("patch_points", 8), ("patch_radius", -1.0), ("patch_radius_rel", 2.0),
                         ("min_patch_fraction", 1.0), ("top_k", 0), ("aggregator", "median"),
                         ("deviation_tolerance", 0.0), ("std_prior_weight", -1.0), ("min_std", float("nan")),
                         ("false_alarm_rate", 0.0), ("threshold", float("inf")), ("calibration_views", -1),
                         ("min_region_points", 0), ("registration_attempts", 0), ("symmetry_min_gain", 1.5),
                         ("max_template_points", 0)):
        with pytest.raises(ValueError, match=field):
            DetectorConfig.from_options({field: value})
    with pytest.raises(ValueError, match="unknown detector options"):
        DetectorConfig.from_options({"radius": 3})
    with pytest.raises(ValueError, match="top_k"):
        ScoringConfig(top_k=0)
    with pytest.raises(ValueError, match="DetectorConfig"):
        AnomalyDetector("fpfh", config={"num_patches": 64})


def test_bad_input_gets_clear_errors(toy, tmp_path):
    templates, bulged, _, _ = toy
    with pytest.raises(FileNotFoundError, match="model file not found"):
        AnomalyDetector.from_config({"method": "cosarad", "model": str(tmp_path / "none.safetensors")})
    with pytest.raises(ValueError, match="unknown method"):
        AnomalyDetector.from_config({"method": "patchcore"})
    with pytest.raises(ValueError, match="unknown AnomalyDetector config keys"):
        AnomalyDetector.from_config({"method": "fpfh", "radius": 3})
    for removed in ("template_crop", "bank_views", "full_coverage", "view_points", "resample"):
        with pytest.raises(ValueError, match=rf"config keys \['{removed}'\]; {removed} was removed"):
            AnomalyDetector.from_config({"method": "fpfh", removed: 1})
    with pytest.raises(ValueError, match="support_tolerance"):
        AnomalyDetector.from_config({"method": "fpfh", "support_tolerance": 0.0})
    det = AnomalyDetector.from_config({"method": "fpfh", "num_patches": 32, "partial_scans": False})
    with pytest.raises(ValueError, match="no templates"):
        det.fit("toy", [])
    with pytest.raises(ValueError, match="at least 3"):
        det.fit("toy", templates[:2])
    with pytest.raises(ValueError, match="empty"):
        det.fit("toy", [templates[0], templates[1], np.zeros((0, 3))])
    det.fit("toy", templates[:3])
    with pytest.raises(ValueError, match="unknown part type 'other'"):
        det.score(bulged, "other")
    with pytest.raises(ValueError, match="empty"):
        det.score(np.zeros((0, 3)), "toy")
    nan = bulged.copy()
    nan[5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        det.score(nan, "toy")
    with pytest.raises(ValueError, match="need at least"):
        det.score(bulged[:10], "toy")
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        det.score(bulged[:, :2], "toy")
    far = bulged + 10.0  # nowhere near the part: no patch to score
    with pytest.raises(ValueError, match="overlaps none"):
        det.score(far, "toy", transform=np.eye(4))


def test_partial_scan_view_matching_keeps_good_scans_quiet():
    """A partial good scan scores lower against templates cut to the scan's support than against
    full templates.
    """
    cls = toy_class(11, n_good=2, n_bad=0, points=3000)
    base = {"method": "fpfh", "num_patches": 96, "registration_attempts": 2}
    on = AnomalyDetector.from_config({**base, "view_matching": True})
    off = AnomalyDetector.from_config({**base, "view_matching": False})
    for d in (on, off):
        d.fit("t", list(cls.templates))
    for s in cls.tests:
        a, b = on.score(s.points, "t"), off.score(s.points, "t")
        assert a.coverage < 0.85
        assert np.nanmean(a.patch_scores) < np.nanmean(b.patch_scores)


def test_support_crop_reuses_fitted_features_exactly():
    """Template patches the support crop leaves whole keep their fitted features, and those equal
    what cutting and extracting them again gives (per-location resampling with the template's seed).
    """
    from scipy.spatial import cKDTree

    cls = toy_class(11, n_good=1, n_bad=0, points=3000)
    det = AnomalyDetector.from_config({"method": "fpfh", "num_patches": 64, "registration_attempts": 2})
    det.fit("t", list(cls.templates))
    pb = det.part_bank("t")
    r = det.score(cls.tests[0].points, "t")
    reg = transform_points(r.transform, cls.tests[0].points)
    valid = np.isfinite(r.patch_scores)
    bank = det._support_bank(pb, reg, valid)
    cols = np.nonzero(valid)[0]
    tree = cKDTree(reg)
    n_whole = n_cut = 0
    for g, t in enumerate(pb.templates):
        keep = np.isfinite(tree.query(t, k=1, distance_upper_bound=det.config.banks.support_tolerance * pb.radius)[0])
        ps = det._cropped_template_patches(pb, g, keep, cols)
        ok = ps.counts >= 8
        np.testing.assert_array_equal(bank.valid[cols, g], ok)
        np.testing.assert_allclose(bank.features[cols[ok], g], det.extractor(ps.patches[ok]), atol=1e-5)
        whole = ok & (ps.counts == pb.counts[cols, g])
        n_whole += int(whole.sum())
        n_cut += int((ok & ~whole).sum())
    assert n_whole > 0 and n_cut > 0  # both paths ran


def _domed_box(seed: int, n: int = 20000) -> np.ndarray:
    """A 80 x 50 x 20 mm box with a dome (6 mm sphere) off-centre on its top face, sampled."""
    import trimesh

    dome = trimesh.creation.icosphere(subdivisions=3, radius=0.006)
    dome.apply_translation((0.025, 0.01, 0.01))
    part = trimesh.boolean.union([trimesh.creation.box((0.08, 0.05, 0.02)), dome], engine="manifold")
    return sample_mesh(part, n, seed=seed)[0]


@pytest.mark.parametrize("base", [{"method": "fpfh", "num_patches": 64, "registration_attempts": 1},
                                  {"method": "deviation", "registration_attempts": 1}], ids=["fpfh", "deviation"])
def test_symmetry_check_moves_a_half_turned_pose_to_the_one_all_templates_agree_with(base):
    """A view handed over half a turn off (the dome on the bare end of the top face) is put back
    where every template agrees; with the check off the caller's pose stays; a bad gain is
    refused.
    """
    from cosarad_ros.core.anomaly.dataset import partial_view

    rng = np.random.default_rng(12)
    templates = [_domed_box(20 + g) for g in range(4)]
    view = _domed_box(30)
    view = view[partial_view(view, rng, direction=[0.3, -0.2, 1.0])]
    T_true = np.eye(4)
    T_true[:3, :3] = random_rotation(rng)
    T_true[:3, 3] = [0.1, -0.05, 0.2]
    scan = transform_points(np.linalg.inv(T_true), view)
    c = templates[0].mean(0)
    half = np.eye(4)
    half[:3, :3] = np.diag([-1.0, -1.0, 1.0])
    half[:3, 3] = c - half[:3, :3] @ c
    T_wrong = half @ T_true
    from cosarad_ros.core.anomaly import make_detector

    on = make_detector(base)
    off = make_detector({**base, "symmetry_check": False})
    for d in (on, off):
        d.fit("p", templates, aligned=True)
    fixed = on.score(scan, "p", transform=T_wrong)
    err = np.linalg.norm(transform_points(fixed.transform, scan) - view, axis=1)
    assert np.percentile(err, 99) < 5e-4, np.percentile(err, 99)
    kept = off.score(scan, "p", transform=T_wrong)
    np.testing.assert_allclose(kept.transform, T_wrong, atol=1e-12)
    assert fixed.object_score < kept.object_score  # the dome no longer sits on a flat face
    with pytest.raises(ValueError, match="symmetry_min_gain"):
        make_detector({**base, "symmetry_min_gain": 1.5})


@pytest.mark.parametrize("base", [{"method": "fpfh", "num_patches": 64, "registration_attempts": 1},
                                  {"method": "deviation", "registration_attempts": 1}], ids=["fpfh", "deviation"])
def test_symmetry_slides_put_a_corner_view_back_on_its_own_corner(base):
    """A view of one corner of a block handed over on another corner (a quarter turn and a slide)
    is put back on its own corner with ``symmetry_slides``; with them off the turns about the
    centroid do not reach it and the wrong pose stays; a bad ratio is refused.
    """
    from cosarad_ros.core.anomaly import make_detector
    from test_anomaly_align import corner_block, corner_view_and_wrong_pose

    view, T_wrong = corner_view_and_wrong_pose()
    rng = np.random.default_rng(3)
    T_true = np.eye(4)
    T_true[:3, :3] = random_rotation(rng)
    T_true[:3, 3] = [0.2, -0.1, 0.3]
    scan = transform_points(np.linalg.inv(T_true), view)
    on = make_detector(base)
    off = make_detector({**base, "symmetry_slides": 0})
    templates = [corner_block(20 + g) for g in range(4)]
    for d in (on, off):
        d.fit("p", templates, aligned=True)
    fixed = on.score(scan, "p", transform=T_wrong @ T_true)
    err = np.linalg.norm(transform_points(fixed.transform, scan) - view, axis=1)
    assert np.percentile(err, 99) < 5e-4, np.percentile(err, 99)
    kept = off.score(scan, "p", transform=T_wrong @ T_true)
    err = np.linalg.norm(transform_points(kept.transform, scan) - view, axis=1)
    assert np.percentile(err, 99) > 0.01
    assert fixed.object_score < kept.object_score
    with pytest.raises(ValueError, match="symmetry_slides"):
        make_detector({**base, "symmetry_slides": -0.5})
