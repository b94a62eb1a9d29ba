"""Time to a verdict in the simulated cell: the first part of a new type, the first part of a type
prepared ahead (``cosarad cad prepare``), and a repeat part, measured in the same run.

    python benchmarks/bench_cell_speed.py                          # block, bracket, flange
    python benchmarks/bench_cell_speed.py --types flange u_channel --repeats 3

For each procedural part family a one-model CAD library is written and a good copy of the part
is inspected by the in-process cell (``core.inspection.inprocess.InProcessCell``, the part type
given, as ``cosarad cell-eval --tell-type``):

* **cold**: a fresh cell and cache folder; the views are planned, the good templates simulated
  and the memory banks fitted while the part waits (what every first part of a type cost before
  part types could be prepared);
* **prepared**: a fresh cell on a cache folder that ``prepare_part_types`` filled beforehand
  (its time is reported separately as ``prepare_s``); only the banks are fitted from the stored
  templates;
* **started**: a cell on that cache folder that prepared the type at start-up
  (``InProcessCell.prepare``, as the ``anomaly_node`` does with ``prepare_part_types``: banks
  fitted, hole allowances measured; its time is reported as ``startup_s``);
* **repeat**: the same part again on the prepared cell (``--repeats`` times, median).

Times are wall-clock seconds of ``run_inspection`` (plan, scan, fuse, register, detect).
Reports the medians over families and the ratios prepared / cold and repeat / cold. Prints a
table and writes ``benchmarks/results/bench_cell_speed.json`` (``--record``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import add_record_option, write_record  # noqa: E402


def inspect_once(cell, mesh_path: str, label: str, part_id: str) -> tuple[float, str, dict]:
    """``(seconds, verdict, stage seconds)`` of one inspection of the part at ``mesh_path``."""
    from cosarad_ros.core.inspection.pipeline import run_inspection

    cell.load_part(mesh_path, part_id=part_id)
    t = time.perf_counter()
    run = run_inspection(cell, part_id=part_id, part_type=label)
    return time.perf_counter() - t, run.outcome.verdict, dict(run.outcome.stage_seconds)


def main(argv=None) -> int:
    from cosarad_ros.core.cad.evaluation import write_catalogue
    from cosarad_ros.core.data.parts import make_part
    from cosarad_ros.core.inspection.inprocess import InProcessCell
    from cosarad_ros.core.inspection.templates import prepare_part_types

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", nargs="+", default=["block", "bracket", "flange"],
                    help="procedural part families (default: block bracket flange)")
    ap.add_argument("--repeats", type=int, default=2, help="repeat inspections per family (default 2)")
    add_record_option(ap, "bench_cell_speed")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_cell_speed_") as tmp:
        for fam in args.types:
            lib = Path(tmp) / fam / "lib"
            part = make_part(fam, seed=0, name=f"{fam}_0")
            label = write_catalogue(lib, [part])[0]       # the library holds millimetres
            mesh_path = str(Path(tmp) / fam / "good_part.stl")
            part.mesh.export(mesh_path)                    # the part on the fixture, metres
            row = {"part_type": fam}
            with InProcessCell(lib, work_dir=Path(tmp) / fam / "cold") as cell:
                row["cold_s"], row["cold_verdict"], row["cold_stages"] = inspect_once(cell, mesh_path, label, "cold")
            work = Path(tmp) / fam / "prepared"
            t = time.perf_counter()
            prepare_part_types(lib, cache_dir=work / "banks")
            row["prepare_s"] = time.perf_counter() - t
            with InProcessCell(lib, work_dir=work) as cell:
                row["prepared_s"], row["prepared_verdict"], row["prepared_stages"] = inspect_once(
                    cell, mesh_path, label, "prepared")
                reps = [inspect_once(cell, mesh_path, label, f"repeat{k}") for k in range(args.repeats)]
            with InProcessCell(lib, work_dir=work) as cell:
                t = time.perf_counter()
                cell.prepare([label])
                row["startup_s"] = time.perf_counter() - t
                row["started_s"], row["started_verdict"], row["started_stages"] = inspect_once(
                    cell, mesh_path, label, "started")
            row["repeat_s"] = float(np.median([r[0] for r in reps]))
            row["repeat_verdicts"] = [r[1] for r in reps]
            row["repeat_stages"] = reps[-1][2]
            rows.append(row)
            print(f"{fam:<14} cold {row['cold_s']:6.1f} s  prepared {row['prepared_s']:6.1f} s "
                  f"(prepare {row['prepare_s']:.1f} s)  started {row['started_s']:6.1f} s (start-up "
                  f"{row['startup_s']:.1f} s)  repeat {row['repeat_s']:6.1f} s  verdicts {row['cold_verdict']}/"
                  f"{row['prepared_verdict']}/{row['started_verdict']}/{'/'.join(row['repeat_verdicts'])}", flush=True)
    keys = ("cold_s", "prepared_s", "started_s", "repeat_s", "prepare_s", "startup_s")
    med = {k: float(np.median([r[k] for r in rows])) for k in keys}
    ratios = {f"{k}_over_cold": float(np.median([r[f"{k}_s"] / r["cold_s"] for r in rows]))
              for k in ("prepared", "started", "repeat")}
    print(f"median: cold {med['cold_s']:.1f} s, prepared {med['prepared_s']:.1f} s "
          f"(x{ratios['prepared_over_cold']:.2f}), started {med['started_s']:.1f} s "
          f"(x{ratios['started_over_cold']:.2f}), "
          f"repeat {med['repeat_s']:.1f} s (x{ratios['repeat_over_cold']:.2f}); preparing a type "
          f"{med['prepare_s']:.1f} s, at start-up {med['startup_s']:.1f} s")
    write_record(args.record, "bench_cell_speed", {"types": args.types, "repeats": args.repeats, "rows": rows,
                                                   "median": med, "ratios": ratios}, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
