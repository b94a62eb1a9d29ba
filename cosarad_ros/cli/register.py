"""``cosarad register SOURCE TARGET``: align a scan onto a reference (global + ICP) and print the result.

Examples::

    cosarad register scan.ply reference.pcd
    cosarad register scan.ply part.stl --json                 # meshes are sampled
    cosarad register laser.xyz structured_light.ply --scale   # 7-dof, scale drift reported
    cosarad register scan.ply ref.ply --out aligned.ply --voxel 0.002

Units are those of the files; thresholds scale with the target's size unless given. With
``--json`` the output is one JSON object with ``transform`` (4x4 nested list mapping SOURCE onto
TARGET), ``scale``, ``fitness``, ``rmse``, ``chamfer``, ``ok``, plus ``reason``, ``attempts``,
``voxel_size``, ``inlier_distance``, ``max_chamfer``, ``runner_up_chamfer`` and ``time_s``.
The exit code is 0 when the registration passed its checks and 1 when it did not.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

HELP = "register SOURCE onto TARGET (global + ICP), print the transform"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="cloud or mesh to move (PCD/PLY/XYZ/TXT/CSV or STL/OBJ/OFF/PLY mesh)")
    parser.add_argument("target", help="reference cloud or mesh")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--scale", action="store_true", help="also estimate a scale factor (Umeyama similarity)")
    parser.add_argument("--voxel", type=float, default=None,
                        help="working voxel size in file units (default: target bounding-box diagonal / 50)")
    parser.add_argument("--attempts", type=int, default=5, help="global hypotheses per feature scale (default 5)")
    parser.add_argument("--method", default="fpfh_ransac",
                        help="global method: fpfh_ransac, o3d_ransac, fgr or identity (default fpfh_ransac)")
    parser.add_argument("--refine", default="point_to_plane",
                        help="refinement: point_to_plane, generalized, point_to_point, symmetric, similarity")
    parser.add_argument("--min-fitness", type=float, default=0.9, help="least inlier fraction for ok (default 0.9)")
    parser.add_argument("--max-chamfer", type=float, default=None,
                        help="largest one-sided Chamfer distance for ok, file units "
                             "(default: target spacing + 0.05 voxel + surface noise)")
    parser.add_argument("--mesh-samples", type=int, default=100_000, help="points sampled from mesh inputs")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="write the transformed SOURCE to this cloud file")
    parser.add_argument("--max-points", type=int, default=200_000,
                        help="clouds with more points are cut to a random subset of this many first (default 200000)")


def run(args: argparse.Namespace) -> int:
    from cosarad_ros.core.geometry import cap_points
    from cosarad_ros.core.io import read_points, write_points
    from cosarad_ros.core.registration import RegisterOptions, register

    if args.attempts < 1:
        raise ValueError(f"--attempts must be >= 1, got {args.attempts}")
    if args.voxel is not None and not args.voxel > 0:
        raise ValueError(f"--voxel must be > 0, got {args.voxel}")
    src = cap_points(read_points(args.source, mesh_samples=args.mesh_samples, seed=args.seed), args.max_points,
                     seed=args.seed)
    tgt = cap_points(read_points(args.target, mesh_samples=args.mesh_samples, seed=args.seed + 1), args.max_points,
                     seed=args.seed + 1)
    options = RegisterOptions.from_options({"voxel_size": args.voxel, "global_method": args.method,
                                            "refine_method": args.refine, "min_fitness": args.min_fitness,
                                            "max_chamfer": args.max_chamfer})
    res = register(src, tgt, options, attempts=args.attempts, allow_scale=args.scale, seed=args.seed)
    if args.out:
        T = res.transform
        write_points(args.out, src @ T[:3, :3].T + T[:3, 3], dtype="float64")
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        status = "ok" if res.ok else f"FAILED: {res.reason}"
        print(f"registration {status}")
        print(f"  source {args.source} ({len(src)} points) -> target {args.target} ({len(tgt)} points)")
        print(f"  fitness {res.fitness:.4f}  rmse {res.rmse:.6g}  chamfer {res.chamfer:.6g}"
              f" (max {res.max_chamfer:.6g})  scale {res.scale:.6f}")
        print(f"  attempts {res.attempts}  voxel {res.voxel_size:.6g}  time {res.time_s:.2f} s")
        print("  transform (source -> target):")
        for row in np.asarray(res.transform):
            print("    " + "  ".join(f"{x: .9f}" for x in row))
        if args.out:
            print(f"  wrote {args.out}")
    return 0 if res.ok else 1
