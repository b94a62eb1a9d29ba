"""Training of the COSARAD feature extractor: triplet construction and the training loop.

Triplets (COSARAD, Tarvo, Wan, Chen): *anchor* a good patch, *positive* another good patch and
*negative* a defective patch, all cut at the same location of registered (good, good, bad)
clouds; the locations are chosen by farthest point sampling inside the defect regions of the
defective scans (their ground-truth masks). Here the anchor is always a template patch (full
360-degree scan) and the positive a patch of a good *test* scan (a partial view) when one covers
the location, another template otherwise -- the same comparison the detector makes at inference
(test scan vs. templates), so the network also learns to ignore what partial views hide.

Loop: triplet loss with an adaptive margin (start 0.6, kept so the yield stays in [0.5, 0.75]),
the EMA miner of :mod:`.miner` (semi-hard, topped up with hard then easy to >= 0.5 of a batch),
augmentations of :mod:`.augment`, Adam (lr 5e-4) with a cosine schedule. Checkpoints after
every epoch (``checkpoint.pt``, loadable with ``torch.load(weights_only=True)``), ``--resume``
continues from them; curves of loss / yield / margin / validation triplet accuracy go to PNG.
The best-validation epoch's weights (or, with ``select="last"``, the last epoch's) are written as
the model file (safetensors, see :mod:`.model`).

The defaults of :class:`TripletConfig` and :class:`TrainConfig` are the recipe of the shipped
models (``cosarad_ros/models/TRAINING.md``; their files record it) and ``cosarad train`` takes its
defaults from them.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from .augment import AugmentConfig, augment_triplets
from .dataset import ClassData, register_class
from .patches import PATCH_UNITS_RADIUS, extract_patches, farthest_point_sampling, resolve_patch_radius

__all__ = ["TripletConfig", "TripletSet", "build_triplets", "crop_to_support", "TrainConfig", "TrainResult", "train",
           "plot_curves", "export_model"]


@dataclass(frozen=True)
class TripletConfig:
    """How triplets are cut.

    Attributes:
        patch_radius_rel: ``R`` as a fraction of the reference template's box diagonal (the
            detector's default rule, so training and inference patches match).
        patch_points: points per patch.
        centres_per_defect: FPS centres inside each defect region.
        combos_per_centre: (anchor, positive) pairs drawn per centre.
        min_defect_points: defective scans whose visible defect has fewer points are skipped.
        registration_attempts: attempts of each scan's registration.
        use_poses: align clouds with the benchmark's ground-truth poses when it records them
            (synthetic data) instead of registering them.
        weak_per_class: triplets of the *weak* objective per class (0: only the labelled
            defects' triplets): at random locations (FPS on the reference), anchor a template
            patch, positive a good-scan patch, negative the same good-scan patch with a synthetic
            defect (:func:`.augment.synthetic_defect`). They teach sampling / coverage invariance
            over every geometry of the part, not only where the labelled defects are (the
            semi-supervised "weak" objective of the COSARAD authors).
        weak_locations: FPS locations the weak triplets are drawn from.
        weak_scan_positive: share of weak triplets whose positive is a good partial scan's patch
            when one covers the location (the rest use another template's patch, which isolates
            sampling invariance).
        min_positive_coverage: a good scan's patch can be a positive when it holds at least this
            share of the templates' median point count at that location (low, so the network also
            learns that a view cropping a patch to a sliver is not a defect).
        anchor_support_crop: share of weak triplets with a good-scan positive whose anchor (the
            template patch) is cut to the positive's support: its points within
            ``support_tolerance x R`` of a positive point, resampled to ``patch_points``. The
            detector compares a test patch with templates cut exactly so (``view_matching``),
            so these triplets train the comparison inference makes (0: the anchor
            is the whole template patch, as in the shipped models).
        support_tolerance: the cut's tolerance in patch radii (the detector's default, 0.25).
        inputs: ``"xyz+deviation"`` (each point also carries its deviation from the class's good
            templates, :mod:`.surfaces`; templates' own points leave-one-out; the shipped models)
            or ``"xyz"`` (coordinates only, the paper). Must match the model's ``inputs``.
        seed: randomness of centre jitter, pair choice and resampling.
    """

    patch_radius_rel: float = 0.06
    patch_points: int = 512
    centres_per_defect: int = 6
    combos_per_centre: int = 2
    min_defect_points: int = 5
    registration_attempts: int = 3
    use_poses: bool = True
    weak_per_class: int = 500
    weak_locations: int = 96
    weak_scan_positive: float = 1.0
    min_positive_coverage: float = 0.1
    anchor_support_crop: float = 0.0
    support_tolerance: float = 0.25
    inputs: str = "xyz+deviation"
    seed: int = 0


@dataclass(frozen=True)
class TripletSet:
    """Triplets ``patches (T, 3, n, 3 + C)`` float16 (anchor, positive, negative; patch units,
    ``C`` input channels after the coordinates) and the class of each (``classes (T,)``).
    """

    patches: np.ndarray
    classes: np.ndarray

    @property
    def inputs(self) -> str:
        """The patch inputs these triplets carry (see :data:`.model.INPUT_CHANNELS`)."""
        from .model import INPUT_CHANNELS

        c = int(self.patches.shape[-1]) - 3
        for name, k in INPUT_CHANNELS.items():
            if k == c:
                return name
        raise ValueError(f"triplet patches have {c} channels after x, y, z; no known input kind has that")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.classes.tolist())))

    def __len__(self) -> int:
        return len(self.patches)

    def subset(self, idx) -> "TripletSet":
        return TripletSet(self.patches[idx], self.classes[idx])

    def save(self, path: str) -> None:
        np.savez(path, patches=self.patches, classes=self.classes.astype(str))

    @classmethod
    def load(cls, path: str) -> "TripletSet":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["patches"], z["classes"])


def build_triplets(classes: list[ClassData], cfg: TripletConfig = TripletConfig(), *,
                   cache_dir: str | None = None, progress: bool = True) -> TripletSet:
    """Cut training triplets from labelled classes (templates + good and defective test scans).

    Raises:
        ValueError: no class yields any triplet (no defective scans with visible defects).
    """
    from tqdm.auto import tqdm

    from .model import INPUT_CHANNELS

    if cfg.inputs not in INPUT_CHANNELS:
        raise ValueError(f"unknown patch inputs {cfg.inputs!r}; choose from {sorted(INPUT_CHANNELS)}")
    if not 0.0 <= cfg.anchor_support_crop <= 1.0:
        raise ValueError(f"anchor_support_crop must be in [0, 1], got {cfg.anchor_support_crop}")
    if not (np.isfinite(cfg.support_tolerance) and cfg.support_tolerance > 0):
        raise ValueError(f"support_tolerance must be > 0, got {cfg.support_tolerance}")
    rng = np.random.default_rng(cfg.seed)
    all_p, all_c = [], []
    for cls in tqdm(classes, desc="triplets", disable=not progress):
        has_poses = cls.template_poses is not None and all(t.pose is not None for t in cls.tests)
        rc = register_class(cls, attempts=cfg.registration_attempts, seed=cfg.seed, cache_dir=cache_dir,
                            progress=progress, use_poses=cfg.use_poses and has_poses)
        ref = rc.templates[0]
        R = resolve_patch_radius(ref, patch_radius_rel=cfg.patch_radius_rel)
        # centres: FPS inside each visible defect region of the well-registered defective scans
        bad = []
        for i, s in enumerate(cls.tests):
            if (cfg.centres_per_defect > 0 and s.is_anomalous and rc.test_ok[i]
                    and s.labels.sum() >= cfg.min_defect_points):
                pts = rc.test_points(i)
                d = pts[s.labels]
                c = d[farthest_point_sampling(d, cfg.centres_per_defect, start=int(rng.integers(len(d))))]
                bad.append((pts, c))
        templates = [t for t, ok in zip(rc.templates, rc.template_ok) if ok]
        good_scans = [rc.test_points(i) for i, s in enumerate(cls.tests) if not s.is_anomalous and rc.test_ok[i]]
        chan = _channels(cfg.inputs, templates, R)
        t_feats = [chan(t, g) for g, t in enumerate(templates)]
        g_feats = [chan(g) for g in good_scans]
        if cfg.weak_per_class > 0 and len(templates) >= 1:
            for trip in _weak_triplets(ref, R, templates, good_scans, cfg, rng, t_feats, g_feats):
                all_p.append(trip)
                all_c.append(cls.name)
        if not bad:
            continue
        centres = np.concatenate([c for _, c in bad])
        owner = np.concatenate([np.full(len(c), k) for k, (_, c) in enumerate(bad)])

        def cut(points, feats):
            return extract_patches(points, centres, radius=R, num_points=cfg.patch_points, min_points=0,
                                   point_features=feats, rng=rng)

        tp = [cut(t, f) for t, f in zip(templates, t_feats)]
        gp = [cut(g, f) for g, f in zip(good_scans, g_feats)]
        neg = np.zeros((len(centres), cfg.patch_points, 3 + INPUT_CHANNELS[cfg.inputs]), dtype=np.float32)
        neg_ok = np.zeros(len(centres), dtype=bool)
        for k, (pts, _) in enumerate(bad):
            sel = owner == k
            ps = extract_patches(pts, centres[sel], radius=R, num_points=cfg.patch_points, min_points=0,
                                 point_features=chan(pts), rng=rng)
            neg[sel] = ps.patches
            neg_ok[sel] = ps.counts >= 16
        for j in np.nonzero(neg_ok)[0]:
            full = [t for t in tp if t.counts[j] >= 16]
            if not full:
                continue
            typical = np.median([t.counts[j] for t in full])
            scans = [g for g in gp if g.counts[j] >= cfg.min_positive_coverage * typical]
            for _ in range(cfg.combos_per_centre):
                ai = int(rng.integers(len(full)))
                a = full[ai].patches[j]
                if scans:
                    p = scans[int(rng.integers(len(scans)))].patches[j]
                elif len(full) > 1:
                    p = full[(ai + 1 + int(rng.integers(len(full) - 1))) % len(full)].patches[j]
                else:
                    continue
                all_p.append(np.stack([a, p, neg[j]]))
                all_c.append(cls.name)
    if not all_p:
        raise ValueError("no training triplets: the classes have no registered defective scans with visible defects")
    return TripletSet(np.stack(all_p).astype(np.float16), np.asarray(all_c))


def _channels(inputs: str, templates: list, R: float):
    """``chan(points, template_index=None) -> (N, C) | None``: the per-point input channels of
    ``inputs`` (``None`` for bare coordinates; the deviation from the templates, leave-one-out for
    a template's own points, for ``"xyz+deviation"``).
    """
    if inputs == "xyz":
        return lambda points, g=None: None
    from .surfaces import TemplateSurfaces, deviation_channel

    if len(templates) < 2:
        raise ValueError("deviation inputs need at least 2 registered templates per class")
    surf = TemplateSurfaces.build(templates)
    loo = surf.leave_one_out()

    def chan(points, g=None):
        dev = loo[g] if g is not None else surf.deviation(points)
        return deviation_channel(dev, R)

    return chan


def crop_to_support(patch: np.ndarray, support: np.ndarray, *, tolerance: float,
                    rng: np.random.Generator, min_points: int = 16) -> np.ndarray:
    """``patch (n, 3 + C)`` cut to its rows within ``tolerance`` (patch units) of a row of
    ``support (m, 3 + C)``, resampled to ``n`` rows (with replacement) in farthest-point order.

    The training-side twin of the detector's support crop (``view_matching``), applied
    to resampled patches of one location (both in the same patch frame). Returns ``patch``
    unchanged when fewer than ``min_points`` distinct rows survive the cut.
    """
    from .patches import fps_order

    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    uniq = np.unique(patch, axis=0)
    d, _ = cKDTree(support[:, :3]).query(uniq[:, :3], k=1, distance_upper_bound=tolerance)
    keep = uniq[np.isfinite(d)]
    if len(keep) < min_points:
        return patch
    n = len(patch)
    pick = rng.choice(len(keep), n, replace=len(keep) < n)
    return fps_order(keep[pick][None].astype(patch.dtype), 64)[0]


def _weak_triplets(ref, R, templates, good_scans, cfg: TripletConfig, rng, t_feats=None, g_feats=None):
    """Synthetic-defect triplets at FPS locations of the reference (see ``weak_per_class``);
    ``t_feats`` / ``g_feats``: per-point input channels of the templates / good scans (or None).
    """
    from .augment import synthetic_defect
    from .patches import fps_order

    sub = ref if len(ref) <= 20_000 else ref[rng.choice(len(ref), 20_000, replace=False)]
    centres = sub[farthest_point_sampling(sub, cfg.weak_locations, start=int(rng.integers(len(sub))))]

    def cut(points, feats):
        return extract_patches(points, centres, radius=R, num_points=cfg.patch_points, min_points=0,
                               point_features=feats, rng=rng)

    tp = [cut(t, f) for t, f in zip(templates, t_feats or [None] * len(templates))]
    gp = [cut(g, f) for g, f in zip(good_scans, g_feats or [None] * len(good_scans))]
    out = []
    for _ in range(cfg.weak_per_class):
        j = int(rng.integers(len(centres)))
        full = [t for t in tp if t.counts[j] >= 16]
        if not full:
            continue
        typical = np.median([t.counts[j] for t in full])
        scans = [g for g in gp if g.counts[j] >= cfg.min_positive_coverage * typical]
        ai = int(rng.integers(len(full)))
        other = full[(ai + 1 + int(rng.integers(len(full) - 1))) % len(full)].patches[j] if len(full) > 1 else None
        a = full[ai].patches[j]
        if scans and (other is None or rng.random() < cfg.weak_scan_positive):
            p = scans[int(rng.integers(len(scans)))].patches[j]
            if cfg.anchor_support_crop > 0 and rng.random() < cfg.anchor_support_crop:
                a = crop_to_support(a, p, tolerance=cfg.support_tolerance * PATCH_UNITS_RADIUS, rng=rng)
        elif other is not None:
            p = other
        else:
            continue
        n = synthetic_defect(p, rng).astype(np.float32)
        n = fps_order(n[None], 64)[0]
        out.append(np.stack([a, p, n]))
    return out


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (see the module docstring for where they come from).

    Attributes:
        backbone: PointNet++ preset: ``"cpu"`` (sized for a 2-core CPU, the shipped models),
            ``"small"``, ``"paper"`` (the paper's size) or ``"tiny"`` (unit tests).
        feature_dim, hidden_dim, dropout: the contrastive head.
        inputs: patch inputs of the model (``"xyz+deviation"``, the shipped models, or ``"xyz"``);
            must match the triplets (:attr:`TripletSet.inputs`, :attr:`TripletConfig.inputs`).
        epochs, batch_size: triplets per step before mining.
        lr: Adam learning rate (cosine-annealed to 0 over the run).
        margin: initial triplet margin; ``yield_range`` is the band the margin keeps the yield in.
        min_yield: the miner tops a batch up to this fraction.
        ema_momentum: momentum of the mining network.
        val_fraction: triplets held out for the validation triplet accuracy (progress, and the
            epoch ``select="best"`` writes).
        select: which weights become the model file: ``"best"`` (the epoch of the best validation
            triplet accuracy; the shipped models) or ``"last"`` (the end of the cosine schedule).
            Neither tracks held-out detection well: validation accuracy on the training classes
            sits at 0.94-0.96 from epoch 2 on (``CHANGELOG.md``, 2026-12-05).
        augment: augmentation magnitudes.
        num_threads: torch threads (CPU).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        seed: initialisation, batching and augmentation.
        half: store the final weights as float16 (half the file size).
    """

    backbone: str = "cpu"
    feature_dim: int = 64
    hidden_dim: int = 256
    dropout: float = 0.4
    inputs: str = "xyz+deviation"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    margin: float = 0.6
    yield_range: tuple[float, float] = (0.5, 0.75)
    min_yield: float = 0.5
    ema_momentum: float = 0.99
    val_fraction: float = 0.1
    select: str = "best"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_threads: int = 2
    device: str = "cpu"
    seed: int = 0
    half: bool = True


@dataclass(frozen=True)
class TrainResult:
    """Where the model went and how training went (one dict per epoch in ``history``)."""

    model_path: str
    history: list
    wall_s: float
    classes_seen: tuple
    best_epoch: int


def plot_curves(history: list[dict], path: str, step_losses: list[float] | None = None) -> None:
    """Loss, yield, margin and validation accuracy per epoch as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    if step_losses:
        ax[0].plot(np.linspace(0.5, len(history) + 0.5, len(step_losses)), step_losses, lw=0.5, alpha=0.4,
                   label="step")
    ax[0].plot(ep, [h["loss"] for h in history], "o-", label="epoch mean")
    ax[0].set_title("triplet loss")
    ax[0].legend()
    ax[1].plot(ep, [h["yield"] for h in history], "o-")
    ax[1].axhspan(0.5, 0.75, color="g", alpha=0.1)
    ax[1].set_title("yield (semi-hard fraction)")
    ax[2].plot(ep, [h["margin"] for h in history], "o-")
    ax[2].set_title("margin (used in epoch)")
    ax[3].plot(ep, [h["val_accuracy"] for h in history], "o-", label="d_an > d_ap")
    ax[3].plot(ep, [h["val_margin_accuracy"] for h in history], "s-", label="d_an > d_ap + 0.1")
    ax[3].set_title("validation triplets")
    ax[3].legend()
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _evaluate(model, val: np.ndarray, device, batch: int = 64) -> tuple[float, float]:
    import torch

    if len(val) == 0:
        return float("nan"), float("nan")
    model.eval()
    gaps = []
    with torch.no_grad():
        for s in range(0, len(val), batch):
            x = torch.from_numpy(val[s:s + batch].astype(np.float32)).to(device)
            B = x.shape[0]
            z = model(x.reshape(B * 3, *x.shape[2:]), presorted=True).reshape(B, 3, -1)
            gaps.append(((z[:, 0] - z[:, 2]).norm(dim=-1) - (z[:, 0] - z[:, 1]).norm(dim=-1)).cpu().numpy())
    g = np.concatenate(gaps)
    return float((g > 0).mean()), float((g > 0.1).mean())


def train(triplets: TripletSet, out_dir: str, cfg: TrainConfig = TrainConfig(), *, resume: bool = False,
          progress: bool = True, info_extra: dict | None = None, max_steps: int | None = None,
          model_name: str = "model.safetensors") -> TrainResult:
    """Train the COSARAD extractor on ``triplets``; write checkpoints, curves and the model to ``out_dir``.

    Args:
        triplets: from :func:`build_triplets`.
        out_dir: output folder (``checkpoint.pt``, ``curves.png``, ``history.json``, the model).
        cfg: hyper-parameters.
        resume: continue from ``out_dir/checkpoint.pt`` (the config must match).
        progress: tqdm bars.
        info_extra: extra provenance stored in the model file (e.g. the command line).
        max_steps: stop after this many optimiser steps in total (smoke tests).
        model_name: file name of the model in ``out_dir``.

    Returns:
        :class:`TrainResult`.
    """
    import torch
    from tqdm.auto import tqdm

    from .miner import EmaMiner, MarginController, select_triplets, triplet_loss
    from .model import CosaradNet, ModelInfo, save_model

    if len(triplets) < 4:
        raise ValueError(f"need at least 4 triplets to train, got {len(triplets)}")
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ValueError("epochs >= 1 and batch_size >= 2 required")
    if cfg.select not in ("best", "last"):
        raise ValueError(f"select must be 'best' or 'last', got {cfg.select!r}")
    if triplets.inputs != cfg.inputs:
        raise ValueError(f"the triplets carry {triplets.inputs!r} patches but the model is configured for "
                         f"{cfg.inputs!r} (set both the triplets' and the training's inputs alike)")
    os.makedirs(out_dir, exist_ok=True)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    if device.type == "cpu" and cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(triplets))
    n_val = int(round(cfg.val_fraction * len(triplets))) if len(triplets) >= 20 else 0
    val = triplets.patches[perm[:n_val]]
    tr_idx = perm[n_val:]
    steps_per_epoch = int(np.ceil(len(tr_idx) / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs

    model = CosaradNet(cfg.backbone, feature_dim=cfg.feature_dim, hidden_dim=cfg.hidden_dim,
                       dropout=cfg.dropout, inputs=cfg.inputs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    miner = EmaMiner(model, momentum=cfg.ema_momentum)
    margin = MarginController(margin=cfg.margin, low=cfg.yield_range[0], high=cfg.yield_range[1])
    history: list[dict] = []
    step_losses: list[float] = []
    start_epoch = 0
    best = (-1.0, -1)
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    cfg_json = json.dumps(asdict(cfg), sort_keys=True, default=str)
    if resume:
        if not os.path.isfile(ckpt_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        if _comparable(ck.get("config")) != _comparable(cfg_json):
            raise ValueError("--resume: the checkpoint was written with a different training config")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        miner.load_state_dict(ck["miner"])
        margin.margin = float(ck["margin"])
        history = list(ck["history"])
        step_losses = list(ck["step_losses"])
        start_epoch = int(ck["epoch"]) + 1
        best = (float(ck["best_acc"]), int(ck["best_epoch"]))
    t_start = time.perf_counter() - (history[-1]["wall_s"] if history else 0.0)
    steps_done = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        erng = np.random.default_rng([cfg.seed, epoch])
        order = erng.permutation(tr_idx)
        model.train()
        m = margin.margin
        losses, yields, n_sel = [], [], 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for s in bar:
            if max_steps is not None and steps_done >= max_steps:
                break
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            batch = augment_triplets(triplets.patches[idx].astype(np.float32), erng, cfg.augment)
            x = torch.from_numpy(batch).to(device)
            d_ap, d_an = miner.distances(x)
            mined = select_triplets(d_ap, d_an, m, min_yield=cfg.min_yield)
            sel = torch.from_numpy(mined.selected).to(device)
            xs = x[sel]
            K = xs.shape[0]
            z = model(xs.reshape(K * 3, *xs.shape[2:]), presorted=True).reshape(K, 3, -1)
            loss = triplet_loss(z, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            miner.update(model)
            steps_done += 1
            lv = float(loss.detach())
            losses.append(lv)
            step_losses.append(lv)
            yields.append(mined.yield_)
            n_sel += K
            bar.set_postfix(loss=f"{lv:.3f}", yld=f"{mined.yield_:.2f}", m=f"{m:.2f}")
        bar.close()
        if not losses:
            break
        acc, acc_m = _evaluate(model, val, device)
        ey = float(np.mean(yields))
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "yield": ey, "margin": m,
               "selected_fraction": n_sel / max(1, len(losses) * cfg.batch_size), "val_accuracy": acc,
               "val_margin_accuracy": acc_m, "lr": float(sched.get_last_lr()[0]), "steps": steps_done,
               "wall_s": time.perf_counter() - t_start}
        history.append(rec)
        margin.update(ey)
        score = acc if np.isfinite(acc) else -rec["loss"]
        if score >= best[0]:
            best = (score, epoch + 1)
            torch.save(model.state_dict(), os.path.join(out_dir, "best_state.pt"))
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "miner": miner.state_dict(), "margin": margin.margin, "epoch": epoch, "history": history,
                    "step_losses": step_losses, "config": cfg_json, "best_acc": best[0], "best_epoch": best[1]},
                   ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)
        with open(os.path.join(out_dir, "history.json"), "w") as f:
            json.dump(history, f, indent=1)
        plot_curves(history, os.path.join(out_dir, "curves.png"), step_losses)
        if progress:
            tqdm.write(f"epoch {epoch + 1}: loss {rec['loss']:.4f} yield {ey:.2f} margin {m:.3f} "
                       f"val acc {acc:.3f} / {acc_m:.3f} ({rec['wall_s']:.0f} s)")
    wall = time.perf_counter() - t_start
    best_path = os.path.join(out_dir, "best_state.pt")
    if cfg.select == "best" and os.path.isfile(best_path):
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True))
    info = ModelInfo(classes_seen=triplets.class_names, patch_points=int(triplets.patches.shape[2]),
                     extra={"train_config": json.loads(cfg_json), "triplets": len(triplets), "val_triplets": n_val,
                            "best_epoch": best[1], "select": cfg.select,
                            "exported_epoch": best[1] if cfg.select == "best" else len(history),
                            "epochs_run": len(history), "wall_s": round(wall, 1),
                            "device": str(device), "torch_threads": torch.get_num_threads(),
                            "final": history[-1] if history else {}, **(info_extra or {})})
    model_path = os.path.join(out_dir, model_name)
    save_model(model_path, model.cpu(), info, half=cfg.half)
    return TrainResult(model_path, history, wall, triplets.class_names, best[1])


def _comparable(cfg_json: str | None) -> dict | None:
    """A run's config without the settings that do not change training (``select``), so that a
    checkpoint written before such a setting existed can be resumed.
    """
    if cfg_json is None:
        return None
    d = json.loads(cfg_json)
    d.pop("select", None)
    return d


def export_model(out_dir: str, *, triplets: TripletSet | None = None, info_extra: dict | None = None,
                 model_name: str = "model.safetensors", which: str = "best") -> str:
    """Write the best-validation (``which="best"``) or last-epoch (``"last"``) weights of a
    (possibly interrupted) run in ``out_dir`` as a model file.

    Reads ``checkpoint.pt`` (architecture, history) and ``best_state.pt`` (weights), both with
    ``torch.load(weights_only=True)``, and ``triplets.npz`` for the classes seen.
    """
    import torch

    from .model import CosaradNet, ModelInfo, save_model

    ck_path = os.path.join(out_dir, "checkpoint.pt")
    if not os.path.isfile(ck_path):
        raise FileNotFoundError(f"no checkpoint in {out_dir}")
    ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    cfg = json.loads(ck["config"])
    model = CosaradNet(cfg["backbone"], feature_dim=cfg["feature_dim"], hidden_dim=cfg["hidden_dim"],
                       dropout=cfg["dropout"], inputs=cfg.get("inputs", "xyz"))
    best = os.path.join(out_dir, "best_state.pt")
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    use_best = which == "best" and os.path.isfile(best)
    state = torch.load(best, map_location="cpu", weights_only=True) if use_best else ck["model"]
    model.load_state_dict(state)
    if triplets is None:
        triplets = TripletSet.load(os.path.join(out_dir, "triplets.npz"))
    history = list(ck["history"])
    info = ModelInfo(classes_seen=triplets.class_names, patch_points=int(triplets.patches.shape[2]),
                     extra={"train_config": cfg, "triplets": len(triplets),
                            "exported_epoch": int(ck["best_epoch"]) if use_best else len(history),
                            "epochs_run": len(history), "wall_s": round(history[-1]["wall_s"], 1) if history else 0,
                            "final": history[-1] if history else {}, **(info_extra or {})})
    path = os.path.join(out_dir, model_name)
    save_model(path, model.eval(), info, half=bool(cfg.get("half", True)))
    return path
