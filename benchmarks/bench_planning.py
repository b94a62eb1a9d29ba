"""Benchmark of the view planner: coverage versus number of views against random view sampling,
views needed for the target (greedy, ILP, random), planning time and joint travel, all measured
in the same run on the same candidate sets.

    python benchmarks/bench_planning.py                       # procedural parts + OCC meshes
    python benchmarks/bench_planning.py --quick               # three parts, fewer samples
    python benchmarks/bench_planning.py --turntable --out /tmp/bench

For every part the candidate views (with visibility and reachability) are evaluated once; then

* greedy curve: coverage of the visible area after the first k greedy picks;
* random curve: median coverage after k views drawn at random from the same reachable
  candidates (``--random-draws`` draws);
* views to reach the target: greedy (with pruning), ILP (HiGHS), random (median);
* the full ``plan_views`` wall time (median of ``--repeats`` runs) and its stages;
* joint travel time of the ordered path vs the cover's pick order.

Prints a table with medians and ratios, writes ``coverage_vs_views.png`` to ``--out`` and the
figures to ``benchmarks/results/bench_planning.json`` (``--record``; see ``record.py``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import add_record_option, write_record  # noqa: E402

OCC = Path("/usr/share/opencascade/data/stl")


def _parts(quick: bool):
    import trimesh

    from cosarad_ros.core.data.parts import make_part

    fams = ["bracket", "mold_insert", "flange"] if quick else ["bracket", "mold_insert", "flange", "pocket_block",
                                                               "boss_plate", "u_channel"]
    out = [(f"{f}", make_part(f, seed=1).mesh) for f in fams]
    occ = [] if quick else ["sh1", "sh2", "shape", "motor"]
    for name in occ:
        p = OCC / f"{name}.stl"
        if p.is_file():
            m = trimesh.load(p, force="mesh")
            m.apply_scale(0.001)
            lo, hi = m.bounds
            m.apply_translation([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
            out.append((f"occ:{name}", m))
    return out


def _curve(vis, w, order, kmax):
    covered = np.zeros(vis.shape[1], bool)
    total = w[vis.any(axis=0)].sum()
    out = []
    for j in list(order)[:kmax]:
        covered |= vis[j]
        out.append(w[covered].sum() / total)
    out += [out[-1] if out else 0.0] * (kmax - len(out))
    return np.asarray(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="three procedural parts, 1500 samples, 1 repeat")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--candidates", type=int, default=240)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--random-draws", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=None, help="plan_views timing repeats per part")
    ap.add_argument("--kmax", type=int, default=12)
    ap.add_argument("--turntable", action="store_true")
    ap.add_argument("--ilp-time", type=float, default=20.0, help="HiGHS time limit per part [s]")
    ap.add_argument("--out", default="/tmp/cosarad_bench_planning")
    add_record_option(ap, "bench_planning")
    args = ap.parse_args(argv)
    samples = args.samples or (1500 if args.quick else 3000)
    repeats = args.repeats or (1 if args.quick else 3)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm import tqdm

    from cosarad_ros.core.planning import CellModel, GreedyCover, IlpCover, RandomCover, plan_views
    from cosarad_ros.core.planning.candidates import evaluate_candidates, sensor_for_cell

    cell = CellModel.default({"turntable": args.turntable})
    sensor = sensor_for_cell(cell)
    print(f"cell: {cell.config.ur_type} + {sensor.name} (FOV {sensor.fov_deg[0]:.0f}x{sensor.fov_deg[1]:.0f} deg, "
          f"range {sensor.near:.2f}-{sensor.far:.2f} m, max incidence {sensor.max_incidence_deg:.0f} deg), "
          f"turntable={args.turntable}; {samples} samples, {args.candidates} candidates (x2 rolls), "
          f"target {args.target:.2f}")
    rows, curves_g, curves_r = [], [], []
    parts = _parts(args.quick)
    for name, mesh in tqdm(parts, desc="parts", unit="part"):
        cs = evaluate_candidates(mesh, cell=cell, sensor=sensor, n_samples=samples, n_candidates=args.candidates)
        idx = cs.feasible_indices
        F = cs.visibility[idx]
        w = cs.samples.areas
        target = args.target * w[F.any(axis=0)].sum()
        g_order = GreedyCover(prune=False).solve(F, w, np.inf).chosen
        curves_g.append(_curve(F, w, g_order, args.kmax))
        rng = np.random.default_rng(0)
        curves_r.append(np.median([_curve(F, w, rng.permutation(len(idx)), args.kmax)
                                   for _ in range(args.random_draws)], axis=0))
        g = GreedyCover().solve(F, w, target)
        t = time.perf_counter()
        ilp = IlpCover(time_limit=args.ilp_time).solve(F, w, target)
        t_ilp = time.perf_counter() - t
        r = [len(RandomCover(seed=s).solve(F, w, target).chosen) for s in range(args.random_draws)]
        times, plan = [], None
        for k in range(repeats):
            plan = plan_views(mesh, cell=cell, sensor=sensor, target_coverage=args.target, n_samples=samples,
                              n_candidates=args.candidates, seed=0)
            times.append(plan.planning_time)
        rows.append(dict(part=name, faces=len(mesh.faces), feasible=len(idx), cands=len(cs.poses),
                         visible=plan.visible_fraction, greedy=len(g.chosen), ilp=len(ilp.chosen),
                         ilp_opt=ilp.optimal, ilp_s=t_ilp, random=float(np.median(r)), plan_s=float(np.median(times)),
                         views=len(plan.views), coverage=plan.coverage, travel=plan.travel_time,
                         travel_unordered=plan.travel_time_unordered, stages=plan.timings))

    hdr = (f"{'part':<16}{'faces':>7}{'reach':>9}{'vis%':>6}{'greedy':>7}{'ilp':>5}{'rand':>6}{'r/g':>6}"
           f"{'ilp s':>7}{'plan s':>8}{'cov%':>7}{'travel s':>10}{'unord s':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['part']:<16}{r['faces']:>7}{r['feasible']:>5}/{r['cands']:<3}{100 * r['visible']:>6.1f}"
              f"{r['greedy']:>7}{r['ilp']:>4}{'*' if r['ilp_opt'] else ' '}{r['random']:>6.1f}"
              f"{r['random'] / r['greedy']:>6.2f}{r['ilp_s']:>7.2f}{r['plan_s']:>8.2f}{100 * r['coverage']:>7.1f}"
              f"{r['travel']:>10.2f}{r['travel_unordered']:>9.2f}")
    med = lambda k: float(np.median([r[k] for r in rows]))  # noqa: E731
    print("-" * len(hdr))
    print(f"median views to {args.target:.0%}: greedy {med('greedy'):.1f}, ILP {med('ilp'):.1f}, "
          f"random {med('random'):.1f} -> random/greedy {np.median([r['random'] / r['greedy'] for r in rows]):.2f}x; "
          f"ILP saves a view on {sum(r['ilp'] < r['greedy'] for r in rows)}/{len(rows)} parts "
          f"(median ILP time {med('ilp_s'):.2f} s, '*' = proven optimal)")
    print(f"median plan_views time {med('plan_s'):.2f} s (stages: " + ", ".join(
        f"{k} {np.median([r['stages'][k] for r in rows]):.2f}" for k in rows[0]['stages']) + ")")
    print(f"median joint travel: ordered {med('travel'):.2f} s vs pick order {med('travel_unordered'):.2f} s "
          f"-> {np.median([r['travel'] / max(r['travel_unordered'], 1e-9) for r in rows]):.2f}x")
    G, R = np.median(curves_g, axis=0), np.median(curves_r, axis=0)
    print("coverage after k views (median over parts), greedy vs random:")
    for k in range(args.kmax):
        print(f"  k={k + 1:>2}: greedy {100 * G[k]:5.1f} %   random {100 * R[k]:5.1f} %   "
              f"ratio {G[k] / max(R[k], 1e-9):.2f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = np.arange(1, args.kmax + 1)
    for cg, cr in zip(curves_g, curves_r):
        ax.plot(ks, 100 * cg, color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(ks, 100 * cr, color="tab:orange", alpha=0.25, lw=0.8)
    ax.plot(ks, 100 * G, color="tab:blue", lw=2.5, label="greedy set cover (median)")
    ax.plot(ks, 100 * R, color="tab:orange", lw=2.5, label="random reachable views (median)")
    ax.axhline(100 * args.target, color="grey", ls="--", lw=1, label=f"target {args.target:.0%}")
    ax.set_xlabel("number of views")
    ax.set_ylabel("coverage of the visible surface [%]")
    ax.set_title(f"View planning, {len(rows)} parts, {cell.config.ur_type} + {sensor.name}")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "coverage_vs_views.png", dpi=120)
    print(f"curve: {out / 'coverage_vs_views.png'}")
    write_record(args.record, "bench_planning", {
        "cell": f"{cell.config.ur_type} + {sensor.name}", "turntable": args.turntable, "samples": samples,
        "candidates": args.candidates, "target": args.target, "random_draws": args.random_draws, "repeats": repeats,
        "parts": rows,
        "median": {"views_greedy": med("greedy"), "views_ilp": med("ilp"), "views_random": med("random"),
                   "random_over_greedy": float(np.median([r["random"] / r["greedy"] for r in rows])),
                   "ilp_saves_a_view_on": int(sum(r["ilp"] < r["greedy"] for r in rows)),
                   "ilp_s": med("ilp_s"), "plan_views_s": med("plan_s"),
                   "plan_views_stages_s": {k: float(np.median([r["stages"][k] for r in rows]))
                                           for k in rows[0]["stages"]},
                   "travel_s": med("travel"), "travel_unordered_s": med("travel_unordered")},
        "coverage_after_k_views": {"greedy": G, "random": R}}, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
