"""Benchmark of the CAD classifier and the rule-based defect checks.

Measured in this run:

* classification of the procedural catalogue of ``cosarad_ros.core.data`` (default 36 part types,
  a third of them near-duplicates differing by 1-2 mm in a box extent or in a feature) from
  simulated partial scans (4 ray-cast views from above, bottom never seen, 0.03 mm noise, random
  pose): top-1 accuracy, macro F1, share of ``unknown`` answers and the median time per scan,
  for the classifier and for the paper's box-feature ranking alone (``aligner="none"``), on the
  same scans;
* optional (``--single-view``): one view per scan with ``max_shortfall=0.3``;
* classification of scans as the inspection cell takes them
  (:func:`~cosarad_ros.core.cad.cell_scans.cell_scan`: the cell's simulated structured-light
  sensor, 3-5 views from 30-70 degrees at random azimuths, the part at a random yaw and a few
  millimetres off its place on the fixture, the lowest 1.5 mm cut away, fused at 1.5 mm) of
  ``--cell-types`` base types of every family (half of them 5-15 mm high) and their twins
  1.5 mm longer, plus ``--withheld`` types that are not in the library: top-1 accuracy, unknown
  rate on library types, correct-unknown rate on withheld types, median seconds per call;
* with ``--base DIR`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/cls-base
  <commit>``): that code's classifier on the same scans, in a worker process that classifies
  each scan right after this code does (same load), with the CLI's defaults and with the cell's
  node settings, and the ratio of the median times;
* defects (unless ``--skip-defects``): per-type F1 of scratch / dent / hole on scans with
  injected defects (and intact ones), with the thresholds tuned for this benchmark's subtle
  defects (:data:`~cosarad_ros.core.cad.evaluation.TUNED_RULES`) and the paper's; macro F1,
  false-alarm rate on intact parts, median time per part (registration + rules);
* the time per part of a full classify (with the ISO 25012 report) + inspect.

Kwon et al. (Electronics 2025) report 99.00 % classification accuracy and a 97.9 % macro F1 of
defect detection; the script prints our figures next to them.

Writes ``bench_cad.json`` and PNGs (confusion matrix, per-type F1, one inspected scan) to
``--out`` (default ``reports/bench_cad``), and the same record to
``benchmarks/results/bench_cad.json`` (``--record``; see ``record.py``).

Usage::

    python benchmarks/bench_cad.py [--types 36] [--scans 2] [--cell-types 16] [--cell-scans 2]
        [--withheld 6] [--base /tmp/cls-base] [--defects 20] [--seed 0] [--single-view]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from record import add_record_option, write_record  # noqa: E402

PAPER_ACCURACY = 99.00
PAPER_DEFECT_MACRO_F1 = 97.9
#: the earlier classifier's settings compared: the `cosarad classify` defaults, and the node's
#: settings in the simulated cell (cosarad_ros.ros.sim_cell)
BASE_CONFIGS = {"cli_defaults": {}, "cell_node": {"dim_tolerance": 0.002, "max_shortfall": 0.3}}

# a worker in the other checkout: loads the library, then classifies scan i for every line i
_WORKER = r"""
import json, sys, time
import numpy as np
from cosarad_ros.core.cad import CadClassifier, CadLibrary
data = np.load(sys.argv[1]); lib = CadLibrary(sys.argv[2])
clf = CadClassifier(lib, compute_quality=False, **json.loads(sys.argv[3]))
for m in lib.models:
    m.box
    m.distance(np.zeros((1, 3)))
print("ready", flush=True)
for line in sys.stdin:
    i = int(line)
    pts = data["points"][data["offsets"][i]:data["offsets"][i + 1]]
    t = time.perf_counter()
    r = clf.classify(pts)
    print(json.dumps([r.label, time.perf_counter() - t]), flush=True)
"""


class BaseWorker:
    """The classifier of another checkout, in its own process, one scan at a time."""

    def __init__(self, checkout: Path, scans_npz: Path, library: Path, options: dict):
        env = dict(os.environ, PYTHONPATH=str(checkout))
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(scans_npz), str(library), json.dumps(options)],
                                     cwd=str(checkout), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the worker in {checkout} did not start")

    def classify(self, index: int) -> tuple[str, float]:
        self.proc.stdin.write(f"{index}\n")
        self.proc.stdin.flush()
        label, seconds = json.loads(self.proc.stdout.readline())
        return label, float(seconds)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _save_scans(path: Path, scans) -> None:
    np.savez(path, names=np.array([s[0] for s in scans]), T=np.array([s[2] for s in scans]),
             offsets=np.cumsum([0] + [len(s[1]) for s in scans]), points=np.vstack([s[1] for s in scans]))


def _load_scans(path: Path):
    d = np.load(path)
    off = d["offsets"]
    return [(str(n), d["points"][off[i]:off[i + 1]], d["T"][i]) for i, n in enumerate(d["names"])]


def _git(*args, cwd=None) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def compare(clf, scans, library_labels, scans_npz: Path, library: Path, base: Path | None, progress: bool = True):
    """This classifier and (with ``base``) the earlier one's configurations on the same scans,
    interleaved scan by scan. Returns ``{name: ClassificationScores}``.
    """
    from tqdm import tqdm

    from cosarad_ros.core.cad.evaluation import score_labels

    workers = {}
    if base is not None:
        workers = {f"base_{k}": BaseWorker(base, scans_npz, library, v) for k, v in BASE_CONFIGS.items()}
    answers: dict = {"new": ([], [], [])}
    answers.update({k: ([], [], []) for k in workers})
    try:
        for i, (name, pts, _) in enumerate(tqdm(scans, desc="classify", disable=not progress, leave=False)):
            t0 = time.perf_counter()
            r = clf.classify(pts)
            answers["new"][0].append(r.label)
            answers["new"][1].append(time.perf_counter() - t0)
            answers["new"][2].append(r.score)
            for k, w in workers.items():
                label, sec = w.classify(i)
                answers[k][0].append(label)
                answers[k][1].append(sec)
                answers[k][2].append(0.0)
    finally:
        for w in workers.values():
            w.close()
    y_true = [s[0] for s in scans]
    return {k: score_labels(y_true, a[0], library_labels, seconds=a[1], scores=a[2]) for k, a in answers.items()}


def _plot_confusion(path, y_true, y_pred, labels, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = labels + (["(withheld)"] if any(t not in labels for t in y_true) else [])
    cols = labels + ["unknown"]
    M = np.zeros((len(rows), len(cols)), dtype=int)
    for t, p in zip(y_true, y_pred):
        M[rows.index(t) if t in labels else -1, cols.index(p) if p in cols else -1] += 1
    fig, ax = plt.subplots(figsize=(0.28 * len(cols) + 3, 0.28 * len(rows) + 2.5))
    ax.imshow(M, cmap="Blues")
    for (r, c), v in np.ndenumerate(M):
        if v and r != c:
            ax.text(c, r, str(v), ha="center", va="center", fontsize=6, color="red")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=6)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _plot_f1(path, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = ["scratch", "dent", "hole"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    w = 0.8 / len(results)
    for i, (name, r) in enumerate(results.items()):
        ax.bar(np.arange(3) + i * w, [100 * r.f1[t] for t in types], w, label=f"{name} (macro {100 * r.macro_f1:.1f})")
    ax.axhline(PAPER_DEFECT_MACRO_F1, color="k", ls="--", lw=1, label=f"paper macro F1 {PAPER_DEFECT_MACRO_F1}")
    ax.set_xticks(np.arange(3) + 0.4 - w / 2, types)
    ax.set_ylabel("F1 [%]")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _plot_example(path, lib, parts, seed):
    """One scan with an injected scratch: deviation colours and the findings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cosarad_ros.core.cad import classify, detect_defects
    from cosarad_ros.core.cad.evaluation import TUNED_RULES, defective_sample

    rng = np.random.default_rng(seed)
    part = next(p for p in parts if p.holes and p.family == "block")
    pts, _, _, rec = defective_sample(part, "scratch", rng, length=0.03, width=0.001, depth=0.0004)
    res = classify(pts, lib, compute_quality=False)
    rep = detect_defects(pts, lib.get(res.reference_label), transform=res.transform, rules=TUNED_RULES)
    P = pts @ res.transform[:3, :3].T + res.transform[:3, 3]
    fig, ax = plt.subplots(figsize=(7, 5))
    sc = ax.scatter(P[:, 0] * 1000, P[:, 1] * 1000, c=rep.deviation * 1000, s=1, vmin=-0.3, vmax=0.3,
                    cmap="coolwarm")
    for i, d in enumerate(rep.defects):
        m = rep.labels == i
        ax.scatter(P[m, 0] * 1000, P[m, 1] * 1000, s=4, c="k")
        ax.annotate(d.type, (d.centroid[0] * 1000, d.centroid[1] * 1000), fontsize=8, color="k")
    for h in rep.holes:
        if h.found and np.isfinite(h.diameter):
            ax.add_patch(plt.Circle((h.centre[0] * 1000, h.centre[1] * 1000), h.diameter * 500, fill=False,
                                    color="g", lw=1))
    fig.colorbar(sc, label="deviation from CAD [mm]")
    ax.set_aspect("equal")
    ax.set_xlabel("x [mm]")
    ax.set_ylabel("y [mm]")
    ax.set_title(f"{res.label}: {len(rep.defects)} finding(s), holes fitted in green")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _line(name, r) -> str:
    s = (f"  {name:<30} top-1 {100 * r.accuracy:6.2f} %  macro F1 {100 * r.macro_f1:6.2f} %  "
         f"unknown {100 * r.unknown_rate:5.2f} %")
    if not np.isnan(r.correct_unknown_rate):
        s += f"  withheld->unknown {100 * r.correct_unknown_rate:6.2f} %"
    return s + f"  median {r.median_seconds:.3f} s/call"


def _figures(results: dict) -> dict:
    out = {}
    for k, r in results.items():
        d = r.as_dict()
        d["errors"] = [(t, p) for t, p in zip(r.y_true, r.y_pred) if t != p and not (p == "unknown" and
                                                                                   t.startswith("withheld"))]
        out[k] = d
    new = results.get("new")
    for k, r in results.items():
        if new is not None and k != "new":
            out[k]["median_seconds_ratio_to_new"] = r.median_seconds / max(new.median_seconds, 1e-9)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", type=int, default=36, help="part types of the catalogue benchmark (default 36)")
    ap.add_argument("--scans", type=int, default=2, help="catalogue scans per type (default 2)")
    ap.add_argument("--cell-types", type=int, default=16,
                    help="base types of the cell benchmark, each with a twin 1.5 mm longer (default 16)")
    ap.add_argument("--cell-scans", type=int, default=2, help="cell scans per type (default 2)")
    ap.add_argument("--withheld", type=int, default=6, help="types kept out of the cell library (default 6)")
    ap.add_argument("--base", type=Path, help="checkout of the classifier to compare with (same scans)")
    ap.add_argument("--scan-cache", type=Path, help="folder keeping the cell scans between runs")
    ap.add_argument("--defects", type=int, default=20, help="samples per defect kind (default 20)")
    ap.add_argument("--skip-defects", action="store_true", help="classification only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--single-view", action="store_true", help="also classify single-view scans")
    ap.add_argument("--out", default="reports/bench_cad", help="folder for the JSON and PNGs")
    add_record_option(ap, "bench_cad")
    args = ap.parse_args()

    from cosarad_ros.core.cad import CadClassifier, CadLibrary, classify, detect_defects
    from cosarad_ros.core.cad.evaluation import (
        TUNED_RULES,
        benchmark_scans,
        catalogue_library,
        cell_catalogue,
        classify_scans,
        compare_rule_sets,
        multi_view_scan,
        write_catalogue,
    )

    if args.base is not None and not (args.base / "cosarad_ros" / "core" / "cad").is_dir():
        ap.error(f"--base {args.base} is not a cosarad_ros checkout")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"base_commit": _git("rev-parse", "HEAD", cwd=args.base) if args.base else None,
                    "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        lib, parts = catalogue_library(tmp / "catalogue", args.types, seed=args.seed)
        clf = CadClassifier(lib, compute_quality=False)
        for m in lib.models:  # model preparation is cached per model: keep it out of the timings
            clf.reference(m)
            m.distance(np.zeros((1, 3)))
        print(f"library: {len(lib)} part types ({sum('_d' in p.name for p in parts)} near-duplicates) "
              f"built in {time.perf_counter() - t0:.1f} s")

        print("\n== classification: catalogue, 4-view partial scans (bottom unseen), 0.03 mm noise, random pose")
        scans = benchmark_scans(parts, scans_per_type=args.scans, seed=args.seed + 1)
        _save_scans(tmp / "catalogue_scans.npz", scans)
        res = compare(clf, scans, lib.labels, tmp / "catalogue_scans.npz", tmp / "catalogue", args.base)
        res["paper_ranking"] = classify_scans(CadClassifier(lib, aligner="none", compute_quality=False), scans,
                                              progress=False)
        for k, r in res.items():
            print(_line(k, r))
        for k in (k for k in res if k.startswith("base_")):
            print(f"  median time {k} / new = {res[k].median_seconds / max(res['new'].median_seconds, 1e-9):.1f}")
        print(f"  paper (Kwon et al. 2025): accuracy {PAPER_ACCURACY:.2f} %; ours / paper = "
              f"{100 * res['new'].accuracy / PAPER_ACCURACY:.3f}")
        report["classification"] = _figures(res)
        _plot_confusion(out / "classification_confusion.png", list(res["new"].y_true), list(res["new"].y_pred),
                        sorted(p.name for p in parts), "CAD classification of partial scans (catalogue)")

        if args.single_view:
            print("\n== classification: single-view scans, max_shortfall=0.3")
            single = classify_scans(CadClassifier(lib, compute_quality=False, max_shortfall=0.3),
                                    benchmark_scans(parts, scans_per_type=args.scans, seed=args.seed + 2, views=1,
                                                    points_per_view=15000))
            wrong_known = sum(1 for t, p in zip(single.y_true, single.y_pred) if p not in (t, "unknown"))
            print(_line("single view", single) + f"  wrong labels {wrong_known}")
            report["classification"]["single_view"] = {**single.as_dict(), "wrong_labels": wrong_known}

        print(f"\n== classification: cell scans ({args.cell_types} types + twins 1.5 mm longer, "
              f"{args.withheld} withheld; 3-5 views, structured light, random yaw, fused at 1.5 mm)")
        cparts, held = cell_catalogue(args.cell_types, seed=args.seed, withheld=args.withheld)
        write_catalogue(tmp / "cell", cparts)
        clib = CadLibrary(tmp / "cell")
        cclf = CadClassifier(clib, compute_quality=False)
        for m in clib.models:
            cclf.reference(m)
            m.distance(np.zeros((1, 3)))
        key = f"cell_scans_t{args.cell_types}_s{args.cell_scans}_w{args.withheld}_seed{args.seed}.npz"
        cache = args.scan_cache / key if args.scan_cache else None
        if cache is not None and cache.is_file():
            cscans = _load_scans(cache)
        else:
            t0 = time.perf_counter()
            cscans = benchmark_scans(cparts + held, scans_per_type=args.cell_scans, seed=args.seed + 5, kind="cell")
            print(f"  {len(cscans)} scans simulated in {time.perf_counter() - t0:.0f} s "
                  f"({np.median([len(s[1]) for s in cscans]):.0f} points median)")
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                _save_scans(cache, cscans)
        _save_scans(tmp / "cell_scans.npz", cscans)
        cres = compare(cclf, cscans, clib.labels, tmp / "cell_scans.npz", tmp / "cell", args.base)
        for k, r in cres.items():
            print(_line(k, r))
        for k in (k for k in cres if k.startswith("base_")):
            print(f"  median time {k} / new = {cres[k].median_seconds / max(cres['new'].median_seconds, 1e-9):.1f}")
        twins = [i for i, t in enumerate(cres["new"].y_true) if t.endswith("_long")]
        print(f"  near-duplicate half (the 1.5 mm longer twins): top-1 "
              f"{100 * np.mean([cres['new'].y_pred[i] == cres['new'].y_true[i] for i in twins]):.2f} %")
        wrong = [(t, p) for t, p in zip(cres["new"].y_true, cres["new"].y_pred)
                 if t != p and not (p == "unknown" and t not in clib.labels)]
        if wrong:
            print(f"  wrong: {wrong}")
        report["cell"] = _figures(cres)
        report["cell"]["types"] = {"library": clib.labels, "withheld": [p.name for p in held]}
        _plot_confusion(out / "cell_confusion.png", list(cres["new"].y_true), list(cres["new"].y_pred),
                        clib.labels, "CAD classification of cell scans (withheld types should be unknown)")

        if not args.skip_defects:
            print(f"\n== defects: {args.defects} scans per kind (none, scratch, sink/dent, hole_position, "
                  "hole_diameter), 4 views")
            dres = compare_rule_sets(lib, parts, {"tuned": TUNED_RULES, "paper thresholds": None},
                                     samples_per_kind=args.defects, seed=args.seed + 3)
            for name, r in dres.items():
                f = r.f1
                print(f"  {name:<17} F1 scratch {100 * f['scratch']:6.2f}  dent {100 * f['dent']:6.2f}  "
                      f"hole {100 * f['hole']:6.2f}  macro {100 * r.macro_f1:6.2f} %  false alarms "
                      f"{100 * r.false_alarm_rate:5.1f} %  median {r.median_seconds:.3f} s/part")
            tuned = dres["tuned"]
            print(f"  paper (Kwon et al. 2025): macro F1 {PAPER_DEFECT_MACRO_F1:.1f} %; ours (tuned) / paper = "
                  f"{100 * tuned.macro_f1 / PAPER_DEFECT_MACRO_F1:.3f}")
            misses = [s for s in tuned.samples
                      if (s["class"] and not s["matched"]) or (s["kind"] == "none" and s["found"])]
            for s in misses:
                print(f"  miss: {s['kind']} on {s['part']} size {s['size']} found {s['found']}")
            report["defects"] = {n: {"f1": r.f1, "macro_f1": r.macro_f1, "counts": r.counts,
                                     "false_alarm_rate": r.false_alarm_rate, "median_seconds": r.median_seconds}
                                 for n, r in dres.items()}
            report["defects"]["misses"] = misses
            _plot_f1(out / "defects_f1.png", dres)

            print("\n== time per part: classify (with ISO 25012 quality) + inspect")
            rng = np.random.default_rng(args.seed + 4)
            times = []
            for part in parts[: min(8, len(parts))]:
                pts, _, _ = multi_view_scan(part.mesh, rng)
                t1 = time.perf_counter()
                r = classify(pts, lib)
                detect_defects(pts, lib.get(r.reference_label), transform=r.transform, rules=TUNED_RULES)
                times.append(time.perf_counter() - t1)
            print(f"  median {statistics.median(times):.3f} s per part ({len(pts)} points per scan, "
                  f"{len(lib)} models)")
            report["time_per_part_seconds"] = statistics.median(times)
            _plot_example(out / "defect_example.png", lib, parts, args.seed + 5)
    write_record(args.record, "bench_cad", report, also=[out / "bench_cad.json"])
    print(f"\nwrote {out}/bench_cad.json and the PNGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
