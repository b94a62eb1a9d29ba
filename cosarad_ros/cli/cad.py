"""``cosarad cad``: manage a CAD library folder.

Examples::

    cosarad cad add bracket.stl --library cad_library/ --metadata bracket.yaml
    cosarad cad add part.stl --library cad_library/ --label insert_07 --units mm
    cosarad cad list --library cad_library/ [--json]
    cosarad cad remove insert_07 --library cad_library/
    cosarad cad catalogue --library cad_library/ --types 36 --seed 0
    cosarad cad prepare --library cad_library/ [--cache DIR] [LABEL ...]
    cosarad cad add part.stl --library cad_library/ --prepare [--cache DIR]

``add`` copies the mesh into the folder (with ``<label>.yaml`` metadata) so that the next
classification already knows the new type; ``catalogue`` fills a folder with the procedural parts
of ``cosarad_ros.core.data`` (meshes in millimetres with their hole metadata). ``prepare`` (or
``add --prepare``) plans each part type's views in the cell and simulates its good templates into
the cell's cache folder, so the first part of the type is inspected without that wait. See
docs/cad.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "manage the CAD library (add, list, remove, catalogue, prepare)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cad_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("add", help="add a mesh (persisted into the library folder)")
    p.add_argument("mesh", help="STL / PLY / OBJ / OFF / GLB (STEP / IGES when gmsh is installed)")
    p.add_argument("--library", required=True, help="library folder (created when missing)")
    p.add_argument("--label", help="class label (default: metadata label or the file name)")
    p.add_argument("--metadata", help="YAML metadata file (code, units, nominal_dimensions, tolerances, holes)")
    p.add_argument("--units", choices=("m", "cm", "mm", "um", "in"),
                   help="unit of the mesh and metadata lengths (overrides the metadata's 'units')")
    p.add_argument("--overwrite", action="store_true", help="replace a model with the same label")
    p.add_argument("--prepare", action="store_true",
                   help="also plan its views and simulate its good templates into the cell's cache folder "
                        "(see 'prepare'; implied by --cache)")
    _cache_argument(p)
    p = sub.add_parser("list", help="list the models")
    p.add_argument("--library", required=True)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("remove", help="delete a model from the folder")
    p.add_argument("label")
    p.add_argument("--library", required=True)
    p = sub.add_parser("catalogue", help="fill a folder with the procedural part catalogue")
    p.add_argument("--library", required=True)
    p.add_argument("--types", type=int, default=36, help="number of part types (default 36)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--near-duplicates", type=float, default=1 / 3, help="share of near-duplicates (default 1/3)")
    p = sub.add_parser("prepare", help="plan views and simulate good templates ahead of the first part")
    p.add_argument("labels", nargs="*", metavar="LABEL", help="part types (default: every model)")
    p.add_argument("--library", required=True)
    p.add_argument("--templates", type=int, default=None,
                   help="good templates per part type (default: as the cell, anomaly_node n_templates)")
    _cache_argument(p)


def _cache_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", default=None,
                   help="the cell's cache folder (anomaly_node cache_dir; the in-process cell's "
                        "<work dir>/banks); default $ROS_HOME/cosarad_banks (~/.ros/cosarad_banks)")


def _prepare(library, labels, cache, n_templates) -> int:
    """Prepare part types; prints one line per type and returns the exit status."""
    from cosarad_ros.core.inspection.templates import CELL_TEMPLATES, default_cache_dir, prepare_part_types

    n = CELL_TEMPLATES if n_templates is None else n_templates
    if n < 1:
        raise ValueError(f"--templates must be >= 1, got {n}")
    cache = cache or default_cache_dir()
    res = prepare_part_types(library, cache_dir=cache, labels=labels or None, n_templates=n,
                             progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    failed = 0
    for label, r in res.items():
        if "error" in r:
            failed += 1
            print(f"{label}: not prepared: {r['error']}")
        else:
            print(f"{label}: {r['templates']} templates ({r['points']} points) ready in {r['seconds']:.1f} s")
    print(f"prepared {len(res) - failed} of {len(res)} part types in {cache}")
    return 1 if failed else 0


def _model_row(m) -> dict:
    return {"label": m.label, "code": m.code, "file": m.path.name if m.path else "",
            "dimensions_mm": [round(float(v) * 1000, 3) for v in m.dimensions],
            "holes": len(m.holes), "faces": int(len(m.mesh.faces))}


def run(args: argparse.Namespace) -> int:
    from cosarad_ros.core.cad import CadLibrary

    if args.cad_command == "add":
        meta = {}
        if args.metadata:
            path = Path(args.metadata)
            if not path.is_file():
                raise FileNotFoundError(f"metadata file not found: {path}")
            from cosarad_ros.core.cad import parse_metadata
            from cosarad_ros.core.io import YAML_MAX_BYTES

            if path.stat().st_size > YAML_MAX_BYTES:
                raise ValueError(f"metadata file {path} is {path.stat().st_size} bytes; the limit is "
                                 f"{YAML_MAX_BYTES} bytes")
            meta = parse_metadata(path.read_text(encoding="utf-8"))
        if args.units:
            meta["units"] = args.units
        created = not Path(args.library).exists()
        lib = CadLibrary(args.library, create=True)
        try:
            m = lib.add(args.mesh, label=args.label, metadata=meta, overwrite=args.overwrite)
        except BaseException:
            if created and not any(lib.folder.iterdir()):
                lib.folder.rmdir()  # a refused first model leaves no empty library behind
            raise
        d = ", ".join(f"{v * 1000:.2f}" for v in m.dimensions)
        print(f"added {m.label} -> {m.path} (box [{d}] mm, {len(m.holes)} holes); library has {len(lib)} models")
        if args.prepare or args.cache:
            return _prepare(args.library, [m.label], args.cache, None)
        return 0
    if args.cad_command == "list":
        lib = CadLibrary(args.library, strict=False)
        rows = [_model_row(m) for m in lib.models]
        if args.json:
            json.dump({"library": str(lib.folder), "models": rows, "errors": lib.errors}, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        print(f"{lib.folder}: {len(rows)} models")
        for r in rows:
            print(f"  {r['label']:<28} box {r['dimensions_mm']} mm  holes {r['holes']}  {r['file']}")
        for name, err in lib.errors.items():
            print(f"  unreadable {name}: {err}")
        return 0
    if args.cad_command == "remove":
        lib = CadLibrary(args.library)
        try:
            lib.remove(args.label)
        except KeyError as exc:
            raise ValueError(str(exc).strip("'\"")) from None
        print(f"removed {args.label}; library has {len(lib)} models")
        return 0
    if args.cad_command == "catalogue":
        from cosarad_ros.core.cad.evaluation import write_catalogue
        from cosarad_ros.core.data.parts import part_catalogue

        if args.types < 1:
            raise ValueError(f"--types must be >= 1, got {args.types}")
        parts = part_catalogue(args.types, seed=args.seed, near_duplicate_fraction=args.near_duplicates)
        labels = write_catalogue(args.library, parts)
        print(f"wrote {len(labels)} part types to {args.library}")
        return 0
    if args.cad_command == "prepare":
        return _prepare(args.library, args.labels, args.cache, args.templates)
    raise ValueError(f"unknown cad subcommand {args.cad_command!r}")  # argparse prevents this
