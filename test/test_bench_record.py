"""The benchmarks' one record format (``benchmarks/record.py``): a real benchmark run writes its
figures with the date, the machine and the commit they were measured on.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import record  # noqa: E402


def _git_head() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.ros
def test_benchmark_run_writes_figures_with_date_machine_and_commit(tmp_path):
    out = tmp_path / "conv.json"
    args = ["--points", "20000", "--naive-points", "2000", "--repeats", "1", "--record", str(out)]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_conversions.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert list(doc)[:7] == list(record.RECORD_KEYS)
    assert doc["benchmark"] == "bench_conversions"
    assert doc["date"] == datetime.date.today().isoformat() == doc["timestamp"][:10]
    assert doc["commit"] == _git_head() and isinstance(doc["dirty"], bool)
    assert doc["command"] == "benchmarks/bench_conversions.py " + " ".join(args)
    m = doc["machine"]
    assert m["cores"] >= 1 and m["cpu"] and m["python"] and str(m["cores"]) in m["description"]
    assert m["torch"] is None and m["gpu"] is None  # bench_conversions never imports torch
    # the figures the script printed, next to the record keys
    assert doc["points"] == 20000 and doc["naive_points"] == 2000
    assert set(doc["median_s"]) == {"write", "read_view", "read_drop_nan", "naive_write", "naive_read"}
    assert all(v > 0 for v in doc["median_s"].values())
    assert doc["naive_over_ours"]["write"] == pytest.approx(doc["median_s"]["naive_write"] / doc["median_s"]["write"])
    assert f"record: {out}" in proc.stdout


def test_write_record_copies_to_every_path_and_converts_numpy(tmp_path):
    import numpy as np

    main, legacy = tmp_path / "a" / "x.json", tmp_path / "b" / "summary.json"
    rec = record.write_record(main, "bench_x", {"n": np.int64(3), "v": np.array([0.5, 1.5]), "p": tmp_path},
                              argv=["--quick"], also=[legacy])
    assert main.read_text() == legacy.read_text()
    doc = json.loads(main.read_text())
    assert doc["n"] == 3 and doc["v"] == [0.5, 1.5] and doc["p"] == str(tmp_path)
    assert doc["command"] == "benchmarks/bench_x.py --quick" and rec["commit"] == doc["commit"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_record_rejects_figures_that_reuse_its_keys_and_an_empty_name():
    with pytest.raises(ValueError, match=r"\['date'\]"):
        record.make_record("bench_x", {"date": "yesterday"})
    with pytest.raises(ValueError, match="benchmark"):
        record.make_record("", {})


def test_default_path_and_option():
    import argparse

    ap = argparse.ArgumentParser()
    record.add_record_option(ap, "bench_x")
    assert ap.parse_args([]).record == str(REPO / "benchmarks" / "results" / "bench_x.json")
    assert ap.parse_args(["--record", "/tmp/r.json"]).record == "/tmp/r.json"
