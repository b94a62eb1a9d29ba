"""``cosarad plan-views MESH``: plan sensor views that cover a part's surface.

Examples::

    cosarad plan-views part.stl --scale 0.001 --json
    cosarad plan-views part.ply --sensor motioncam3d_m --ur-type ur10 --png coverage.png
    cosarad plan-views part.stl --turntable --solver ilp --target-coverage 0.98
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "plan sensor views that cover a mesh"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mesh", help="part mesh (STL, PLY, OBJ, OFF, GLB) in the part frame")
    parser.add_argument("--json", action="store_true",
                        help="print the plan as JSON (coverage, views with sensor_pose and joints, planning_time)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the mesh coordinates (0.001 for a mesh in millimetres)")
    parser.add_argument("--place-on-fixture", action="store_true",
                        help="move the mesh so its bounding box is centred on the fixture with its lowest point on it")
    parser.add_argument("--target-coverage", type=float, default=0.95,
                        help="share of the reachable visible surface to cover (0-1], default 0.95")
    parser.add_argument("--solver", default="ilp", choices=("ilp", "greedy", "random"),
                        help="set-cover solver (default ilp: exact within 5 s, never worse than greedy)")
    parser.add_argument("--max-views", type=int, default=0, help="cap on the number of views (0: none)")
    parser.add_argument("--samples", type=int, default=3000, help="surface samples (coverage resolution)")
    parser.add_argument("--candidates", type=int, default=240, help="candidate views generated")
    parser.add_argument("--sensor", default=None,
                        help="sensor preset of urdf/sensors.yaml (motioncam3d_s, motioncam3d_m, compact); "
                             "also sets the sensor body in the cell URDF")
    parser.add_argument("--ur-type", default="ur10", help="arm: ur3, ur5, ur10 (example-robot-data; default ur10)")
    parser.add_argument("--turntable", action="store_true", help="the fixture carries a turntable")
    parser.add_argument("--fixture", type=float, nargs=3, metavar=("X", "Y", "HEIGHT"), default=None,
                        help="fixture position on the table and height [m] (default 0.45 0 0.12)")
    parser.add_argument("--png", default="", help="write the coverage picture here")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _load_mesh(path: str, scale: float):
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mesh not found: {p}")
    try:
        from cosarad_ros.core.io import read_mesh  # the shared reader, when present
    except ImportError:
        read_mesh = None
    try:
        mesh = read_mesh(p) if read_mesh is not None else trimesh.load(p, force="mesh")
    except (ValueError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - trimesh raises many types on corrupt files
        raise ValueError(f"cannot read mesh {p}: {exc}") from exc
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"{p} holds no triangle mesh")
    if scale <= 0:
        raise ValueError(f"--scale must be > 0, got {scale}")
    if scale != 1.0:
        mesh = mesh.copy()
        mesh.apply_scale(scale)
    return mesh


def place_on_fixture(mesh):
    """Translate ``mesh`` so its bounding box is centred over the part frame origin in x/y and
    its lowest point is at z = 0 (the fixture top).
    """
    lo, hi = mesh.bounds
    out = mesh.copy()
    out.apply_translation([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    return out


def run(args: argparse.Namespace) -> int:
    from cosarad_ros.core.planning import CellModel, SensorViewModel, plan_views

    if not (0.0 < args.target_coverage <= 1.0):
        raise ValueError(f"--target-coverage must be in (0, 1], got {args.target_coverage}")
    mesh = _load_mesh(args.mesh, args.scale)
    if args.place_on_fixture:
        mesh = place_on_fixture(mesh)
    cfg = {"ur_type": args.ur_type, "turntable": bool(args.turntable)}
    if args.sensor:
        cfg["sensor_type"] = args.sensor
    if args.fixture is not None:
        cfg.update(fixture_x=args.fixture[0], fixture_y=args.fixture[1], fixture_height=args.fixture[2])
    cell = CellModel.default(cfg)
    sensor = SensorViewModel.preset(args.sensor) if args.sensor else None
    plan = plan_views(mesh, cell=cell, sensor=sensor, target_coverage=args.target_coverage, solver=args.solver,
                      max_views=args.max_views, n_samples=args.samples, n_candidates=args.candidates,
                      seed=args.seed, progress=not args.quiet and not args.json and sys.stderr.isatty())
    png = None
    if args.png:
        from cosarad_ros.core.planning.render import save_coverage_png

        png = save_coverage_png(mesh, plan, args.png, title=Path(args.mesh).name)
    if args.json:
        out = plan.to_dict()
        out["mesh"] = str(args.mesh)
        if png is not None:
            out["coverage_png"] = str(png)
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{Path(args.mesh).name}: {len(plan.views)} views cover {100 * plan.coverage:.1f} % of the visible "
          f"surface (target {100 * plan.target_coverage:.0f} %); {100 * plan.surface_coverage:.1f} % of the whole "
          f"surface, {100 * plan.visible_fraction:.1f} % is reachable-visible at all")
    print(f"candidates {plan.n_candidates}, reachable {plan.n_feasible}; joint travel {plan.travel_time:.2f} s "
          f"ordered vs {plan.travel_time_unordered:.2f} s unordered; planned in {plan.planning_time:.2f} s")
    if plan.blocked_transitions:
        print(f"warning: {plan.blocked_transitions} move(s) between views have no collision-free joint path")
    for k, v in enumerate(plan.views):
        p = v.sensor_pose[:3, 3]
        joints = " ".join(f"{q:+.3f}" for q in v.joints)
        print(f"  view {k}: +{100 * v.coverage_gain:5.1f} %  sensor at ({p[0]:+.3f}, {p[1]:+.3f}, {p[2]:+.3f}) m"
              f"  joints [{joints}]" + ("" if v.direct else f"  ({max(0, len(v.path) - 2)} via points)"))
    if png is not None:
        print(f"coverage picture: {png}")
    return 0
