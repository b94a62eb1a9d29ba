"""``cosarad inspect``: score one scan against templates of its part type.

Prints the verdict (PASS / FAIL), the object score and threshold, and the defects found
(centroid and size in the template frame); writes a PNG anomaly map.

Templates: ``--templates`` takes cloud files and / or folders; a folder contributes its cloud
files, a benchmark class folder (``<class>/train/``) its templates.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

HELP = "inspect one scan against templates of its part type"

_EXT = (".pcd", ".ply", ".xyz", ".txt", ".pts", ".stl", ".obj", ".off")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan", help="the scan (.pcd, .ply, .xyz, ...)")
    parser.add_argument("--templates", nargs="+", required=True,
                        help="template files or folders (a benchmark class folder uses its train/ templates)")
    parser.add_argument("--part-type", default=None, help="label of the part type (default: scan folder name)")
    parser.add_argument("--method", choices=("cosarad", "fpfh", "global-bank", "deviation"), default="cosarad")
    parser.add_argument("--model", default=None, help="COSARAD model (default: the shipped model)")
    parser.add_argument("--unit", choices=("mm", "cm", "m"), default="m", help="unit of the files (default m)")
    parser.add_argument("--config", default="{}", help="detector options as JSON")
    parser.add_argument("--cache", default=None, help="memory-bank cache folder")
    parser.add_argument("--png", default=None, help="anomaly map PNG (default: <scan stem>_anomaly.png here)")
    parser.add_argument("--max-points", type=int, default=200_000,
                        help="scans and templates with more points are cut to a random subset of this many first "
                             "(default 200000)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _template_files(items) -> list[Path]:
    files: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            if (p / "train").is_dir():
                p = p / "train"
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in _EXT)
            tmpl = [q for q in found if "template" in q.stem.lower()]
            files += tmpl or found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"template path not found: {p}")
    if not files:
        raise ValueError("no template files found in --templates")
    return files


def run(args: argparse.Namespace) -> int:
    from cosarad_ros.core.anomaly import make_detector
    from cosarad_ros.core.anomaly.dataset import UNIT_SCALES
    from cosarad_ros.core.anomaly.evaluation import plot_anomaly_map
    from cosarad_ros.core.geometry import transform_points
    from cosarad_ros.core.io import read_scan
    from cosarad_ros.core.names import NAME_PATTERN, check_name

    try:
        cfg = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config is not valid JSON: {exc}") from None
    k = UNIT_SCALES[args.unit]
    folder = Path(args.scan).resolve().parent.name
    part = check_name(args.part_type, what="--part-type") if args.part_type is not None else \
        (folder if NAME_PATTERN.fullmatch(folder) and ".." not in folder else "part")
    files = _template_files(args.templates)
    scan = read_scan(args.scan, scale=k, max_points=args.max_points)
    templates = [read_scan(p, scale=k, max_points=args.max_points) for p in files]
    det = make_detector({**cfg, "method": args.method, "model": args.model})
    det.fit(part, templates, cache_dir=args.cache)
    s = det.score(scan, part)
    png = args.png or f"{Path(args.scan).stem}_anomaly.png"
    verdict = "FAIL" if s.is_anomalous else "PASS"
    plot_anomaly_map(transform_points(s.transform, scan), s.point_scores, None, png,
                     title=f"{part}: {verdict}, object score {s.object_score:.2f} (threshold {s.threshold:.2f})",
                     threshold=s.point_threshold)
    doc = {"scan": os.path.abspath(args.scan), "part_type": part, "method": args.method, "verdict": verdict,
           "object_score": s.object_score, "threshold": s.threshold, "registration_ok": s.registration_ok,
           "chamfer_m": s.chamfer, "coverage": s.coverage,
           "defects": [{"centroid": (d.centroid / k).tolist(), "extent": (d.extent / k).tolist(),
                        "score": d.score, "point_count": d.point_count} for d in s.defects],
           "units": args.unit, "png": os.path.abspath(png), "timings_s": s.timings}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{verdict}: object score {s.object_score:.3f} (threshold {s.threshold:.3f}), "
          f"registration {'ok' if s.registration_ok else 'FAILED'} (chamfer {s.chamfer / k:.4g} {args.unit}), "
          f"coverage {s.coverage:.0%}")
    if not s.defects:
        print("no defect regions above the point threshold")
    for i, d in enumerate(s.defects):
        c = ", ".join(f"{v:.2f}" for v in d.centroid / k)
        e = " x ".join(f"{v:.2f}" for v in d.extent / k)
        print(f"  defect {i + 1}: score {d.score:.2f}, {d.point_count} points, centre ({c}) {args.unit}, "
              f"size {e} {args.unit} (template frame)")
    print(f"anomaly map: {png}")
    return 0
