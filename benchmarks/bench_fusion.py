"""Speed of view fusion (``registration.fuse_views``) as the cell runs it, against a previous
setting measured in the same run on the same views.

    python benchmarks/bench_fusion.py                       # four procedural part types
    python benchmarks/bench_fusion.py --types flange --repeats 5

For each part type the cell's views are planned (default cell, UR10 + MotionCam-3D S), scanned
once by the simulated sensor, cropped to the cell's region of interest, its sensor poses given a
random rigid error as a robot's kinematics has (``--pose-error-mm``, ``--pose-error-deg``, so the
refinement has something to correct) and fused with each
``--compare`` value of ``icp_tolerance`` (the pairwise ICP's stopping bound; ``1e-7`` was the
bound before ``1e-4``). Reports the median fusion time per setting, the ratio to the first
setting, and how far the fused result moves between settings (largest displacement of any view
point under the final view poses, micrometres): a faster setting must not change the cloud.

Prints a table and writes ``benchmarks/results/bench_fusion.json`` (``--record``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import add_record_option, write_record  # noqa: E402


def cell_views(mesh, *, seed: int = 0):
    """The cell's planned views of ``mesh``, scanned once: ``(clouds, sensor poses, part pose)``,
    each cloud cropped to the cell's region of interest as ``inspection.fusion.fuse_scans`` does.
    """
    from cosarad_ros.core.inspection.fusion import DEFAULT_ROI, crop_views
    from cosarad_ros.core.inspection.templates import cell_sensor_options
    from cosarad_ros.core.planning import CellModel, plan_views
    from cosarad_ros.core.sensors import SimulatedScene, make_sensor

    cell = CellModel.default()
    plan = plan_views(mesh, cell=cell, seed=0)
    scene = SimulatedScene.inspection_cell()
    sim = make_sensor({"type": "motioncam", **cell_sensor_options(cell), "scene": scene, "seed": seed})
    sim.connect()
    part_pose = plan.views[0].part_pose
    clouds, poses = [], []
    try:
        for view in plan.views:
            scene.set_part(mesh, pose=view.part_pose)
            frame = sim.grab(view.sensor_pose)
            clouds.append(np.asarray(frame.points, np.float64))
            poses.append(np.asarray(frame.sensor_pose, np.float64))
    finally:
        sim.close()
    clouds, poses = crop_views(clouds, poses, part_pose=part_pose, roi=DEFAULT_ROI)
    return clouds, poses, part_pose


def perturb(pose, rng, shift: float, angle_deg: float) -> np.ndarray:
    """``pose`` with a random rigid error: a rotation of ``angle_deg`` about a random axis and a
    translation of ``shift`` metres in a random direction.
    """
    from scipy.spatial.transform import Rotation

    axis, direction = rng.normal(size=3), rng.normal(size=3)
    E = np.eye(4)
    E[:3, :3] = Rotation.from_rotvec(np.deg2rad(angle_deg) * axis / np.linalg.norm(axis)).as_matrix()
    E[:3, 3] = shift * direction / np.linalg.norm(direction)
    return np.asarray(pose) @ E


def main(argv=None) -> int:
    from cosarad_ros.core.data.parts import make_part
    from cosarad_ros.core.inspection.fusion import CELL_VOXEL
    from cosarad_ros.core.registration.fusion import fuse_views

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", nargs="+", default=["flange", "bracket", "pocket_block", "mold_insert"],
                    help="procedural part families (default: flange bracket pocket_block mold_insert)")
    ap.add_argument("--compare", nargs="+", type=float, default=[1e-7, 1e-4],
                    help="icp_tolerance values; the first is the reference (default: 1e-7 1e-4)")
    ap.add_argument("--repeats", type=int, default=3, help="timed fusions per setting (default 3)")
    ap.add_argument("--pose-error-mm", type=float, default=0.5, help="sensor pose error, translation (default 0.5)")
    ap.add_argument("--pose-error-deg", type=float, default=0.1, help="sensor pose error, rotation (default 0.1)")
    add_record_option(ap, "bench_fusion")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    rows = []
    rng = np.random.default_rng(0)
    for fam in args.types:
        mesh = make_part(fam, seed=0).mesh
        clouds, poses, part_pose = cell_views(mesh)
        poses = [perturb(P, rng, args.pose_error_mm * 1e-3, args.pose_error_deg) for P in poses]
        row = {"part_type": fam, "views": len(clouds), "points": int(sum(len(c) for c in clouds)), "settings": {}}
        ref_poses = None
        for tol in args.compare:
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                res = fuse_views(clouds, poses, part_pose=part_pose, voxel_size=CELL_VOXEL, icp_tolerance=tol)
                times.append(time.perf_counter() - t)
            if ref_poses is None:
                ref_poses = res.poses
            moved = max(float(np.linalg.norm((c @ (a[:3, :3] - b[:3, :3]).T) + (a[:3, 3] - b[:3, 3]), axis=1).max())
                        for c, a, b in zip(clouds, res.poses, ref_poses))
            row["settings"][f"{tol:g}"] = {"median_s": float(np.median(times)), "times_s": times,
                                           "residual_mm": res.residual * 1e3,
                                           "moved_um": moved * 1e6, "refined_kept": bool(not np.allclose(
                                               res.poses, res.initial_poses))}
        base = row["settings"][f"{args.compare[0]:g}"]["median_s"]
        for v in row["settings"].values():
            v["ratio"] = v["median_s"] / base
        rows.append(row)
        print(f"{fam:<14} {row['views']} views {row['points']:>7} points  " + "  ".join(
            f"tol {k}: {v['median_s']:.2f} s (x{v['ratio']:.2f}, residual {v['residual_mm']:.4f} mm, "
            f"moved {v['moved_um']:.1f} um)"
            for k, v in row["settings"].items()), flush=True)
    ratios = {k: float(np.median([r["settings"][k]["ratio"] for r in rows])) for k in rows[0]["settings"]}
    print("median ratio to icp_tolerance " + f"{args.compare[0]:g}: "
          + ", ".join(f"{k}: x{v:.2f}" for k, v in ratios.items()))
    write_record(args.record, "bench_fusion", {"compare": args.compare, "repeats": args.repeats, "rows": rows,
                                               "median_ratio": ratios}, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
