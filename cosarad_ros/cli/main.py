"""``cosarad`` command-line entry point.

Each sub-command lives in its own module ``cosarad_ros.cli.<module>`` that defines

* ``HELP``: a one-line description,
* ``add_arguments(parser: argparse.ArgumentParser) -> None``,
* ``run(args: argparse.Namespace) -> int`` (the exit code).

Modules are imported only when their command runs, so ``cosarad --help`` stays fast and a
command whose optional dependency is missing does not break the others.

Errors: every failure prints one line ``cosarad <command>: error: <what>`` on stderr and exits
non-zero -- 2 for bad input (``ValueError``, a missing or unreadable file), 1 for anything else,
130 on Ctrl-C. ``--debug`` (anywhere on the command line) prints the Python traceback too.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under cosarad_ros.cli
COMMANDS: dict[str, str] = {
    "synth": "synth",            # synthetic benchmarks
    "train": "train",            # COSARAD feature extractor
    "eval": "evaluate",          # anomaly detectors on a benchmark
    "inspect": "inspect",        # offline inspection of one scan file
    "register": "register",      # point-cloud registration
    "classify": "classify",      # zero-shot CAD classification
    "cad": "cad",                # CAD library management
    "scan": "scan",              # simulated scanners
    "plan-views": "plan_views",  # view planning
    "demo": "demo",              # the simulated inspection cell
    "cell-eval": "cell_eval",    # production runs through the in-process cell
}

# one-line help shown by `cosarad --help`, kept here so --help imports nothing heavy
SUMMARIES: dict[str, str] = {
    "synth": "write a synthetic inspection benchmark (Real3D-AD or Anomaly-ShapeNet layout)",
    "train": "train the COSARAD contrastive patch feature extractor",
    "eval": "evaluate an anomaly detector on a benchmark folder",
    "inspect": "inspect one scan file against templates of its part type",
    "register": "register SOURCE onto TARGET (global + ICP), print the transform",
    "classify": "classify a scan against a CAD library (zero-shot)",
    "cad": "manage the CAD library (add, list, remove, catalogue, prepare)",
    "scan": "simulate a scan of a mesh with a structured-light or laser-line sensor",
    "plan-views": "plan sensor views that cover a mesh",
    "demo": "run the simulated inspection cell end to end",
    "cell-eval": "evaluate the cell's verdicts on production runs (escapes, false rejects, POD / a90)",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosarad",
        description="Robotic 3D inspection: scanning, registration, anomaly detection, CAD classification.",
    )
    from cosarad_ros._version import __version__

    parser.add_argument("--version", action="version", version=f"cosarad {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        p = sub.add_parser(name, help=SUMMARIES.get(name, ""), description=SUMMARIES.get(name, ""))
        if name == command:
            module = importlib.import_module(f"cosarad_ros.cli.{COMMANDS[name]}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _one_line(exc: BaseException) -> str:
    """The first line of an error message, at most 400 characters."""
    text = (str(exc).strip().splitlines() or [""])[0].strip()
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        text = "out of memory: the input is too large"
    return text[:400] + ("..." if len(text) > 400 else "")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        command = None  # let argparse report the unknown command
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"cosarad {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line for every failure, the traceback on --debug
        if debug:
            import traceback

            traceback.print_exc()
        bad_input = isinstance(exc, (ValueError, OSError))
        what = _one_line(exc) if bad_input else f"{type(exc).__name__}: {_one_line(exc)}"
        hint = "" if debug or bad_input else " (run with --debug for the traceback)"
        print(f"cosarad {args.command}: error: {what}{hint}", file=sys.stderr)
        return 2 if bad_input else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
