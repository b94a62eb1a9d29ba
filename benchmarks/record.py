"""The one record format of the benchmarks: their figures, and when, where and on which code they were measured.

Every ``benchmarks/bench_*.py`` ends with :func:`write_record`, which writes one JSON object::

    {"benchmark": "bench_registration",
     "date": "2026-12-07", "timestamp": "2026-12-07T02:10:33+00:00",
     "machine": {"description": "2 cores (Intel(R) Xeon(R) ...), 7.7 GiB, Linux-6.1...-x86_64, no GPU",
                 "cpu": "...", "cores": 2, "memory_gib": 7.7, "load_1min": 3.4, "gpu": null,
                 "system": "...", "python": "3.11.2", "torch": "2.13.0+cpu"},
     "commit": "4d7b1f9...", "dirty": false,     # dirty: code differed from the commit
     "command": "benchmarks/bench_registration.py --quick",
     ... the benchmark's own keys (its figures and settings) ...}

The benchmark's own keys sit at the top level beside these, so the files that the benchmarks
wrote before this format existed keep every key they had (``summary.json`` of
``bench_anomaly.py``, ``bench_cad.json``, the ``--json`` file of ``bench_network.py``).

The record goes to ``benchmarks/results/<benchmark>.json`` unless the benchmark's ``--record``
option names another path. The files in ``benchmarks/results/`` are the ones the README and
``docs/`` quote: rerun the benchmark, commit its record, and the figure, its date, machine and
commit travel together. ``load_1min`` is the machine's load when the record was written: on a
shared machine it says how much the timings had to compete with.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RECORD_KEYS = ("benchmark", "date", "timestamp", "machine", "commit", "dirty", "command")


def default_record_path(benchmark: str) -> Path:
    """``benchmarks/results/<benchmark>.json``."""
    return RESULTS / f"{benchmark}.json"


def add_record_option(parser, benchmark: str) -> None:
    """Add ``--record PATH`` (default :func:`default_record_path`) to a benchmark's parser."""
    parser.add_argument("--record", default=str(default_record_path(benchmark)),
                        help="where the JSON record (figures, date, machine, commit) goes "
                             "(default: %(default)s)")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit() -> tuple[str | None, bool | None]:
    """``(hash of HEAD, whether tracked files differ from it)``; ``(None, None)`` outside a git checkout.

    Only changes that can move a figure count as dirty: the records themselves
    (``benchmarks/results/``), ``docs/`` and Markdown files do not.
    """
    head = _git("rev-parse", "HEAD")
    if head is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results",
                  ":(exclude)docs", ":(exclude)*.md")
    return head, (None if status is None else bool(status))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    """What the figures were measured on: CPU model, cores, memory, load, GPU, OS, Python, torch.

    torch and its GPU are reported only when the benchmark imported torch (this function never
    imports it).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch = sys.modules.get("torch")
    gpu = None
    if torch is not None:
        try:
            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001 - a broken CUDA set-up is reported as no GPU
            gpu = None
    info = {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gib": _memory_gib(),
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "gpu": gpu,
        "system": platform.platform(),
        "python": platform.python_version(),
        "torch": getattr(torch, "__version__", None),
    }
    mem = f", {info['memory_gib']} GiB" if info["memory_gib"] else ""
    info["description"] = f"{cores} cores ({info['cpu']}){mem}, {info['system']}, {gpu or 'no GPU'}"
    return info


def make_record(benchmark: str, figures: Mapping[str, Any], *, argv: list[str] | None = None) -> dict:
    """The record of one run: the :data:`RECORD_KEYS` followed by ``figures``.

    Raises:
        ValueError: ``benchmark`` is empty, or ``figures`` uses one of :data:`RECORD_KEYS`.
    """
    if not benchmark:
        raise ValueError("benchmark must name the benchmark, got an empty string")
    clash = sorted(set(figures) & set(RECORD_KEYS))
    if clash:
        raise ValueError(f"figures must not use the record's own keys {clash}")
    now = datetime.datetime.now(datetime.timezone.utc).astimezone()
    head, dirty = commit()
    argv = sys.argv[1:] if argv is None else list(argv)
    return {"benchmark": benchmark, "date": now.date().isoformat(), "timestamp": now.isoformat(timespec="seconds"),
            "machine": machine(), "commit": head, "dirty": dirty,
            "command": " ".join([f"benchmarks/{benchmark}.py", *argv]), **figures}


def write_record(path: str | os.PathLike, benchmark: str, figures: Mapping[str, Any], *,
                 argv: list[str] | None = None, also: list[str | os.PathLike] = ()) -> dict:
    """Write the record of this run to ``path`` (and to every path in ``also``) and return it.

    Args:
        path: the record file (``--record``); folders are created.
        benchmark: the benchmark's name (``"bench_registration"``).
        figures: the benchmark's figures and settings (JSON-serialisable; numpy scalars and
            arrays are converted).
        argv: the benchmark's arguments, without the program name (default ``sys.argv[1:]``);
            pass the ``argv`` a ``main(argv)`` was called with.
        also: further paths that get the same record (files other tools already read).
    """
    record = make_record(benchmark, figures, argv=argv)
    text = json.dumps(record, indent=2, default=_plain) + "\n"
    for p in (path, *also):
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(p)
    print(f"record: {path}")
    return record


def _plain(x):
    """NumPy scalars / arrays, paths and other numbers as JSON values."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        raise TypeError(f"not JSON-serialisable: {type(x).__name__}") from None
