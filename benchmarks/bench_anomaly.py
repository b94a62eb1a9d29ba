#!/usr/bin/env python3
"""COSARAD benchmark: detection quality of cosarad, fpfh and global-bank, and inference time.

Measured in one run, on the same scans, with the same cached registrations:

* mean O-AUROC / P-AUROC of every method on the synthetic benchmark, each class scored by a
  model that never saw it (k-fold over classes: pass one model per fold, default the two
  shipped fold models), with per-class tables;
* the gap cosarad - fpfh (target: >= 0.15 O-AUROC) and the targets (O-AUROC >= 0.90,
  P-AUROC >= 0.95);
* inference time per 50k-point scan with the banks cached (registration included): median and
  per-stage medians (target <= 2 s on the 2-core CPU).

Writes the record (figures, date, machine, commit; see ``record.py``) to
``benchmarks/results/bench_anomaly.json`` (``--timing-only``: ``bench_anomaly_timing.json``;
``--record`` changes it) and the same record to ``OUT/summary.json`` (``OUT/timing.json``).

Usage::

    python benchmarks/bench_anomaly.py --data data/synth_real3d --out out/bench_anomaly
    python benchmarks/bench_anomaly.py --quick          # 3 classes, 8 scans each
    python benchmarks/bench_anomaly.py --methods cosarad --seeds 4 --timing-scans 0   # seed-to-seed noise
    python benchmarks/bench_anomaly.py --timing-only --cache out/bench_anomaly/_cache   # re-time only
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from record import add_record_option, default_record_path, write_record  # noqa: E402


def _fifty_k_scans(cls, n_scans: int, rng, n_points: int = 50_000):
    """Denser scans of good parts: 3 good partial scans of the class (ground-truth aligned when the
    benchmark records poses, else registered) merged, thinned to ``n_points``, in a random pose.
    """
    from cosarad_ros.core.anomaly.dataset import register_class
    from cosarad_ros.core.geometry import random_rotation, transform_points

    rc = register_class(cls, use_poses=cls.template_poses is not None and all(t.pose is not None for t in cls.tests))
    good = [i for i, t in enumerate(cls.tests) if not t.is_anomalous]
    scans = []
    for k in range(n_scans):
        pick = rng.choice(good, size=min(3, len(good)), replace=False)
        pts = np.concatenate([rc.test_points(int(i)) for i in pick])
        pts = pts[rng.choice(len(pts), min(n_points, len(pts)), replace=False)]
        T = np.eye(4)
        T[:3, :3] = random_rotation(rng)
        T[:3, 3] = rng.uniform(-0.05, 0.05, 3)
        scans.append(transform_points(T, pts))
    return rc, scans


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synth_real3d")
    ap.add_argument("--layout", default="real3d")
    ap.add_argument("--models", nargs="*", default=None,
                    help="fold models (default: the shipped default + fold-1 models)")
    ap.add_argument("--methods", default="cosarad,fpfh,global-bank,deviation")
    ap.add_argument("--classes", default="")
    ap.add_argument("--max-tests", type=int, default=16, help="test scans per class (half good, half defective)")
    ap.add_argument("--timing-scans", type=int, default=5, help="50k-point scans timed (0: no timing)")
    ap.add_argument("--timing-class", default=None, help="class used for timing (default: the first)")
    ap.add_argument("--out", default="out/bench_anomaly")
    ap.add_argument("--cache", default=None, help="registration / bank cache (default OUT/_cache)")
    ap.add_argument("--config", default="{}", help="detector options (JSON)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="score the learned methods with this many patch-resampling seeds (the detector's seed, "
                         "from --config's or 0 on) and report mean +- sd over them: the benchmark's noise")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="3 classes, 8 scans each, 3 timing scans")
    ap.add_argument("--timing-only", action="store_true",
                    help="skip the AUROC evaluation; time the methods only (banks from --cache)")
    add_record_option(ap, "bench_anomaly")
    args = ap.parse_args(argv)
    if args.timing_only and args.record == str(default_record_path("bench_anomaly")):
        args.record = str(default_record_path("bench_anomaly_timing"))
    if args.timing_scans < 0:
        ap.error("--timing-scans must be >= 0")
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")

    import torch

    from cosarad_ros.core.anomaly import make_detector
    from cosarad_ros.core.anomaly.dataset import load_benchmark
    from cosarad_ros.core.anomaly.evaluation import evaluate_benchmark, format_table
    from cosarad_ros.core.anomaly.model import default_model_path

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    cfg = json.loads(args.config)
    classes = [c for c in args.classes.split(",") if c] or None
    if args.quick:
        args.max_tests, args.timing_scans = 8, 3
    data = load_benchmark(args.data, args.layout, classes=classes, max_tests=args.max_tests)
    if args.quick and classes is None:
        data = data[:3]
    models = args.models
    if models is None:
        d = os.path.dirname(default_model_path())
        models = [default_model_path(), os.path.join(d, "cosarad_fold1.safetensors")]
        models = [m for m in models if os.path.isfile(m)]
    cache = args.cache or os.path.join(args.out, "_cache")
    summary = {"data": os.path.abspath(args.data), "max_tests": args.max_tests, "models": models, "methods": {}}
    for method in ([] if args.timing_only else [m for m in args.methods.split(",") if m]):
        t0 = time.perf_counter()
        doc, res = evaluate_benchmark(data, method=method,
                                      models=models if method in ("cosarad", "global-bank") else None,
                                      out_dir=os.path.join(args.out, method), detector_config=cfg, cache_dir=cache,
                                      progress=False, print_fn=None)
        summary["methods"][method] = {"mean": doc["mean"], "classes": doc["classes"],
                                      "classes_seen_in_training": doc["classes_seen_in_training"],
                                      "failed_scans": int(sum(r.n_failed for r in res)),
                                      "wall_s": round(time.perf_counter() - t0, 1)}
        print(format_table(res, method=method), flush=True)
        print(flush=True)
        if args.seeds > 1 and method in ("cosarad", "global-bank"):
            base = int(cfg.get("seed", 0))
            per_seed = {base: doc["mean"]}
            for sd in range(base + 1, base + args.seeds):
                d2, _ = evaluate_benchmark(data, method=method, models=models, detector_config={**cfg, "seed": sd},
                                           out_dir=os.path.join(args.out, f"{method}_seed{sd}"), cache_dir=cache,
                                           progress=False, print_fn=None)
                per_seed[sd] = d2["mean"]
                print(f"{method} seed {sd}: mean O-AUROC {d2['mean']['o_auroc']:.3f}, "
                      f"P-AUROC {d2['mean']['p_auroc']:.3f}", flush=True)
            o = np.array([v["o_auroc"] for v in per_seed.values()])
            p = np.array([v["p_auroc"] for v in per_seed.values()])
            summary["methods"][method]["seeds"] = {
                "per_seed": {str(k): v for k, v in per_seed.items()},
                "o_auroc_mean": round(float(o.mean()), 4), "o_auroc_sd": round(float(o.std(ddof=1)), 4),
                "p_auroc_mean": round(float(p.mean()), 4), "p_auroc_sd": round(float(p.std(ddof=1)), 4)}
            print(f"{method} over {len(o)} resampling seeds: O-AUROC {o.mean():.3f} +- {o.std(ddof=1):.3f}, "
                  f"P-AUROC {p.mean():.3f} +- {p.std(ddof=1):.3f}\n", flush=True)

    # ---- inference time on 50k-point scans, banks cached, registration included
    rng = np.random.default_rng(0)
    tcls = next((c for c in data if c.name == args.timing_class), data[0])
    rc, scans = _fifty_k_scans(tcls, args.timing_scans, rng)
    timing = {}
    for method in [m for m in args.methods.split(",") if m] if scans else []:
        model = None
        if method in ("cosarad", "global-bank"):
            from cosarad_ros.core.anomaly.evaluation import assign_models
            from cosarad_ros.core.anomaly.model import load_model

            infos = {m: load_model(m)[1].classes_seen for m in models}
            model = assign_models([tcls.name], infos)[tcls.name] or models[0]
        det = make_detector({**cfg, "method": method, "model": model, "num_threads": args.threads})
        ok = [t for t, g in zip(rc.templates, rc.template_ok) if g]
        det.fit(tcls.name, ok, cache_dir=os.path.join(cache, "banks"), aligned=True)
        det.score(scans[0], tcls.name)  # warm-up (first torch call)
        runs = [det.score(s, tcls.name) for s in scans]
        totals = [r.timings["total"] for r in runs]
        stages = {k: float(np.median([r.timings[k] for r in runs])) for k in runs[0].timings}
        timing[method] = {"median_s": float(np.median(totals)), "stages_median_s": stages, "points": len(scans[0]),
                          "anomalous_verdicts_on_good": int(sum(r.is_anomalous for r in runs))}
    if timing:
        summary["timing"] = {"class": tcls.name, "scans": len(scans), **timing}

    if not args.timing_only:
        print("method         O-AUROC  P-AUROC  s/scan(50k)  (mean over held-out classes)")
    for m, v in summary["methods"].items():
        t = timing.get(m, {}).get("median_s", float("nan"))
        print(f"{m:<14} {v['mean']['o_auroc']:8.3f} {v['mean']['p_auroc']:8.3f} {t:11.2f}")
    if "cosarad" in summary["methods"] and "fpfh" in summary["methods"]:
        gap = summary["methods"]["cosarad"]["mean"]["o_auroc"] - summary["methods"]["fpfh"]["mean"]["o_auroc"]
        summary["cosarad_minus_fpfh_o_auroc"] = round(gap, 4)
        print(f"cosarad - fpfh O-AUROC: {gap:+.3f} (target >= +0.15)")
    for m, t in timing.items():
        st = ", ".join(f"{k} {v:.2f}" for k, v in t["stages_median_s"].items())
        print(f"{m}: median {t['median_s']:.2f} s per {t['points']}-point scan ({st})")
    legacy = os.path.join(args.out, "timing.json" if args.timing_only else "summary.json")
    write_record(args.record, "bench_anomaly", summary, argv=argv,
                 also=[legacy])
    print(f"written to {legacy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
