"""``cosarad train``: train the COSARAD contrastive patch feature extractor.

Cuts (anchor, positive, negative) triplets from a benchmark folder (templates + labelled test
scans of the training classes), trains with the EMA miner and the adaptive margin, and writes::

    OUT/model.safetensors   the model (weights + architecture + classes seen, no pickle)
    OUT/checkpoint.pt       last epoch (``--resume`` continues from it)
    OUT/curves.png          loss / yield / margin / validation accuracy per epoch
    OUT/history.json        the same numbers
    OUT/triplets.npz        the triplet set (reused by ``--resume``)
    OUT/training.json       the command, classes seen and the training cost

Honest k-fold over classes: ``--fold I/K`` leaves out every K-th class (sorted names, starting
at I) so ``cosarad eval`` can score them with a model that never saw them.

The defaults are those of ``TripletConfig`` and ``TrainConfig``
(:mod:`cosarad_ros.core.anomaly.training`), the recipe of the shipped models
(``cosarad_ros/models/TRAINING.md``): deviation inputs, 500 weak triplets per class, 10 epochs,
the ``cpu`` backbone.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

HELP = "train the COSARAD contrastive patch feature extractor"


def _fold(text: str) -> tuple[int, int]:
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/K (e.g. 0/2), got {text!r}") from None
    if k < 2 or not 0 <= i < k:
        raise argparse.ArgumentTypeError(f"need K >= 2 and 0 <= I < K, got {text!r}")
    return i, k


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("data")
    src.add_argument("--data", help="benchmark folder (Real3D-AD or Anomaly-ShapeNet layout)")
    src.add_argument("--layout", choices=("real3d", "anomaly-shapenet"), default=None,
                     help="folder layout (default: detected)")
    src.add_argument("--unit", choices=("mm", "cm", "m"), default=None,
                     help="unit of the files (default: the layout's / manifest's)")
    src.add_argument("--classes", default="", help="comma-separated classes to train on (default: all)")
    src.add_argument("--exclude", default="", help="comma-separated classes to leave out")
    src.add_argument("--fold", type=_fold, default=None, metavar="I/K",
                     help="leave out fold I of K (every K-th class of the sorted names, from I)")
    src.add_argument("--max-tests", type=int, default=None, help="test scans read per class")
    src.add_argument("--toy", type=int, default=0, metavar="N",
                     help="train on N small procedural toy classes instead of --data (smoke runs)")
    parser.add_argument("--out", required=True, help="output folder")
    # the recipe's defaults are those of TripletConfig / TrainConfig (the shipped models' recipe)
    from cosarad_ros.core.anomaly.training import TrainConfig, TripletConfig

    tc, fc = TripletConfig(), TrainConfig()
    tr = parser.add_argument_group("training (defaults: the shipped models' recipe)")
    tr.add_argument("--epochs", type=int, default=fc.epochs, help="training epochs (default: %(default)s)")
    tr.add_argument("--batch-size", type=int, default=fc.batch_size,
                    help="triplets per step before mining (default: %(default)s)")
    tr.add_argument("--lr", type=float, default=fc.lr, help="Adam learning rate (default: %(default)s)")
    tr.add_argument("--margin", type=float, default=fc.margin, help="initial triplet margin (default: %(default)s)")
    tr.add_argument("--backbone", default=fc.backbone, choices=("cpu", "small", "paper", "tiny"),
                    help="PointNet++ preset (default: %(default)s; cpu is sized for a 2-core CPU)")
    tr.add_argument("--feature-dim", type=int, default=fc.feature_dim,
                    help="dimension of the patch features (default: %(default)s)")
    tr.add_argument("--inputs", default=tc.inputs, choices=("xyz", "xyz+deviation"),
                    help="what each patch point carries: coordinates plus its deviation from the class's "
                         "good templates, or coordinates only (the paper) (default: %(default)s)")
    tr.add_argument("--centres-per-defect", type=int, default=tc.centres_per_defect,
                    help="farthest-point centres per defect region (default: %(default)s)")
    tr.add_argument("--combos", type=int, default=tc.combos_per_centre,
                    help="(anchor, positive) pairs per centre (default: %(default)s)")
    tr.add_argument("--weak", type=int, default=tc.weak_per_class,
                    help="synthetic-defect (weak objective) triplets per class, 0: only labelled defects "
                         "(default: %(default)s)")
    tr.add_argument("--weak-scan-positive", type=float, default=tc.weak_scan_positive,
                    help="share of weak triplets whose positive is a good partial scan, else a template "
                         "(default: %(default)s)")
    tr.add_argument("--min-positive-coverage", type=float, default=tc.min_positive_coverage,
                    help="smallest share of the templates' points a good scan's patch needs to be a positive "
                         "(default: %(default)s)")
    tr.add_argument("--anchor-crop", type=float, default=tc.anchor_support_crop,
                    help="share of weak triplets whose anchor template patch is cut to the positive's support, "
                         "as the detector cuts templates to a scan, 0: whole template patches "
                         "(default: %(default)s)")
    tr.add_argument("--patch-radius-rel", type=float, default=tc.patch_radius_rel,
                    help="patch radius / reference bounding-box diagonal, the detector's rule "
                         "(default: %(default)s)")
    tr.add_argument("--select", choices=("best", "last"), default=fc.select,
                    help="weights written as the model: the epoch of the best validation triplet accuracy "
                         "or the last epoch (default: %(default)s)")
    tr.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--export", choices=("best", "last"), default=None,
                    help="only write OUT/model.safetensors from the best (validation) or last epoch of a run")
    tr.add_argument("--device", default=fc.device, help="cpu, cuda or auto (default: %(default)s)")
    tr.add_argument("--threads", type=int, default=fc.num_threads, help="torch CPU threads (default: %(default)s)")
    tr.add_argument("--seed", type=int, default=fc.seed,
                    help="seed of the triplets and of the training (default: %(default)s)")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_configs(args: argparse.Namespace):
    """``(TripletConfig, TrainConfig)`` of parsed ``cosarad train`` options; the options' defaults
    give ``(TripletConfig(), TrainConfig())``, the shipped models' recipe.
    """
    from cosarad_ros.core.anomaly.training import TrainConfig, TripletConfig

    tcfg = TripletConfig(patch_radius_rel=args.patch_radius_rel, centres_per_defect=args.centres_per_defect,
                         combos_per_centre=args.combos, weak_per_class=args.weak,
                         weak_scan_positive=args.weak_scan_positive, inputs=args.inputs,
                         min_positive_coverage=args.min_positive_coverage,
                         anchor_support_crop=args.anchor_crop, seed=args.seed)
    cfg = TrainConfig(backbone=args.backbone, feature_dim=args.feature_dim, inputs=args.inputs, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, margin=args.margin, num_threads=args.threads,
                      device=args.device, seed=args.seed, select=args.select)
    return tcfg, cfg


def run(args: argparse.Namespace) -> int:
    from cosarad_ros.core.anomaly.dataset import list_classes, load_benchmark, toy_benchmark
    from cosarad_ros.core.anomaly.evaluation import fold_classes
    from cosarad_ros.core.anomaly.training import TripletSet, build_triplets, train

    if args.export:
        from cosarad_ros.core.anomaly.training import export_model

        path = export_model(args.out, which=args.export,
                            info_extra={"command": f"cosarad train --export {args.export} --out {args.out}"})
        print(f"model written to {path}")
        return 0
    if args.epochs < 1 or args.batch_size < 2:
        raise ValueError("--epochs must be >= 1 and --batch-size >= 2")
    os.makedirs(args.out, exist_ok=True)
    tcfg, cfg = build_configs(args)
    trip_path = os.path.join(args.out, "triplets.npz")
    t0 = time.perf_counter()
    held_out: list[str] = []
    if args.resume and os.path.isfile(trip_path):
        triplets = TripletSet.load(trip_path)
    else:
        if args.toy:
            classes = toy_benchmark(args.toy, seed=args.seed)
        else:
            if not args.data:
                raise ValueError("give --data DIR (a benchmark folder) or --toy N")
            names = list_classes(args.data, args.layout)
            chosen = _split(args.classes) or names
            unknown = sorted(set(chosen) - set(names))
            if unknown:
                raise ValueError(f"--classes: {unknown} not in {args.data}")
            if args.fold:
                held_out = fold_classes(names, *args.fold)
            drop = set(_split(args.exclude)) | set(held_out)
            chosen = [c for c in chosen if c not in drop]
            if not chosen:
                raise ValueError("no classes left to train on")
            classes = load_benchmark(args.data, args.layout, classes=chosen, unit=args.unit, max_tests=args.max_tests)
        triplets = build_triplets(classes, tcfg, cache_dir=os.path.join(args.out, "_registration"),
                                  progress=not args.quiet)
        triplets.save(trip_path)
    prep_s = time.perf_counter() - t0
    print(f"{len(triplets)} triplets from {len(triplets.class_names)} classes: {', '.join(triplets.class_names)} "
          f"({prep_s:.0f} s to prepare)", flush=True)
    command = "cosarad " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith(("cosarad", "__main__.py")) \
        else "cosarad train " + " ".join(f"{k}={v}" for k, v in vars(args).items() if not k.startswith("_"))
    res = train(triplets, args.out, cfg, resume=args.resume, progress=not args.quiet, max_steps=args.max_steps,
                info_extra={"command": command, "triplet_config": asdict(tcfg),
                            "held_out_classes": held_out, "prepare_s": round(prep_s, 1)})
    summary = {"model": res.model_path, "classes_seen": list(res.classes_seen), "held_out_classes": held_out,
               "triplets": len(triplets), "epochs": len(res.history), "best_epoch": res.best_epoch,
               "select": args.select, "exported_epoch": res.best_epoch if args.select == "best" else len(res.history),
               "train_wall_s": round(res.wall_s, 1), "prepare_wall_s": round(prep_s, 1), "command": command,
               "final": res.history[-1] if res.history else {}}
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(summary, f, indent=2)
    which = f"best-validation epoch {res.best_epoch}" if args.select == "best" else \
        f"last epoch {len(res.history)}; best validation at epoch {res.best_epoch}"
    print(f"model written to {res.model_path} ({which}, {res.wall_s / 60:.1f} min training)")
    return 0
