#!/usr/bin/env python3
"""COSARAD network cost: feature extraction per scan and training step time, per backbone and device.

Measures the :class:`~cosarad_ros.core.anomaly.model.CosaradNet` alone (no registration, no
patch cutting), on random patches of the detector's shape, so that the figures say what a
backbone costs, not what a scan holds:

* **features**: one scan's patches (``--patches``, 256 by default, the detector's
  ``num_patches``) of 512 points through the network in batches of ``--batch`` (the detector's
  ``batch_size``), in eval mode;
* **training step**: a batch of ``--triplets`` triplets (anchor, positive, negative) forward and
  backward with the triplet loss and an Adam step, plus the no-grad forward of the EMA mining
  copy that :func:`~cosarad_ros.core.anomaly.training.train` runs on every batch; from it the
  time of one epoch of ``--epoch-triplets`` triplets (4218, the shipped fold-0 set).

Medians over ``--repeats`` timed runs after one warm-up, and the ratio of each backbone to the
first one, measured in the same run. CUDA timings synchronise before reading the clock. Writes
the figures to ``benchmarks/results/bench_network.json`` (``--record``; see ``record.py``) and, with
``--json``, the same record to that path too.

Usage::

    python benchmarks/bench_network.py                                  # cpu backbone, this CPU
    python benchmarks/bench_network.py --backbones cpu,paper --device cuda
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from record import add_record_option, write_record  # noqa: E402


def _random_patches(n: int, points: int, channels: int, generator):
    """``(n, points, 3 + channels)`` points on random wavy surfaces through the origin, radius 2."""
    import torch

    xy = (torch.rand(n, points, 2, generator=generator) * 2 - 1) * 2.0
    keep = xy.norm(dim=-1, keepdim=True) <= 2.0
    xy = torch.where(keep, xy, xy * 0.5)
    a = torch.rand(n, 1, 2, generator=generator)
    z = 0.2 * torch.sin(xy[..., :1] * (1 + 2 * a[..., :1])) * torch.cos(xy[..., 1:] * (1 + 2 * a[..., 1:]))
    extra = torch.rand(n, points, channels, generator=generator) * 0.5
    return torch.cat([xy, z, extra], dim=-1)


def _timed(fn, repeats: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(backbone: str, *, device: str, patches: int, points: int, batch: int, triplets: int,
            repeats: int, inputs: str, epoch_triplets: int, seed: int = 0) -> dict:
    """Timings of one backbone on one device (see the module docstring)."""
    import torch

    from cosarad_ros.core.anomaly.model import INPUT_CHANNELS, CosaradNet

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(seed)
    model = CosaradNet(backbone, inputs=inputs).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    scan = _random_patches(patches, points, INPUT_CHANNELS[inputs], g).to(dev)

    model.eval()

    def features():
        with torch.no_grad():
            for s in range(0, patches, batch):
                model(scan[s:s + batch])

    t_feat = _timed(features, repeats, sync)

    model.train()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    loss_fn = torch.nn.TripletMarginLoss(margin=0.6)
    trip = _random_patches(3 * triplets, points, INPUT_CHANNELS[inputs], g).to(dev)

    def step():
        with torch.no_grad():
            ema(trip)  # the miner's forward pass
        z = model(trip).view(triplets, 3, -1)
        loss = loss_fn(z[:, 0], z[:, 1], z[:, 2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_step = _timed(step, repeats, sync)
    steps = -(-epoch_triplets // triplets)
    return {"backbone": backbone, "device": str(dev), "parameters": int(n_params),
            "features_s_per_scan": t_feat, "train_step_s": t_step, "epoch_s": t_step * steps,
            "patches": patches, "points": points, "triplets_per_step": triplets, "epoch_triplets": epoch_triplets}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="cpu", help="comma-separated presets (cpu, small, paper, tiny)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--patches", type=int, default=256)
    ap.add_argument("--points", type=int, default=512)
    ap.add_argument("--batch", type=int, default=128, help="patches per forward pass (feature extraction)")
    ap.add_argument("--triplets", type=int, default=32, help="triplets per training step")
    ap.add_argument("--epoch-triplets", type=int, default=4218)
    ap.add_argument("--inputs", default="xyz+deviation", choices=("xyz", "xyz+deviation"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="also write the record here")
    add_record_option(ap, "bench_network")
    args = ap.parse_args(argv)
    for name in ("patches", "points", "batch", "triplets", "repeats", "epoch_triplets", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")

    import torch

    from cosarad_ros.core.anomaly.pointnet2 import BACKBONE_PRESETS

    torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no GPU")
    names = [b for b in args.backbones.split(",") if b]
    unknown = [b for b in names if b not in BACKBONE_PRESETS]
    if unknown or not names:
        ap.error(f"unknown backbone(s) {unknown}; choose from {sorted(BACKBONE_PRESETS)}")
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {args.threads} torch threads"
    print(f"device: {where}; torch {torch.__version__}; {args.patches} patches x {args.points} points per scan, "
          f"{args.triplets} triplets per step; medians of {args.repeats} runs", flush=True)
    rows = []
    for b in names:
        r = measure(b, device=device, patches=args.patches, points=args.points, batch=args.batch,
                    triplets=args.triplets, repeats=args.repeats, inputs=args.inputs,
                    epoch_triplets=args.epoch_triplets)
        rows.append(r)
        print(f"{b:<8} {r['parameters'] / 1e6:6.2f} M params  features {r['features_s_per_scan'] * 1e3:9.1f} ms/scan  "
              f"train step {r['train_step_s'] * 1e3:9.1f} ms  epoch of {r['epoch_triplets']} triplets "
              f"{r['epoch_s']:8.1f} s", flush=True)
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['backbone']} / {base['backbone']}: "
              f"features x{r['features_s_per_scan'] / base['features_s_per_scan']:.1f}, "
              f"train step x{r['train_step_s'] / base['train_step_s']:.1f}")
    write_record(args.record, "bench_network", {"device": where, "torch": torch.__version__, "rows": rows},
                 argv=argv, also=[args.json] if args.json else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
