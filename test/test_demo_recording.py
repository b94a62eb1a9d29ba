"""`cosarad demo` (the command on the PATH, as the README runs it) writes a rosbag2 recording of
/inspection/result that two independent readers, `rosbags` and `mcap_ros2`, read completely:
one message per part, each equal to its entry in results.json.
"""
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ros, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("cosarad") is None,
                                 reason="cosarad not on PATH: source scripts/env.sh after the colcon build")]


def _same(a, b, what):
    """float32 on the wire against the float64 of results.json (NaN and null both mean 'none')."""
    if b is None:
        assert a is None or (isinstance(a, float) and math.isnan(a)), f"{what}: {a} vs none"
    else:
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6), f"{what}: {a} vs {b}"


def _compare(msg, entry):
    assert msg.part_id == entry["part_id"] and msg.part_type == entry["part_type"]
    assert msg.verdict_text == entry["verdict"] and msg.reason == entry["reason"]
    for field in ("object_score", "threshold", "registration_fitness", "registration_rmse"):
        _same(float(getattr(msg, field)), entry[field], f"{entry['part_id']} {field}")
    assert len(msg.defects) == len(entry["defects"])
    for d, e in zip(msg.defects, entry["defects"]):
        assert d.type == e["type"] and d.point_count == e["point_count"]
        for a, b in zip((d.centroid.x, d.centroid.y, d.centroid.z), e["centroid"]):
            _same(a, b, "defect centroid")
    seconds: dict = {}
    for t in msg.timings:
        seconds[t.stage] = seconds.get(t.stage, 0.0) + t.seconds
    assert set(seconds) == set(entry["stage_seconds"])
    for stage, s in seconds.items():
        _same(s, entry["stage_seconds"][stage], f"{entry['part_id']} {stage} seconds")


def test_demo_recording_reads_back_equal_to_results_json(tmp_path):
    from mcap_ros2.reader import read_ros2_messages

    from test_bag import read_with_rosbags

    out = tmp_path / "demo"
    r = subprocess.run(["cosarad", "demo", "--out", str(out), "--families", "pocket_block", "--defects", "bulge",
                        "--good-per-type", "0", "--templates", "3", "--tell-type", "--fault", "--seed", "1"],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path, env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parts = json.loads((out / "results.json").read_text())["parts"]
    assert len(parts) == 2 and parts[-1]["verdict"] == "INCONCLUSIVE"          # the bulged part, then the fault
    bag = out / "inspection_results"
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    (topic,) = meta["topics_with_message_count"]
    assert topic["topic_metadata"]["type"] == "cosarad_ros/msg/InspectionResult"
    assert topic["message_count"] == len(parts)
    qos = topic["topic_metadata"]["offered_qos_profiles"]
    # what the publishers (the manager, the anomaly node's stand-alone output) offer: latched
    assert qos and {(q["reliability"], q["durability"]) for q in qos} == {("reliable", "transient_local")}

    decoded, _ = read_with_rosbags(bag)
    assert [t for t, _, _ in decoded] == ["/inspection/result"] * len(parts)
    for (_, _, msg), entry in zip(decoded, parts):
        _compare(msg, entry)
    by_mcap = [m.ros_msg for m in read_ros2_messages(str(bag / meta["relative_file_paths"][0]))]
    assert len(by_mcap) == len(parts)
    for msg, entry in zip(by_mcap, parts):
        _compare(msg, entry)
