"""How much of a fixed part's visible surface each arm of the cell can measure.

    python benchmarks/bench_reach.py                      # the production-run part types, UR5 and UR10
    python benchmarks/bench_reach.py --arms ur5 ur10 --seeds 4 5

For every part type of the production-run evaluation (``cosarad cell-eval``: every procedural
family and two package meshes, dimensions drawn from the seed as the evaluation draws them) and
every arm, the planner's candidate views are evaluated once (visibility, IK, collisions) and the
surface the fixture leaves visible -- where a sensor above the fixture can see the part, the
same test that places the evaluation's defects (``production.seen_from_above``) -- is split into
what reachable views see and what only unreachable ones would. A defect on the rest cannot be
measured, so a cell whose arm reaches less than the planner's 95 % target misses defects however
good its detectors are.

Prints a table (share of the fixture-visible area seen by reachable views, per part type and
arm, and the median) and writes ``benchmarks/results/bench_reach.json`` (``--record``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import add_record_option, write_record  # noqa: E402


def reach_share(mesh, cell, *, n_samples: int = 3000, n_candidates: int = 240) -> dict:
    """Shares of the fixture-visible area of ``mesh`` seen by reachable / by any candidate view."""
    from cosarad_ros.core.inspection.production import seen_from_above
    from cosarad_ros.core.planning.candidates import evaluate_candidates, sensor_for_cell

    cs = evaluate_candidates(mesh, cell=cell, sensor=sensor_for_cell(cell), n_samples=n_samples,
                             n_candidates=n_candidates, turntable_angles_deg=(0.0,), seed=0)
    w = cs.samples.areas
    shown = seen_from_above(mesh)(cs.samples.points, cs.samples.normals)
    feasible = np.array(sorted(cs.feasible), dtype=int)
    reach = cs.visibility[feasible].any(axis=0) if feasible.size else np.zeros(len(w), dtype=bool)
    anyview = cs.visibility.any(axis=0)
    area = float(w[shown].sum())
    return {"fixture_visible_of_all": area / float(w.sum()),
            "reachable": float(w[shown & reach].sum()) / area,
            "any_candidate": float(w[shown & anyview].sum()) / area,
            "feasible_candidates": int(feasible.size), "candidates": int(len(cs.visibility))}


def main(argv=None) -> int:
    from cosarad_ros.core.inspection.production import EVAL_TYPES, make_part_type
    from cosarad_ros.core.planning import CellModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", nargs="+", default=["ur5", "ur10"], help="UR types to compare (default: ur5 ur10)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[4], help="production-run seeds of the part types")
    ap.add_argument("--types", nargs="+", default=list(EVAL_TYPES), help="part types (default: cell-eval's)")
    add_record_option(ap, "bench_reach")
    args = ap.parse_args(argv)
    cells = {arm: CellModel.default({"ur_type": arm}) for arm in args.arms}
    rows = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        for i, name in enumerate(args.types):
            part = make_part_type(name, seed=seed * 100 + i, label=f"{name}_{i}")
            row = {"seed": seed, "part_type": part.name}
            for arm, cell in cells.items():
                row[arm] = reach_share(part.mesh, cell)
            rows.append(row)
            print(f"{part.name:<16} " + "  ".join(f"{arm} {row[arm]['reachable'] * 100:5.1f} %" for arm in args.arms),
                  flush=True)
    medians = {arm: float(np.median([r[arm]["reachable"] for r in rows])) for arm in args.arms}
    ranges = {arm: [float(min(r[arm]["reachable"] for r in rows)), float(max(r[arm]["reachable"] for r in rows))]
              for arm in args.arms}
    print("share of the fixture-visible surface seen by reachable views: "
          + "; ".join(f"{a} median {medians[a] * 100:.1f} % ({ranges[a][0] * 100:.1f}-{ranges[a][1] * 100:.1f} %)"
                      for a in args.arms))
    write_record(args.record, "bench_reach", {"arms": args.arms, "seeds": args.seeds, "median_reachable": medians,
                                              "range_reachable": ranges, "parts": rows,
                                              "seconds": time.perf_counter() - t0}, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
