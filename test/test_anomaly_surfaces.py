"""Deviation inputs of the COSARAD network: template deviations, patch channels, augmentation,
model files and the detector path that computes them.
"""
import numpy as np
import pytest
import torch

from cosarad_ros.core.anomaly import AnomalyDetector
from cosarad_ros.core.anomaly.augment import AugmentConfig, augment_triplets, synthetic_defect
from cosarad_ros.core.anomaly.model import CosaradNet, load_model, save_model
from cosarad_ros.core.anomaly.patches import extract_patches, fps_order
from cosarad_ros.core.anomaly.surfaces import DEVIATION_CLIP, DEVIATION_GAIN, TemplateSurfaces, deviation_channel

torch.set_num_threads(2)


def _plane(n, seed, size=0.02):
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(-size, size, (n, 2)), rng.normal(scale=1e-6, size=n)]


def test_deviation_of_lifted_points_and_leave_one_out():
    templates = [_plane(4000, s) for s in range(3)]
    surf = TemplateSurfaces.build(templates)
    # the plane's own samples: within the tangential allowance, only the tiny normal noise counts
    assert np.median(surf.deviation(_plane(500, 10))) < 1e-5
    h = np.array([0.0002, 0.0005, -0.0012])
    probe = np.c_[[0.0, 0.005, -0.004], [0.0, -0.003, 0.002], h]
    # the normal distance, plus what of the straight-line distance exceeds the point spacing
    expected = np.hypot(np.abs(h), np.maximum(np.abs(h) - surf.allowance, 0.0))
    assert np.allclose(surf.deviation(probe), expected, atol=3e-5)
    # far beyond the edge of the plane: the straight-line excess counts
    assert surf.deviation(np.array([[0.03, 0.0, 0.0]]))[0] > 0.009
    loo = surf.leave_one_out()
    assert [len(d) for d in loo] == [4000] * 3
    # a template is never measured against itself (that would be exactly 0 everywhere)
    assert all(np.count_nonzero(d) > 3000 for d in loo)
    with pytest.raises(ValueError, match="at least 2"):
        TemplateSurfaces.build(templates[:1])


def test_deviation_channel_is_scale_free_and_clipped():
    c = deviation_channel(np.array([0.0, 0.0002, 0.01]), radius=0.008)
    assert c.shape == (3, 1) and c.dtype == np.float32
    assert c[0, 0] == 0 and np.isclose(c[1, 0], 0.0002 * 2 / 0.008 * DEVIATION_GAIN)
    assert c[2, 0] == DEVIATION_CLIP
    # twice the part, twice the radius, twice the deviation: the same channel
    assert np.isclose(deviation_channel(np.array([0.0004]), radius=0.016)[0, 0], c[1, 0])
    with pytest.raises(ValueError, match="radius"):
        deviation_channel(np.zeros(2), radius=0.0)


def test_patch_channels_travel_with_their_points():
    pts = _plane(3000, 1)
    feat = (pts[:, 0] > 0).astype(np.float32)  # 1 on one half of the plane
    ps = extract_patches(pts, np.array([[0.0, 0, 0], [0.01, 0, 0]]), radius=0.004, num_points=64,
                         point_features=feat)
    assert ps.patches.shape == (2, 64, 4)
    x, f = ps.patches[..., 0], ps.patches[..., 3]
    inside = np.abs(x) > 1e-3  # away from the dividing line (x = 0 in the first patch)
    assert np.all(f[0][inside[0]] == (x[0][inside[0]] > 0))  # the channel follows the point
    assert np.all(f[1] == 1)
    with pytest.raises(ValueError, match="point_features"):
        extract_patches(pts, np.zeros((1, 3)), radius=0.004, point_features=np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        extract_patches(pts, np.zeros((1, 3)), radius=0.004, point_features=np.full(len(pts), np.nan))


def test_augmentation_moves_coordinates_not_channels():
    rng = np.random.default_rng(0)
    p = np.c_[rng.uniform(-1.5, 1.5, (128, 2)), np.zeros(128), rng.uniform(0, 1, 128)].astype(np.float32)
    t = fps_order(np.stack([p, p, p]), 16)[None]
    out = augment_triplets(t, rng, AugmentConfig(crop_probability=0.0))
    assert out.shape == t.shape
    # rotated coordinates, the same multiset of channel values
    assert not np.allclose(out[0, 0, :, :3], t[0, 0, :, :3], atol=1e-2)
    assert np.allclose(np.sort(out[0, 0, :, 3]), np.sort(t[0, 0, :, 3]))
    # a synthetic bump raises the channel by the displacement
    flat = np.c_[rng.uniform(-1.8, 1.8, (512, 2)), np.zeros(512), np.zeros(512)]
    bumped = synthetic_defect(flat, rng, kind="bump", height=(0.3, 0.3), radius=(0.6, 0.6))
    moved = np.abs(bumped[:, 2])
    assert bumped.shape == (512, 4) and moved.max() > 0.25
    assert np.allclose(bumped[:, 3], np.minimum(DEVIATION_GAIN * moved, DEVIATION_CLIP), atol=1e-6)


def test_model_inputs_round_trip(tmp_path):
    net = CosaradNet("tiny", inputs="xyz+deviation").eval()
    x = torch.randn(2, 64, 4)
    assert net(x).shape == (2, 64)
    with pytest.raises(ValueError, match=r"\(B, N, 4\)"):
        net(torch.randn(2, 64, 3))
    path = str(tmp_path / "dev.safetensors")
    save_model(path, net)
    back, _ = load_model(path)
    assert back.inputs == "xyz+deviation"
    with torch.no_grad():
        assert torch.allclose(back(x), net(x), atol=1e-5)
    with pytest.raises(ValueError, match="unknown patch inputs"):
        CosaradNet("tiny", inputs="xyz+rgb")


def test_detector_feeds_deviation_channels_and_caches_them(tmp_path):
    from test_anomaly_detector import make_toy

    templates, bulged, mask, good = make_toy()
    model = str(tmp_path / "dev.safetensors")
    torch.manual_seed(0)
    save_model(model, CosaradNet("tiny", inputs="xyz+deviation"))
    cfg = {"method": "cosarad", "model": model, "num_patches": 48, "partial_scans": False,
           "registration_attempts": 1}
    det = AnomalyDetector.from_config(cfg)
    assert det.uses_deviation
    pb = det.fit("toy", templates, cache_dir=str(tmp_path / "banks"))
    assert len(pb.template_dev) == len(pb.templates)
    assert all(d.shape == (len(t),) for d, t in zip(pb.template_dev, pb.templates))
    s = det.score(bulged, "toy")
    assert s.point_scores.shape == (len(bulged),) and np.isfinite(s.object_score)
    det2 = AnomalyDetector.from_config(cfg)
    pb2 = det2.fit("toy", templates, cache_dir=str(tmp_path / "banks"))  # from the cache
    assert all(np.array_equal(a, b) for a, b in zip(pb.template_dev, pb2.template_dev))
    s2 = det2.score(bulged, "toy", transform=s.transform)
    assert np.allclose(s.point_scores, s2.point_scores)
