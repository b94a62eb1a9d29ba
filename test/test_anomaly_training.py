"""COSARAD training: miner, margin control, augmentations, a short run lowers the loss, resume."""
import json
import os

import numpy as np
import pytest
import torch

from cosarad_ros.core.anomaly.augment import AugmentConfig, augment_triplets, edge_crop
from cosarad_ros.core.anomaly.miner import MarginController, select_triplets, triplet_loss
from cosarad_ros.core.anomaly.patches import fps_order
from cosarad_ros.core.anomaly.training import TrainConfig, TripletSet, train

torch.set_num_threads(2)


def test_select_triplets_semi_hard_then_hard_then_easy():
    d_ap = np.full(8, 1.0)
    #            hard  hard  semi  easy  easy  easy  easy  easy   (margin 0.5)
    d_an = np.array([0.5, 0.9, 1.2, 1.6, 1.7, 2.0, 3.0, 1.55])
    r = select_triplets(d_ap, d_an, 0.5, min_yield=0.5)
    assert (r.n_hard, r.n_semi, r.n_easy) == (2, 1, 5)
    assert r.yield_ == pytest.approx(1 / 8)
    # semi-hard kept, then both hard ones, then the easy one closest to the margin
    assert sorted(r.selected.tolist()) == [0, 1, 2, 7]
    r2 = select_triplets(d_ap, d_an, 0.5, min_yield=0.9)
    assert len(r2.selected) == 8
    # enough semi-hard triplets: nothing else is added
    r3 = select_triplets(np.zeros(4), np.array([0.1, 0.2, 0.3, 5.0]), 1.0, min_yield=0.5)
    assert r3.selected.tolist() == [0, 1, 2] and r3.yield_ == 0.75


def test_margin_controller_keeps_yield_band():
    mc = MarginController(margin=0.6)
    assert mc.update(0.3) == pytest.approx(0.6 * 1.15)  # too few semi-hard: raise the margin
    m = mc.margin
    assert mc.update(0.6) == m  # inside [0.5, 0.75]: unchanged
    assert mc.update(0.9) == pytest.approx(m / 1.15)


def test_triplet_loss_hand_value():
    z = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]],    # d_ap 1, d_an 2 -> relu(1 - 2 + 0.5) = 0
                      [[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])   # d_ap 2, d_an 1 -> 1.5
    assert float(triplet_loss(z, 0.5)) == pytest.approx(0.75)


def _patch_triplets(n=24, pts=128, seed=0):
    """Triplets of disc patches (radius 2); negatives carry a bump in the middle."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 3, pts, 3), dtype=np.float32)
    for i in range(n):
        for k in range(3):
            r = 2.0 * np.sqrt(rng.random(pts))
            a = rng.random(pts) * 2 * np.pi
            x, y = r * np.cos(a), r * np.sin(a)
            z = 0.05 * rng.normal(size=pts)
            if k == 2:
                z = z + 0.8 * np.exp(-(x ** 2 + y ** 2) / 0.5)
            out[i, k] = np.stack([x, y, z], 1)
    return fps_order(out.reshape(-1, pts, 3), 16).reshape(n, 3, pts, 3)


def test_augmentation_magnitudes():
    rng = np.random.default_rng(0)
    t = _patch_triplets(4, 128).astype(np.float64)
    still = dict(own_rotation_deg=0.0, translation=0.0, noise_std=0.0, crop_probability=0.0, fps_prefix=0)
    same = augment_triplets(t, rng, AugmentConfig(shared_rotation_deg=0.0, **still))
    assert np.allclose(same, t, atol=1e-5)
    # the shared rotation turns the three patches of a triplet alike, within 90 degrees
    rot = augment_triplets(t, rng, AugmentConfig(**still)).astype(np.float64)
    for i in range(4):
        Rs = [np.linalg.lstsq(t[i, k], rot[i, k], rcond=None)[0] for k in range(3)]
        assert np.allclose(Rs[0], Rs[1], atol=1e-3) and np.allclose(Rs[0], Rs[2], atol=1e-3)
        angle = np.degrees(np.arccos(np.clip((np.trace(Rs[0]) - 1) / 2, -1, 1)))
        assert angle <= 90.0 + 0.5
    # independent +-3 degree rotations: patches of a triplet now differ slightly
    own = augment_triplets(t, rng, AugmentConfig(**{**still, "own_rotation_deg": 3.0}, shared_rotation_deg=0.0))
    for i in range(4):
        for k in range(3):
            R = np.linalg.lstsq(t[i, k], own[i, k].astype(np.float64), rcond=None)[0]
            assert np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))) <= 3.0 + 0.2
    # translation and noise stay within their bounds
    nz = augment_triplets(t, rng, AugmentConfig(shared_rotation_deg=0.0, own_rotation_deg=0.0,
                                                crop_probability=0.0, fps_prefix=0))
    d = nz - t
    assert np.abs(d.mean(axis=2)).max() < 0.03 + 0.002
    assert 0.004 < (d - d.mean(axis=2, keepdims=True)).std() < 0.006
    # edge crop: removed points lie in spheres (radius <= 0.15 R) centred beyond 0.8 R
    p = t[0, 0]
    kept = edge_crop(p, rng, n_spheres=2)
    gone = np.array([q for q in p if not (np.abs(kept - q).sum(1) < 1e-12).any()])
    assert 0 < len(gone) and np.linalg.norm(gone, axis=1).min() > 1.6 - 0.3 - 1e-9


def test_short_training_lowers_loss_and_resumes(tmp_path):
    ts = TripletSet(_patch_triplets(40, 128).astype(np.float16), np.array(["a"] * 20 + ["b"] * 20))
    cfg = TrainConfig(backbone="tiny", inputs="xyz", epochs=4, batch_size=10, lr=2e-3, val_fraction=0.0,
                      num_threads=2, augment=AugmentConfig(crop_probability=0.0))
    out = str(tmp_path / "run")
    res = train(ts, out, cfg, progress=False)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert res.classes_seen == ("a", "b")
    for f in ("model.safetensors", "checkpoint.pt", "curves.png", "history.json"):
        assert os.path.isfile(os.path.join(out, f))
    # the trained model (eval mode, fixed margin, no augmentation) has a lower triplet loss on
    # these triplets than the same network at its initialisation
    from cosarad_ros.core.anomaly.model import CosaradNet, load_model

    m, info = load_model(res.model_path)
    assert info.classes_seen == ("a", "b") and info.extra["epochs_run"] == 4
    torch.manual_seed(cfg.seed)
    init = CosaradNet("tiny").eval()
    x = torch.from_numpy(ts.patches.astype(np.float32)).reshape(-1, 128, 3)
    with torch.no_grad():
        before = float(triplet_loss(init(x, presorted=True).reshape(40, 3, -1), 0.5))
        after = float(triplet_loss(m(x, presorted=True).reshape(40, 3, -1), 0.5))
    assert after < before
    # an interrupted run (after 2 of 4 epochs) resumes where it stopped
    out2 = str(tmp_path / "interrupted")
    part = train(ts, out2, cfg, progress=False, max_steps=8)
    assert len(part.history) == 2
    cfg6 = TrainConfig(**{**cfg.__dict__, "epochs": 6})
    with pytest.raises(ValueError, match="different training config"):
        train(ts, out2, cfg6, resume=True, progress=False)
    done = train(ts, out2, cfg, resume=True, progress=False)
    assert [h["epoch"] for h in done.history] == [1, 2, 3, 4]
    assert [h["loss"] for h in done.history[:2]] == [h["loss"] for h in part.history]
    ck = torch.load(os.path.join(out2, "checkpoint.pt"), weights_only=True)
    assert ck["epoch"] == 3
    with open(os.path.join(out2, "history.json")) as f:
        assert len(json.load(f)) == 4


def _same_weights(model, state) -> bool:
    own = model.state_dict()
    return all(torch.allclose(own[k].float(), v.float(), atol=2e-3, rtol=2e-3) for k, v in state.items()
               if k in own and v.is_floating_point())


def test_select_writes_the_last_or_the_best_validation_epoch(tmp_path):
    from cosarad_ros.core.anomaly.model import load_model

    ts = TripletSet(_patch_triplets(40, 128).astype(np.float16), np.array(["a"] * 20 + ["b"] * 20))
    cfg = TrainConfig(backbone="tiny", inputs="xyz", epochs=3, batch_size=10, lr=2e-3, val_fraction=0.25,
                      num_threads=2, augment=AugmentConfig(crop_probability=0.0), half=False)
    with pytest.raises(ValueError, match="select"):
        train(ts, str(tmp_path / "bad"), TrainConfig(**{**cfg.__dict__, "select": "first"}), progress=False)
    out = str(tmp_path / "run")
    res = train(ts, out, TrainConfig(**{**cfg.__dict__, "select": "last"}), progress=False)
    ck = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    best = torch.load(os.path.join(out, "best_state.pt"), weights_only=True)
    m, info = load_model(res.model_path)
    assert info.extra["select"] == "last" and info.extra["exported_epoch"] == 3
    assert _same_weights(m, ck["model"])
    # the same finished run resumed with the default select="best" (resuming accepts a changed select)
    res_b = train(ts, out, cfg, resume=True, progress=False)
    mb, info_b = load_model(res_b.model_path)
    assert info_b.extra["exported_epoch"] == res_b.best_epoch
    assert _same_weights(mb, best)
    if res_b.best_epoch != 3:  # the two selections then differ
        assert not _same_weights(mb, ck["model"])


def test_synthetic_defects_change_the_patch_locally():
    from cosarad_ros.core.anomaly.augment import SYNTHETIC_DEFECTS, synthetic_defect

    rng = np.random.default_rng(4)
    flat = _patch_triplets(1, 512)[0, 1].astype(np.float64)
    for kind in SYNTHETIC_DEFECTS:
        d = synthetic_defect(flat, rng, kind=kind, height=(0.3, 0.3), radius=(0.6, 0.6))
        assert d.shape == flat.shape
        if kind == "hole":
            # points inside the hole are gone (the patch is resampled from the rest)
            gone = np.array([not (np.abs(d - q).sum(1) < 1e-9).any() for q in flat])
            assert gone.sum() > 10
        else:
            moved = np.linalg.norm(d - flat, axis=1)
            assert 0.25 < moved.max() <= 0.3 + 1e-9
            assert (moved > 1e-6).mean() < 0.6  # local: most of the patch is untouched
    with pytest.raises(ValueError):
        synthetic_defect(flat, rng, kind="dent2")


def test_crop_to_support_keeps_only_the_anchor_rows_near_the_positive():
    from cosarad_ros.core.anomaly.training import crop_to_support

    rng = np.random.default_rng(2)
    anchor = _patch_triplets(1, 512)[0, 0].astype(np.float32)
    positive = anchor[anchor[:, 0] > 0.5] + np.float32(0.01)  # a view that saw one side only
    cut = crop_to_support(anchor, positive, tolerance=0.5, rng=rng)
    assert cut.shape == anchor.shape and cut.dtype == anchor.dtype
    assert (cut[:, 0] > 0.5 - 0.5 - 1e-6).all()  # nothing farther than the tolerance from the view
    near = np.array([np.abs(anchor - r).sum(1).min() < 1e-6 for r in cut])
    assert near.all()  # rows of the anchor, resampled
    # the first 64 rows are a farthest-point sample (the layout the backbone expects)
    assert len(np.unique(cut[:64], axis=0)) == 64
    # a support that misses the patch leaves it whole instead of an empty anchor
    far = anchor + np.float32(10.0)
    assert np.array_equal(crop_to_support(anchor, far, tolerance=0.5, rng=rng), anchor)
    with pytest.raises(ValueError, match="tolerance"):
        crop_to_support(anchor, positive, tolerance=0.0, rng=rng)


def test_weak_triplet_anchors_are_cut_to_the_positive_support():
    from cosarad_ros.core.anomaly.dataset import toy_benchmark
    from cosarad_ros.core.anomaly.training import TripletConfig, build_triplets

    classes = toy_benchmark(1, seed=3, n_templates=3, n_good=2, n_bad=1, points=3000)
    base = dict(weak_per_class=40, weak_scan_positive=1.0, min_positive_coverage=0.1, centres_per_defect=0,
                inputs="xyz", seed=1)
    whole = build_triplets(classes, TripletConfig(**base), progress=False).patches.astype(np.float32)
    cut = build_triplets(classes, TripletConfig(**base, anchor_support_crop=1.0),
                         progress=False).patches.astype(np.float32)

    def reach(trip):  # farthest anchor row from the positive, patch units
        a, p = trip[0, :, :3], trip[1, :, :3]
        return np.sqrt(((a[:, None] - p[None]) ** 2).sum(-1)).min(1).max()

    # support_tolerance 0.25 x R = 0.5 patch units; the rest of the triplets have a template as the
    # positive (no good scan covers the location) or a sliver too small to cut the anchor to
    inside_cut = np.mean([reach(t) <= 0.5 + 1e-3 for t in cut])
    inside_whole = np.mean([reach(t) <= 0.5 + 1e-3 for t in whole])
    assert inside_cut >= 0.25 and inside_cut > inside_whole + 0.2, (inside_cut, inside_whole)
    with pytest.raises(ValueError, match="anchor_support_crop"):
        build_triplets(classes, TripletConfig(**base, anchor_support_crop=1.5), progress=False)


def _recorded(value):
    """A config value as the model file's JSON records it (tuples as lists, nested dataclasses as dicts)."""
    return json.loads(json.dumps(value, default=str))


def test_cosarad_train_defaults_are_the_api_defaults_and_the_shipped_recipe():
    """One training recipe: the options of ``cosarad train`` left at their defaults build exactly
    ``TripletConfig()`` / ``TrainConfig()``, and those are the recipe recorded in the shipped
    default model's file (its ``train_config``, ``triplet_config`` and command line).
    """
    import argparse
    import shlex
    from dataclasses import asdict, fields

    from safetensors import safe_open

    from cosarad_ros.cli import train as train_cli
    from cosarad_ros.core.anomaly.model import default_model_path
    from cosarad_ros.core.anomaly.training import TripletConfig

    parser = argparse.ArgumentParser(prog="cosarad train")
    train_cli.add_arguments(parser)
    assert train_cli.build_configs(parser.parse_args(["--out", "unused"])) == (TripletConfig(), TrainConfig())
    # options that set both configs
    assert TripletConfig().inputs == TrainConfig().inputs and TripletConfig().seed == TrainConfig().seed

    with safe_open(default_model_path(), framework="np") as f:
        extra = json.loads(f.metadata()["extra"])
    for cls, recorded in ((TripletConfig, extra["triplet_config"]), (TrainConfig, extra["train_config"])):
        ours = asdict(cls())
        assert set(recorded) <= set(ours), f"the shipped model records {cls.__name__} fields that no longer exist"
        assert {k: _recorded(ours[k]) for k in recorded} == recorded, cls.__name__
    # settings added after the shipped models were trained keep what those runs did: whole template
    # patches as anchors, the best-validation epoch written as the model (TRAINING.md)
    assert {f.name for f in fields(TripletConfig)} - set(extra["triplet_config"]) == {"anchor_support_crop",
                                                                                     "support_tolerance"}
    assert TripletConfig().anchor_support_crop == 0.0
    assert set(asdict(TrainConfig())) - set(extra["train_config"]) == {"select"}
    assert TrainConfig().select == "best"

    # the command line recorded in the file builds the same configs as the bare defaults
    argv = shlex.split(extra["command"])
    assert argv[:2] == ["cosarad", "train"]
    assert train_cli.build_configs(parser.parse_args(argv[2:])) == (TripletConfig(), TrainConfig())
    # the help prints the defaults it takes from the dataclasses
    text = parser.format_help()
    assert f"(default: {TripletConfig().weak_per_class})" in text and f"(default: {TrainConfig().backbone})" in text
