"""``cosarad classify``: zero-shot classification of a scan against a CAD library.

Examples::

    cosarad classify scan.ply --library cad_library/
    cosarad classify scan.pcd --library cad_library/ --scan-units mm --json
    cosarad classify scan.ply --library cad_library/ --defects --set max_shortfall=0.3

Prints the label (or ``unknown``), the score in percent, the candidates with their box
deviations, registration residuals and coverage, the pose of the scan on the chosen model
(scan -> model, with its fitness and residual) and the ISO/IEC 25012 quality report. With
``--json``: one object with ``label``, ``score``, ``candidates``, ``quality``, ``transform``,
``fitness``, ``rmse`` (and details); with ``--defects`` also ``defects`` (rule-based scratch /
dent / hole checks against the chosen model).
See docs/cad.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HELP = "classify a scan against a CAD library (zero-shot)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan", help="scan file (PCD, PLY, XYZ/TXT; meshes are sampled)")
    parser.add_argument("--library", required=True, help="CAD library folder (see `cosarad cad`)")
    parser.add_argument("--scan-units", choices=("m", "mm"), default="m", help="unit of the scan file (default m)")
    parser.add_argument("--dim-tolerance", type=float, default=None,
                        help="largest amount a scan box extent may exceed a model's by, in metres "
                             "(default 0.003; the paper's two-sided gate is 0.001)")
    parser.add_argument("--aligner", default="box_icp", choices=("box_icp", "registration", "none"),
                        help="registration used for the residual (default box_icp; none = paper ranking only)")
    parser.add_argument("--cache", default=None,
                        help="folder keeping each model's prepared reference between calls "
                             "(default: LIBRARY/.cache; 'none': memory only)")
    parser.add_argument("--no-quality", action="store_true", help="skip the ISO 25012 quality report")
    parser.add_argument("--defects", action="store_true",
                        help="also run the rule-based scratch / dent / hole checks against the chosen model")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="classifier option, e.g. --set max_rmse=0.001 --set max_shortfall=0.3")
    parser.add_argument("--rules", metavar="YAML",
                        help="defect rules as YAML text, e.g. '{scratch: {depth_threshold: 0.0002}}'")
    parser.add_argument("--max-points", type=int, default=200_000,
                        help="scans with more points are cut to a random subset of this many first (default 200000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def parse_sets(items) -> dict:
    """``["key=value", ...]`` -> dict with YAML-parsed values."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            raise ValueError(f"cannot parse --set {item!r}: {exc}") from None
    return out


def _mm(v) -> str:
    return "[" + ", ".join(f"{x * 1000:.2f}" for x in np.asarray(v).ravel()) + "]"


def run(args: argparse.Namespace) -> int:
    import yaml

    from cosarad_ros.core.cad import CadClassifier, CadLibrary
    from cosarad_ros.core.io import read_scan

    scan = read_scan(args.scan, scale=1e-3 if args.scan_units == "mm" else 1.0, max_points=args.max_points)
    lib = CadLibrary(args.library)
    opts = parse_sets(args.set)
    if args.dim_tolerance is not None:
        opts.setdefault("dim_tolerance", args.dim_tolerance)
    if args.cache != "none":
        opts.setdefault("cache_dir", args.cache or os.path.join(args.library, ".cache"))
    try:
        clf = CadClassifier(lib, aligner=args.aligner, compute_quality=not args.no_quality, **opts)
    except TypeError as exc:
        raise ValueError(f"bad --set option: {exc}") from None
    res = clf.classify(scan)
    out = res.as_dict()
    report = None
    if args.defects:
        from cosarad_ros.core.cad import detect_defects

        if not res.candidates:
            raise ValueError("no model to check defects against (the CAD library is empty)")
        try:
            rules = yaml.safe_load(args.rules) if args.rules else None
        except yaml.YAMLError as exc:
            raise ValueError(f"--rules is not valid YAML: {exc}") from None
        model = lib.get(res.reference_label)
        transform = res.transform
        if transform is None:  # no registration asked for (aligner none, no quality): align now
            from cosarad_ros.core.cad import BoxIcpAligner

            transform = BoxIcpAligner().align(scan, clf.scan_box(scan), model).transform
        report = detect_defects(scan, model, transform=transform, rules=rules)
        out["defects"] = report.as_dict()["defects"]
        out["holes"] = report.as_dict()["holes"]
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"label: {res.label}")
    print(f"score: {res.score:.1f} %")
    if res.reason:
        print(f"reason: {res.reason}")
    print(f"scan box: {_mm(res.scan_dimensions)} mm")
    print("candidates:" if res.known or not res.candidates else "nearest models:")
    for c in res.candidates:
        rmse = "-" if c.registration_rmse < 0 else f"{c.registration_rmse * 1000:.3f} mm"
        cov = "" if c.coverage < 0 else f"  coverage {100 * c.coverage:.1f} %"
        print(f"  {c.label:<28} {c.score:6.1f} %  box deviation {_mm(c.deviation)} mm  residual {rmse}{cov}")
    if res.transform is not None:
        print(f"pose on {res.reference_label} (scan -> model, fitness {res.fitness:.3f}, "
              f"rmse {res.rmse * 1000:.3f} mm):")
        for row in np.asarray(res.transform):
            print("  " + " ".join(f"{v:10.6f}" for v in row))
    if res.quality is not None:
        q = res.quality
        print(f"quality (ISO/IEC 25012, against {res.reference_label}): total {q.total:.3f} grade {q.grade}")
        for k in ("accuracy", "consistency", "completeness", "validity", "uniqueness"):
            print(f"  {k:<13} {getattr(q, k):.3f}")
    if report is not None:
        print(f"defects: {len(report.defects)}")
        for d in report.defects:
            print(f"  {d.type:<14} at {_mm(d.centroid)} mm  score {d.score * 1000:.3f} mm  points {d.point_count}")
        for h in report.holes:
            state = "not observed" if not h.observed else ("missing" if not h.found else (
                f"centre off {h.centre_error * 1000:.3f} mm, diameter {h.diameter_error * 1000:+.3f} mm"))
            print(f"  hole {h.hole.name}: {'ok' if h.ok else 'DEFECT'} ({state})")
    return 0
