"""Benchmark of ``register`` against plain Open3D point-to-point ICP from identity, same trials, same run.

    python benchmarks/bench_registration.py                  # 8 parts x 10 rigid trials + scale + wrong pairs
    python benchmarks/bench_registration.py --quick          # 4 parts x 3 trials
    python benchmarks/bench_registration.py --trials 40 --out /tmp/bench_reg

Protocol: each part is normalised to a size drawn log-uniformly in 30-300 mm (metres);
the reference is a sample of its outer (scannable) surface; the source is a partial view of an
independent denser sample (hidden-point removal from a random direction) with Gaussian noise of
0.05-0.3 % of the size, moved by a rotation uniform over SO(3) and a translation of about the
part's size. A trial succeeds when the pose is recovered within 1 mm (largest displacement over
the source) and 0.5 degrees. Reported per method: success rate, silent failures (``ok`` but
wrong; ICP has no ``ok``, so every ICP miss is silent), median time. Also: scale trials (a drift
of +-5 %, success = ok and scale within 0.2 %, or honestly not ok), and pairs of different parts
(success = reported not ok).

With ``--base DIR`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/reg-base
<commit>``) that code's ``register`` runs every rigid trial too, with its defaults, in a worker
process right after this code (same load): success, silent failures and the ratio of the median
times, this code over that one.

Prints a table with medians and ratios, writes ``registration_errors.png`` to ``--out`` and the
figures to ``benchmarks/results/bench_registration.json`` (``--record``; see ``record.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import add_record_option, write_record  # noqa: E402

PARTS = ("bunny", "duck", "head", "motor", "sh2", "shape", "tr12j", "bracket")
QUICK_PARTS = ("bunny", "duck", "head", "bracket")


# a worker in the other checkout: registers the trial in the .npz named on each input line
_WORKER = r"""
import json, sys, time
import numpy as np
from cosarad_ros.core.registration import register
print("ready", flush=True)
for line in sys.stdin:
    path, seed = line.split()
    d = np.load(path)
    t = time.perf_counter()
    r = register(d["source"], d["target"], seed=int(seed))
    print(json.dumps([np.asarray(r.transform).tolist(), bool(r.ok), time.perf_counter() - t]), flush=True)
"""


class BaseWorker:
    """``register`` of another checkout, in its own process, one trial at a time."""

    def __init__(self, checkout: Path):
        env = dict(os.environ, PYTHONPATH=str(checkout))
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER], cwd=str(checkout), env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the worker in {checkout} did not start")

    def register(self, path: Path, seed: int) -> tuple[np.ndarray, bool, float]:
        self.proc.stdin.write(f"{path} {seed}\n")
        self.proc.stdin.flush()
        T, ok, seconds = json.loads(self.proc.stdout.readline())
        return np.asarray(T), bool(ok), float(seconds)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _shells(names, n_dense: int, n_ref: int):
    from tqdm import tqdm

    from cosarad_ros.core.data.package_meshes import load_package_mesh
    from cosarad_ros.core.data.parts import make_part
    from cosarad_ros.core.io import sample_mesh
    from cosarad_ros.core.registration import outer_shell

    out = {}
    for name in tqdm(names, desc="outer surfaces"):
        mesh = make_part("bracket", seed=3).mesh if name == "bracket" else load_package_mesh(name, size=1.0).mesh
        mesh = mesh.copy()
        mesh.apply_scale(1.0 / float(max(mesh.extents)))
        dense, _ = sample_mesh(mesh, n_dense, seed=1)
        ref, _ = sample_mesh(mesh, n_ref, seed=2)
        out[name] = (dense[outer_shell(dense, views=40)], ref[outer_shell(ref, views=40)])
    return out


def _icp_from_identity(src, tgt, size):
    import open3d as o3d

    reg = o3d.pipelines.registration
    a = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(src))
    b = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(tgt))
    res = reg.registration_icp(a, b, 0.1 * size, np.eye(4), reg.TransformationEstimationPointToPoint(),
                               reg.ICPConvergenceCriteria(max_iteration=100))
    return np.asarray(res.transformation)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 parts x 3 trials, few scale / wrong-pair trials")
    ap.add_argument("--trials", type=int, default=None, help="rigid trials per part (default 10; quick 3)")
    ap.add_argument("--scale-trials", type=int, default=None, help="scale trials per part (default 2; quick 1)")
    ap.add_argument("--wrong-pairs", type=int, default=None, help="different-part pairs (default 16; quick 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/cosarad_bench_registration")
    ap.add_argument("--base", type=Path, help="checkout of an earlier register() to compare with (same trials)")
    add_record_option(ap, "bench_registration")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm import tqdm

    from cosarad_ros.core.registration import register
    from cosarad_ros.core.registration.trials import make_trial, pose_error

    names = QUICK_PARTS if args.quick else PARTS
    n_rigid = args.trials or (3 if args.quick else 10)
    n_scale = args.scale_trials if args.scale_trials is not None else (1 if args.quick else 2)
    n_wrong = args.wrong_pairs if args.wrong_pairs is not None else (4 if args.quick else 16)
    shells = _shells(names, 60_000, 30_000)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = {"register": [], "icp": [], "base": []}
    base = BaseWorker(args.base) if args.base else None
    trial_file = out / "trial.npz"
    for name in names:
        dense, ref = shells[name]
        for _ in tqdm(range(n_rigid), desc=f"rigid {name}", leave=False):
            size = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))))
            noise = size * float(np.exp(rng.uniform(np.log(5e-4), np.log(3e-3))))
            tr = make_trial(dense * size, ref * size, rng, noise=noise)
            t0 = time.perf_counter()
            res = register(tr.source, tr.target, seed=len(rows["register"]))
            t_reg = time.perf_counter() - t0
            e, a = pose_error(res.transform, tr.transform, tr.source)
            rows["register"].append((name, e, a, res.ok, t_reg))
            if base is not None:
                np.savez(trial_file, source=tr.source, target=tr.target)
                T_b, ok_b, t_b = base.register(trial_file, len(rows["register"]) - 1)
                e, a = pose_error(T_b, tr.transform, tr.source)
                rows["base"].append((name, e, a, ok_b, t_b))
            t0 = time.perf_counter()
            T = _icp_from_identity(tr.source, tr.target, size)
            t_icp = time.perf_counter() - t0
            e, a = pose_error(T, tr.transform, tr.source)
            rows["icp"].append((name, e, a, True, t_icp))

    scale_rows = []
    for name in names:
        dense, ref = shells[name]
        for _ in range(n_scale):
            size = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))))
            s = float(rng.uniform(0.95, 1.05))
            tr = make_trial(dense * size, ref * size, rng, noise=size * 1e-3, scale=s)
            res = register(tr.source, tr.target, allow_scale=True)
            e, a = pose_error(res.transform, tr.transform, tr.source)
            scale_rows.append((name, res.ok, abs(res.scale / s - 1.0), e, a, res.time_s))

    wrong_rows = []
    for k in tqdm(range(n_wrong), desc="different parts", leave=False):
        a_name, b_name = rng.choice(names, size=2, replace=False)
        size = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))))
        tr = make_trial(shells[a_name][0] * size, shells[b_name][1] * size, rng, noise=size * 1e-3)
        res = register(tr.source, tr.target, seed=k)
        wrong_rows.append((a_name, b_name, res.ok, res.time_s))

    def good(r):
        return r[1] < 1e-3 and r[2] < 0.5

    print(f"\nRigid trials: {len(rows['register'])} ({n_rigid} per part), rotation uniform over SO(3), "
          f"partial view, noise 0.05-0.3 % of size, sizes 30-300 mm")
    print(f"{'method':<34}{'success':>10}{'silent fail':>13}{'median s':>10}{'p90 s':>8}")
    if base is not None:
        base.close()
    figures = {"parts": list(names), "rigid_trials_per_part": n_rigid, "seed": args.seed, "rigid": {}}
    methods = [("register", "register (FPFH RANSAC + ICP)"), ("icp", "Open3D p2p ICP from identity")]
    if rows["base"]:
        base_commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=str(args.base), capture_output=True,
                                     text=True).stdout.strip() or str(args.base)
        methods.append(("base", f"register at {base_commit}"))
        figures["base_commit"] = base_commit
    for method, label in methods:
        r = rows[method]
        succ = np.mean([good(x) for x in r])
        silent = np.mean([x[3] and not good(x) for x in r])
        ts = np.array([x[4] for x in r])
        print(f"{label:<34}{100 * succ:>9.1f}%{100 * silent:>12.1f}%{np.median(ts):>10.3f}{np.quantile(ts, 0.9):>8.2f}")
        figures["rigid"][method] = {"trials": len(r), "success": float(succ), "silent_failures": float(silent),
                                    "median_s": float(np.median(ts)), "p90_s": float(np.quantile(ts, 0.9))}
    figures["rigid"]["register"]["per_part"] = {
        n: [int(sum(good(x) for x in rows["register"] if x[0] == n)), int(sum(x[0] == n for x in rows["register"]))]
        for n in names}
    t_reg = np.median([x[4] for x in rows["register"]])
    t_icp = np.median([x[4] for x in rows["icp"]])
    s_reg = np.mean([good(x) for x in rows["register"]])
    s_icp = np.mean([good(x) for x in rows["icp"]])
    gain = f"x{s_reg / s_icp:.1f}" if s_icp > 0 else f"{100 * s_reg:.0f} % vs 0 %"
    print(f"ratio register/ICP: success {gain}, median time x{t_reg / t_icp:.1f}")
    if rows["base"]:
        t_base = np.median([x[4] for x in rows["base"]])
        ratio = float(t_reg / t_base)
        print(f"ratio to the base commit's register: median time x{ratio:.2f} ({t_reg:.3f} s against {t_base:.3f} s, "
              f"same trials, alternating); success {100 * s_reg:.1f} % against "
              f"{100 * np.mean([good(x) for x in rows['base']]):.1f} %")
        figures["rigid"]["time_ratio_to_base"] = ratio
    print("\nper part (register): " + ", ".join(
        f"{n} {sum(good(x) for x in rows['register'] if x[0] == n)}/{sum(x[0] == n for x in rows['register'])}"
        for n in names))
    errs = np.array([x[1] for x in rows["register"] if good(x)])
    angs = np.array([x[2] for x in rows["register"] if good(x)])
    if len(errs):
        print(f"successful registrations: median error {1000 * np.median(errs):.3f} mm "
              f"(p95 {1000 * np.quantile(errs, 0.95):.3f} mm), median angle {np.median(angs):.3f} deg")
        figures["rigid"]["register"].update(median_error_mm=1000 * float(np.median(errs)),
                                            p95_error_mm=1000 * float(np.quantile(errs, 0.95)),
                                            median_angle_deg=float(np.median(angs)))
    if scale_rows:
        ok_rows = [r for r in scale_rows if r[1]]
        within = [r for r in ok_rows if r[2] < 0.002 and r[3] < 1e-3 and r[4] < 0.5]
        wrong_ok = [r for r in ok_rows if not (r[2] < 0.002)]
        print(f"\nScale trials ({len(scale_rows)}, drift +-5 %): ok {len(ok_rows)}, ok and within 0.2 % "
              f"{len(within)}, ok but scale off by > 0.2 % {len(wrong_ok)}; median |scale error| of ok "
              f"{100 * np.median([r[2] for r in ok_rows]) if ok_rows else float('nan'):.3f} %, "
              f"median time {np.median([r[5] for r in scale_rows]):.2f} s")
        refused = [r for r in scale_rows if not r[1]]
        if refused:
            print("  not ok (honest): " + ", ".join(r[0] for r in refused))
        figures["scale"] = {"trials": len(scale_rows), "ok": len(ok_rows), "ok_within_0.2pct": len(within),
                            "ok_but_scale_off": len(wrong_ok), "not_ok": [r[0] for r in refused],
                            "median_abs_scale_error_pct": (100 * float(np.median([r[2] for r in ok_rows]))
                                                           if ok_rows else None),
                            "median_s": float(np.median([r[5] for r in scale_rows]))}
    if wrong_rows:
        rej = np.mean([not r[2] for r in wrong_rows])
        print(f"\nDifferent-part pairs ({len(wrong_rows)}): reported not registered {100 * rej:.1f}%, "
              f"median time {np.median([r[3] for r in wrong_rows]):.2f} s")
        figures["different_parts"] = {"pairs": len(wrong_rows), "reported_not_ok": float(rej),
                                      "median_s": float(np.median([r[3] for r in wrong_rows]))}

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, colour in (("register", "tab:blue"), ("icp", "tab:orange")):
        e = np.maximum([x[1] * 1000 for x in rows[method]], 1e-4)
        axes[0].hist(np.log10(e), bins=30, alpha=0.6, color=colour, label=method)
    axes[0].axvline(0.0, color="k", ls="--", lw=1)
    axes[0].set_xlabel("log10 pose error [mm] (dashed: 1 mm)")
    axes[0].set_ylabel("trials")
    axes[0].legend()
    succ = [np.mean([good(x) for x in rows["register"] if x[0] == n]) for n in names]
    succ_icp = [np.mean([good(x) for x in rows["icp"] if x[0] == n]) for n in names]
    xs = np.arange(len(names))
    axes[1].bar(xs - 0.2, succ, 0.4, label="register")
    axes[1].bar(xs + 0.2, succ_icp, 0.4, label="ICP from identity")
    axes[1].axhline(0.95, color="k", ls="--", lw=1)
    axes[1].set_xticks(xs, names, rotation=30)
    axes[1].set_ylabel("success (1 mm, 0.5 deg)")
    axes[1].legend()
    fig.tight_layout()
    png = out / "registration_errors.png"
    fig.savefig(png, dpi=110)
    print(f"\nwrote {png}")
    write_record(args.record, "bench_registration", figures, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
