"""Accuracy of view fusion (``registration.fuse_views``): how far each view ends up from where the
sensor really was, for several settings of the refinement's acceptance rule measured in the same run.

    python benchmarks/bench_fusion_accuracy.py                     # 7 part families x 2 parts x 3 error levels
    python benchmarks/bench_fusion_accuracy.py --types flange --seeds 0 --compare 0.05 0.1

For each part the cell's views are planned and scanned by the simulated sensor (default cell,
UR10 + MotionCam-3D S) from their true poses; the poses handed to the fusion carry a random rigid
error per view (``--errors``: pairs of millimetres and degrees, ``0 0`` being exact kinematics,
as in the simulated cell). Each ``--compare`` value of ``min_residual_gain`` fuses the same views:
the refined poses are kept only when they lower the overlap residual by at least that share.

The error of a view is the largest distance, over its points, between where the fused pose puts
them and where the true pose does (millimetres). Reports per error level and setting the median
and the worst view error over all parts, and the same for the kinematic poses given (what fusion
without refinement would leave). Prints a table and writes
``benchmarks/results/bench_fusion_accuracy.json`` (``--record``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fusion import cell_views, perturb  # noqa: E402
from record import add_record_option, write_record  # noqa: E402

FAMILIES = ["block", "pocket_block", "flange", "bracket", "mold_insert", "boss_plate", "u_channel"]


def view_errors(clouds, poses, truth) -> np.ndarray:
    """``(V,)`` largest displacement [m] of each view's points between ``poses`` and ``truth``
    (sensor -> part transforms).
    """
    return np.array([np.linalg.norm(c @ (P[:3, :3] - T[:3, :3]).T + (P[:3, 3] - T[:3, 3]), axis=1).max()
                     for c, P, T in zip(clouds, poses, truth)])


def main(argv=None) -> int:
    from tqdm.auto import tqdm

    from cosarad_ros.core.data.parts import make_part
    from cosarad_ros.core.inspection.fusion import CELL_VOXEL
    from cosarad_ros.core.registration.fusion import fuse_views, view_poses

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", nargs="+", default=FAMILIES, help="procedural part families (default: all seven)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="part seeds per family (default 0 1)")
    ap.add_argument("--errors", nargs="+", type=float, default=[0, 0, 0.1, 0.02, 0.3, 0.05, 1.0, 0.2],
                    help="pose error levels as pairs 'mm deg' (default: 0 0  0.1 0.02  0.3 0.05  1.0 0.2)")
    ap.add_argument("--compare", nargs="+", type=float, default=[0.05, 0.1, 0.15, 0.2],
                    help="min_residual_gain values; the first is the reference (default: 0.05 0.1 0.15 0.2)")
    add_record_option(ap, "bench_fusion_accuracy")
    args = ap.parse_args(argv)
    if len(args.errors) % 2:
        ap.error("--errors takes pairs: millimetres degrees")
    levels = [(args.errors[k], args.errors[k + 1]) for k in range(0, len(args.errors), 2)]
    rng = np.random.default_rng(0)
    parts = []
    jobs = [(f, s) for f in args.types for s in args.seeds]
    for fam, seed in tqdm(jobs, desc="fusion accuracy: parts"):
        mesh = make_part(fam, seed=seed).mesh
        clouds, poses, part_pose = cell_views(mesh, seed=seed)
        truth = view_poses(poses, part_pose=part_pose)
        rec = {"part_type": fam, "seed": seed, "views": len(clouds), "levels": []}
        for mm, deg in levels:
            given = [perturb(P, rng, mm * 1e-3, deg) for P in poses]
            lv = {"error_mm": mm, "error_deg": deg,
                  "kinematic_mm": (view_errors(clouds, view_poses(given, part_pose=part_pose), truth) * 1e3).tolist(),
                  "settings": {}}
            for tau in args.compare:
                res = fuse_views(clouds, given, part_pose=part_pose, voxel_size=CELL_VOXEL, min_residual_gain=tau)
                lv["settings"][f"{tau:g}"] = {"view_error_mm": (view_errors(clouds, res.poses, truth) * 1e3).tolist(),
                                              "refined_kept": bool(not np.allclose(res.poses, res.initial_poses)),
                                              "residual_mm": res.residual * 1e3}
            rec["levels"].append(lv)
        parts.append(rec)
    summary = []
    print(f"{'pose error':<16}{'setting':<22}{'median view error':>20}{'worst':>10}{'p90':>10}")
    for k, (mm, deg) in enumerate(levels):
        kin = np.concatenate([p["levels"][k]["kinematic_mm"] for p in parts])
        rows = {"kinematic": kin}
        for tau in args.compare:
            rows[f"min_residual_gain {tau:g}"] = np.concatenate(
                [p["levels"][k]["settings"][f"{tau:g}"]["view_error_mm"] for p in parts])
        for name, e in rows.items():
            s = {"error_mm": mm, "error_deg": deg, "setting": name, "median_mm": float(np.median(e)),
                 "p90_mm": float(np.percentile(e, 90)), "max_mm": float(e.max()), "views": int(len(e))}
            summary.append(s)
            print(f"{mm:g} mm {deg:g} deg{'':<4}{name:<22}{s['median_mm']:>17.3f} mm{s['max_mm']:>7.3f} mm"
                  f"{s['p90_mm']:>7.3f} mm")
    write_record(args.record, "bench_fusion_accuracy", {"compare": args.compare, "levels": levels,
                                                        "summary": summary, "parts": parts}, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
