"""The COSARAD network: PointNet++ MSG ops, the head, save/load without pickles."""
import os

import numpy as np
import pytest
import torch

from cosarad_ros.core.anomaly.model import CosaradNet, ModelInfo, load_model, save_model
from cosarad_ros.core.anomaly.patches import extract_patches, farthest_point_sampling, fps_order
from cosarad_ros.core.anomaly.pointnet2 import ball_query, farthest_point_sample

torch.set_num_threads(1)


def _sphere_patches(n_patches=6, n=512, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n_patches, n, 3))
    p = 2.0 * p / np.linalg.norm(p, axis=-1, keepdims=True) * rng.random((n_patches, n, 1)) ** (1 / 3)
    return p.astype(np.float32)


def test_farthest_point_sampling_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(300, 3))
    idx = farthest_point_sampling(pts, 20, start=0)
    tidx = farthest_point_sample(torch.from_numpy(pts).unsqueeze(0), 20)[0].numpy()
    assert idx.tolist() == tidx.tolist()
    # every new sample is the farthest from those already chosen
    for k in range(1, 20):
        d = np.linalg.norm(pts[:, None] - pts[idx[:k]][None], axis=-1).min(1)
        assert d[idx[k]] == pytest.approx(d.max())


def test_fps_order_is_a_permutation_with_fps_prefix():
    p = _sphere_patches(3, 128)
    o = fps_order(p, 16)
    for a, b in zip(p, o):
        assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))
        start = int(np.argmin((a ** 2).sum(1)))
        ref = farthest_point_sampling(a, 16, start=start)
        assert np.allclose(b[:16], a[ref])


def test_ball_query_stays_inside_radius():
    rng = np.random.default_rng(1)
    xyz = torch.from_numpy(rng.normal(size=(2, 200, 3)).astype(np.float32))
    centres = xyz[:, :10]
    idx = ball_query(0.5, 16, xyz, centres)
    assert idx.shape == (2, 10, 16)
    g = torch.gather(xyz, 1, idx.reshape(2, -1, 1).expand(-1, -1, 3)).reshape(2, 10, 16, 3)
    assert ((g - centres.unsqueeze(2)).norm(dim=-1) <= 0.5 + 1e-6).all()


def test_head_architecture_and_unit_features():
    m = CosaradNet("tiny", feature_dim=64).eval()
    layers = list(m.head)
    assert isinstance(layers[0], torch.nn.Dropout) and layers[0].p == 0.4
    assert isinstance(layers[1], torch.nn.BatchNorm1d) and layers[1].num_features == m.backbone.out_dim
    assert isinstance(layers[3], torch.nn.Linear) and (layers[3].out_features == 256)
    assert isinstance(layers[6], torch.nn.Linear) and layers[6].out_features == 64
    x = torch.from_numpy(fps_order(_sphere_patches(), 16))
    with torch.no_grad():
        z = m(x, presorted=True)
    assert z.shape == (6, 64)
    assert torch.allclose(z.norm(dim=1), torch.ones(6), atol=1e-5)
    # FPS-ordered input: taking centroids as a prefix equals sampling them
    with torch.no_grad():
        assert torch.allclose(m(x), z, atol=1e-5)
    assert CosaradNet("cpu").backbone.out_dim == 1024  # h in R^1024 for the real presets
    with pytest.raises(ValueError):
        CosaradNet("nope")


def test_folded_batchnorm_gives_the_same_features():
    """The inference copy with batch norm folded into the linear layers matches the model in eval
    mode (non-trivial running statistics from a few training-mode passes), and the model itself
    is left as it was.
    """
    from cosarad_ros.core.anomaly.model import fold_batchnorm

    torch.manual_seed(0)
    m = CosaradNet("cpu", inputs="xyz+deviation")
    x = torch.from_numpy(fps_order(np.concatenate([_sphere_patches(), _sphere_patches()[:, :, :1]], axis=2), 64))
    with torch.no_grad():
        for _ in range(3):
            m(x * 1.3 + 0.1, presorted=True)  # training mode: moves the running statistics
    m.eval()
    f = fold_batchnorm(m)
    assert not any(isinstance(k, torch.nn.BatchNorm1d) for k in f.backbone.modules())
    assert sum(isinstance(k, torch.nn.BatchNorm1d) for k in m.modules()) > 10  # original untouched
    with torch.no_grad():
        torch.testing.assert_close(f(x, presorted=True), m(x, presorted=True), atol=1e-5, rtol=1e-4)


def test_save_load_round_trip(tmp_path):
    m = CosaradNet("tiny").eval()
    x = torch.from_numpy(fps_order(_sphere_patches(), 16))
    path = str(tmp_path / "m.safetensors")
    save_model(path, m, ModelInfo(classes_seen=("a", "b"), extra={"note": 1}))
    m2, info = load_model(path)
    assert info.classes_seen == ("a", "b") and info.extra["note"] == 1
    with torch.no_grad():
        assert torch.equal(m(x, presorted=True), m2(x, presorted=True))
    # float16 storage: half the size, nearly the same features
    path16 = str(tmp_path / "m16.safetensors")
    save_model(path16, m, half=True)
    m3, _ = load_model(path16)
    with torch.no_grad():
        assert torch.allclose(m(x, presorted=True), m3(x, presorted=True), atol=2e-2)
    assert os.path.getsize(path16) < 0.6 * os.path.getsize(path)
    # the file is plain safetensors: no pickle opcodes
    with open(path, "rb") as f:
        assert b"\x80\x04\x95" not in f.read(4096)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ValueError):
        load_model(str(bad))
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a COSARAD model"):
        load_model(str(other))


def test_extract_patches_scale_and_min_points():
    rng = np.random.default_rng(2)
    pts = rng.uniform(-1, 1, size=(5000, 3)) * [1, 1, 0.01]
    centres = np.array([[0.0, 0, 0], [0.3, 0, 0], [0, 0.3, 0], [-0.3, 0, 0], [1.0, 1.0, 0], [5.0, 5.0, 0]])
    ps = extract_patches(pts, centres, radius=0.2, num_points=64, min_points="partial", rng=0)
    assert ps.scale == pytest.approx(10.0)
    assert ps.patches.shape == (6, 64, 3)
    assert np.abs(ps.patches[0]).max() <= 2.0 + 1e-5  # R maps to 2
    assert ps.counts[5] == 0 and not ps.valid[5]
    # the corner patch holds about a quarter of a full one: below 0.5 x mean -> skipped
    assert ps.counts[4] < 0.5 * ps.counts[:5].mean() and not ps.valid[4] and ps.valid[:4].all()
    full = extract_patches(pts, centres, radius=0.2, num_points=64, min_points="full", rng=0)
    assert full.valid[:5].all()


def test_extract_patches_resampling_follows_point_keys():
    """A patch keeps its lowest-key points (all of them, repeated evenly, when it has fewer than
    asked), so with fixed keys it depends only on the points inside it: cutting a subset of the
    locations, or removing points away from a location, leaves that patch unchanged.
    """
    rng = np.random.default_rng(5)
    pts = rng.uniform(-1, 1, size=(20000, 3)) * [1, 1, 0.01]
    keys = rng.random(len(pts))
    centres = np.array([[0.0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [-0.5, -0.5, 0]])
    a = extract_patches(pts, centres, radius=0.2, num_points=64, point_keys=keys, fps_prefix=0)
    inside = np.nonzero(np.linalg.norm(pts - centres[0], axis=1) <= 0.2)[0]
    lowest = inside[np.argsort(keys[inside])[:64]]
    np.testing.assert_allclose(a.patches[0], (pts[lowest] - centres[0]) * 10.0, atol=1e-6)
    b = extract_patches(pts, centres[[2, 0]], radius=0.2, num_points=64, point_keys=keys, fps_prefix=0)
    np.testing.assert_array_equal(a.patches[[2, 0]], b.patches)
    far = np.linalg.norm(pts[:, :2] - [0.5, 0], axis=1) > 0.3  # drop points away from location 0
    c = extract_patches(pts[far], centres[:1], radius=0.2, num_points=64, point_keys=keys[far], fps_prefix=0)
    np.testing.assert_array_equal(a.patches[0], c.patches[0])
    # a patch with fewer points than asked repeats each of them once or twice
    few = extract_patches(pts[inside[:40]], centres[:1], radius=0.2, num_points=64, point_keys=keys[inside[:40]],
                          fps_prefix=0)
    _, reps = np.unique(few.patches[0], axis=0, return_counts=True)
    assert len(reps) == 40 and set(reps) == {1, 2}
    # keys drawn from rng: deterministic per seed, different across seeds
    s0 = extract_patches(pts, centres, radius=0.2, num_points=64, rng=0)
    np.testing.assert_array_equal(s0.patches, extract_patches(pts, centres, radius=0.2, num_points=64, rng=0).patches)
    assert not np.array_equal(s0.patches, extract_patches(pts, centres, radius=0.2, num_points=64, rng=1).patches)
    with pytest.raises(ValueError, match="point_keys"):
        extract_patches(pts, centres, radius=0.2, point_keys=keys[:10])
