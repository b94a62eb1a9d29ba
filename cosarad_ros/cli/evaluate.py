"""``cosarad eval``: evaluate an anomaly detector on a benchmark folder.

Writes ``OUT/metrics.json`` (schema in :func:`~cosarad_ros.core.anomaly.evaluation.write_metrics`),
``OUT/roc.png`` (object and point ROC curves per class), ``OUT/maps/*.png`` (anomaly maps of the
top-scoring defective scans and the top-scoring good scan of each class) and prints a per-class
table.

Honest protocol: with ``--model`` given several times (one model per fold), each class is scored
by a model that did not see it in training; classes every model saw are skipped unless
``--allow-seen``. ``metrics.json`` lists ``classes_seen_in_training``.
"""
from __future__ import annotations

import argparse
import json

HELP = "evaluate an anomaly detector on a benchmark folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="benchmark folder")
    parser.add_argument("--layout", choices=("real3d", "anomaly-shapenet"), default=None,
                        help="folder layout (default: detected)")
    parser.add_argument("--method", choices=("cosarad", "fpfh", "global-bank", "deviation"), default="cosarad")
    parser.add_argument("--model", action="append", default=None,
                        help="COSARAD model (.safetensors); repeat for k-fold models (default: shipped model)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--classes", default="", help="comma-separated subset of classes")
    parser.add_argument("--unit", choices=("mm", "cm", "m"), default=None, help="unit of the files")
    parser.add_argument("--max-tests", type=int, default=None, help="test scans per class (default all)")
    parser.add_argument("--allow-seen", action="store_true",
                        help="also score classes the model saw in training (dishonest; for debugging)")
    parser.add_argument("--config", default="{}",
                        help='detector options as JSON, e.g. \'{"aggregator": "topk_mean", "num_patches": 192}\'')
    parser.add_argument("--attempts", type=int, default=3, help="registration attempts per scan")
    parser.add_argument("--cache", default=None, help="registration / bank cache folder (default OUT/_cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from cosarad_ros.core.anomaly.dataset import load_benchmark
    from cosarad_ros.core.anomaly.evaluation import evaluate_benchmark

    try:
        cfg = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise ValueError("--config must be a JSON object")
    for k in ("method", "model"):
        if k in cfg:
            raise ValueError(f"--config must not set {k!r}; use --{k}")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] or None
    data = load_benchmark(args.data, args.layout, classes=classes, unit=args.unit, max_tests=args.max_tests)
    doc, _ = evaluate_benchmark(data, method=args.method, models=args.model, out_dir=args.out, detector_config=cfg,
                                allow_seen=args.allow_seen, cache_dir=args.cache, registration_attempts=args.attempts,
                                progress=not args.quiet)
    print(f"metrics written to {args.out}/metrics.json")
    return 0
