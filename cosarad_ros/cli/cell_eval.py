"""``cosarad cell-eval``: production runs through the in-process cell, verdicts measured.

Builds (or loads) production runs of many parts -- every part type, good parts that vary within
tolerance, every defect kind at graded sizes -- and inspects each part with the cell's own
sequence (:func:`cosarad_ros.core.inspection.pipeline.run_inspection`) in an
:class:`~cosarad_ros.core.inspection.inprocess.InProcessCell` (the ROS cell's core objects,
without DDS). Writes to ``--out``:

* ``eval.json`` -- per method: verdict accuracy, escape / false-reject / INCONCLUSIVE rates (with
  reasons), misclassification rate, POD per defect type with a90, localisation error, seconds per
  stage; the targets and whether they are met; every part's record. Rewritten after each part.
* ``pod_<method>.png`` -- POD curves; ``confusion_<method>.png`` -- expected x given verdict;
* ``seed_<s>/`` -- each run's CAD library, part meshes and ``scenario.json``; ``banks/``,
  ``coverage/`` -- the cell's caches and coverage pictures.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HELP = "evaluate the cell's verdicts on production runs (escapes, false rejects, POD / a90)"

#: what the evaluation must show (README "Cell verdicts")
TARGETS = {"verdict_accuracy_min": 0.97, "false_reject_rate_max": 0.02, "inconclusive_rate_max": 0.02,
           "escapes_gross_max": 0, "a90_bulge_sink_8mm_max_mm": 0.3, "min_part_types": 8, "min_parts": 48}


def add_arguments(p):
    from cosarad_ros.core.inspection.production import EVAL_DEFECTS, EVAL_TYPES, SIZE_PRESETS

    p.add_argument("--out", default="reports/cell_eval", help="report folder (default: reports/cell_eval)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2],
                   help="one production run per seed (dimensions, defects, sizes, sensor noise; default: 1 2)")
    p.add_argument("--types", nargs="+", default=list(EVAL_TYPES),
                   help="part types: procedural families and package meshes (default: all families, sh1, tr12j)")
    p.add_argument("--parts-per-type", type=int, default=6, help="parts per type and seed, a third good (default 6)")
    p.add_argument("--defects", nargs="+", default=list(EVAL_DEFECTS), help="defect kinds, taken in turn")
    p.add_argument("--sizes", default="graded",
                   help=f"defect sizes: {' | '.join(SIZE_PRESETS)} or a JSON file {{kind: {{key: [lo, hi]}}}} in mm")
    p.add_argument("--scenario", default=None,
                   help="inspect the parts of this scenario.json instead of generating runs (--seeds sets the noise)")
    p.add_argument("--method", nargs="+", default=["deviation"],
                   choices=("deviation", "cosarad", "fpfh", "global-bank"),
                   help="detectors; the first is the cell's, the others score the same registered scans")
    p.add_argument("--tell-type", action="store_true", help="give the part type instead of classifying each part")
    p.add_argument("--templates", type=int, default=3, help="simulated good templates per part type")
    p.add_argument("--max-parts", type=int, default=0, help="inspect at most this many parts per run (0: all)")


def _sizes(arg: str):
    from cosarad_ros.core.inspection.production import SIZE_PRESETS

    if arg in SIZE_PRESETS:
        return arg
    path = Path(arg)
    if not path.is_file():
        raise ValueError(f"--sizes: {arg!r} is neither a preset ({', '.join(SIZE_PRESETS)}) nor a file")
    try:
        doc = json.loads(path.read_text())
        return {k: {kk: (float(v[0]), float(v[1])) for kk, v in d.items()} for k, d in doc.items()}
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"--sizes {path}: expected {{kind: {{key: [lo, hi]}}}} in mm ({exc})") from None


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _targets(summary: dict) -> dict:
    pod = summary.get("pod") or {}
    a90s = [pod[k]["a90"] for k in ("bulge>=8mm", "sink>=8mm") if k in pod]
    t = TARGETS
    checks = {
        "verdict_accuracy": (summary["verdict_accuracy"] or 0) >= t["verdict_accuracy_min"],
        "false_reject_rate": (summary["false_reject_rate"] or 0) <= t["false_reject_rate_max"],
        "inconclusive_rate": (summary["inconclusive_rate"] or 0) <= t["inconclusive_rate_max"],
        "escapes_gross": summary["escapes_gross"] <= t["escapes_gross_max"],
        "a90_bulge_sink_8mm": bool(a90s) and all(a is not None and a <= t["a90_bulge_sink_8mm_max_mm"] for a in a90s),
        "part_types": len(summary["part_types"]) >= t["min_part_types"],
        "parts": summary["parts"] >= t["min_parts"],
    }
    return {"limits": t, "met": checks, "all_met": all(checks.values())}


def _print_summary(method: str, s: dict, targets: dict) -> None:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f} %"

    print(f"\n== {method}: {s['correct']}/{s['parts']} verdicts right ({pct(s['verdict_accuracy'])}) over "
          f"{len(s['part_types'])} part types")
    print(f"   false rejects {s['false_rejects']}/{s['good_parts']} ({pct(s['false_reject_rate'])}), "
          f"escapes {s['escapes']} of {s['defective_parts'] - s['unmeasured_defects']} measured defects "
          f"({pct(s['escape_rate'])}; {s['escapes_gross']} of {s['gross_defects']} at least 0.5 mm deep and 5 mm "
          f"across), not measured by the views {s['unmeasured_defects']}")
    print(f"   INCONCLUSIVE {s['inconclusive']} ({pct(s['inconclusive_rate'])})"
          + (": " + "; ".join(f"{k} x{v}" for k, v in s["inconclusive_reasons"].items())
             if s["inconclusive_reasons"] else ""))
    print(f"   misclassified {s['misclassified']} ({pct(s['misclassification_rate'])}), "
          f"unknown {s['classified_unknown']}; found at the defect {s['detected_at_defect']}"
          + (f", localisation error median {s['localisation_error_mm']['median']:.1f} mm"
             if s.get("localisation_error_mm") else ""))
    if s["pod"]:
        print(f"   {'POD':<14}{'found':>8}{'a90':>10}  size")
        for name, p in s["pod"].items():
            a90 = "-" if p["a90"] is None else f"{p['a90']:.2f}"
            print(f"   {name:<14}{p['hits']:>4}/{p['n']:<3}{a90:>10}  {p['size']} [{p['unit']}] {p['note']}")
    st = s["stage_seconds"]
    print("   median seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in st.items() if v is not None))
    met = targets["met"]
    print("   targets: " + ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in met.items()))


def run(args) -> int:
    from cosarad_ros.core.inspection.evaluation import evaluate_production, plot_confusion, plot_pod, summarize
    from cosarad_ros.core.inspection.inprocess import InProcessCell
    from cosarad_ros.core.inspection.production import CellScenario, make_production_run

    if args.parts_per_type < 1:
        raise ValueError(f"--parts-per-type must be >= 1, got {args.parts_per_type}")
    if args.templates < 3:
        raise ValueError(f"--templates must be >= 3 (the deviation banks need 3), got {args.templates}")
    sizes = _sizes(args.sizes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys(args.method))
    records: dict[str, list] = {m: [] for m in methods}
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
            "cpus": __import__("os").cpu_count(), "commit": _commit(), "command": " ".join(sys.argv),
            "seeds": args.seeds, "methods": methods, "tell_type": bool(args.tell_type)}
    t_start = time.perf_counter()

    def write():
        doc = {**meta, "wall_seconds": time.perf_counter() - t_start, "methods": {}}
        for m in methods:
            s = summarize(records[m]) if records[m] else None
            doc["methods"][m] = {"summary": s, "targets": _targets(s) if s else None,
                                 "parts": [r.to_json() for r in records[m]]}
        tmp = out / "eval.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(out / "eval.json")
        return doc

    n_done = 0
    for seed in args.seeds:
        if args.scenario:
            scenario = CellScenario.load(args.scenario)
        else:
            print(f"[cell-eval] building production run seed {seed} in {out / f'seed_{seed}'}", flush=True)
            scenario = make_production_run(out / f"seed_{seed}", types=args.types, parts_per_type=args.parts_per_type,
                                           defects=args.defects, sizes=sizes, seed=seed)
        if args.max_parts:
            scenario = CellScenario(scenario.cad_dir, scenario.parts[:args.max_parts], scenario.part_types)
        n = len(scenario.parts)
        print(f"[cell-eval] seed {seed}: {n} parts of {len(scenario.part_types)} types", flush=True)
        with InProcessCell(scenario.cad_dir, work_dir=out / f"seed_{seed}", method=methods, n_templates=args.templates,
                           seed=seed, progress=lambda m: print(f"[cell-eval]   {m}", flush=True)) as cell:
            cell.prepare(scenario.part_types)
            t_part = [time.perf_counter()]

            def on_record(rec, run, n=n):
                nonlocal n_done
                records[rec.method].append(rec)
                if rec.method != methods[0]:
                    return
                n_done += 1
                mark = "ok" if rec.correct else f"expected {rec.expected}"
                d = rec.defect
                what = "good" if d is None else f"{d['type']} {rec.to_json()['pod_size']['value']:.2f}"
                dt = time.perf_counter() - t_part[0]
                t_part[0] = time.perf_counter()
                print(f"[cell-eval] {len(records[methods[0]]) % n or n}/{n} {rec.part_id} {rec.part_type:<15} "
                      f"{what:<20} {rec.verdict:<13} {'' if rec.object_score is None else f'{rec.object_score:8.2f}'}"
                      f" {dt:5.1f} s  {mark}  {rec.reason[:90] if not rec.correct else ''}", flush=True)
                write()

            evaluate_production(scenario, cell, methods=methods, tell_type=args.tell_type, on_record=on_record)
    doc = write()
    for m in methods:
        recs = records[m]
        if not recs:
            continue
        s, t = doc["methods"][m]["summary"], doc["methods"][m]["targets"]
        _print_summary(m, s, t)
        plot_pod(out / f"pod_{m}.png", s["pod"], title=f"POD, method {m}")
        plot_confusion(out / f"confusion_{m}.png", recs, title=f"verdicts, method {m}")
    print(f"\n[cell-eval] {n_done} parts in {time.perf_counter() - t_start:.0f} s; report {out / 'eval.json'}")
    return 0
