"""``cosarad synth``: write a synthetic inspection benchmark (Real3D-AD or Anomaly-ShapeNet layout)."""
from __future__ import annotations

import argparse

HELP = "write a synthetic inspection benchmark (Real3D-AD or Anomaly-ShapeNet layout)"


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cosarad_ros.core.data.defects import ALL_DEFECT_TYPES, DEFECT_TYPES

    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--layout", choices=("real3d", "anomaly-shapenet"), default="real3d",
                        help="folder layout and units: real3d = millimetres, partial test scans; "
                             "anomaly-shapenet = normalised units, full test scans (default real3d)")
    parser.add_argument("--classes", type=_positive_int, default=12, help="number of classes (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="master seed; same seed -> identical files")
    parser.add_argument("--templates", type=_positive_int, default=4, help="templates per class (default 4)")
    parser.add_argument("--tests", type=_positive_int, default=34, help="test scans per class (default 34)")
    parser.add_argument("--anomalous-fraction", type=float, default=0.5,
                        help="share of defective test scans (default 0.5)")
    parser.add_argument("--points", type=_positive_int, default=20000, help="points per test scan (default 20000)")
    parser.add_argument("--template-points", type=_positive_int, default=40000,
                        help="points per template (default 40000)")
    parser.add_argument("--defects", default=",".join(DEFECT_TYPES),
                        help="comma-separated defect types to cycle through (default: "
                             f"{','.join(DEFECT_TYPES)}; also: "
                             f"{','.join(t for t in ALL_DEFECT_TYPES if t not in DEFECT_TYPES)})")
    parser.add_argument("--procedural-fraction", type=float, default=0.5,
                        help="share of procedural CAD classes; the rest are package meshes (default 0.5)")
    parser.add_argument("--noise", type=float, default=0.03, help="scan noise sigma in mm (default 0.03)")
    parser.add_argument("--density-variation", type=float, default=0.4,
                        help="strength of the smooth density variation in [0, 1) (default 0.4)")
    parser.add_argument("--no-pose", action="store_true", help="do not give scans a random pose")
    parser.add_argument("--label-tol", type=float, default=0.3,
                        help="ground-truth tolerance in mm (rim around removed material) (default 0.3)")
    parser.add_argument("--gallery", type=int, default=8, help="defective samples in gallery.png (0: none)")
    parser.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from cosarad_ros.core.data.synth import SynthConfig, generate_benchmark

    types = tuple(t.strip() for t in args.defects.split(",") if t.strip())
    config = SynthConfig(
        layout=args.layout, n_classes=args.classes, n_templates=args.templates, n_tests=args.tests,
        anomalous_fraction=args.anomalous_fraction, template_points=args.template_points,
        test_points=args.points, defect_types=types, procedural_fraction=args.procedural_fraction,
        noise=args.noise * 1e-3, density_variation=args.density_variation, pose=not args.no_pose,
        label_tol=args.label_tol * 1e-3, seed=args.seed, gallery=args.gallery, workers=args.workers,
    ).validate()
    res = generate_benchmark(args.out, config, progress=not args.quiet)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(res.defect_counts.items()))
    print(f"wrote {res.n_classes} classes ({res.n_templates} templates, {res.n_tests} test scans, "
          f"{res.n_defective} defective: {kinds}) to {res.out} in {res.seconds:.1f} s")
    print(f"manifest: {res.manifest}")
    if res.gallery:
        print(f"gallery:  {res.gallery}")
    return 0
