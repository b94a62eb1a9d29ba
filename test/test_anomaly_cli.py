"""``cosarad train`` / ``eval`` / ``inspect`` end to end on a tiny benchmark folder (Real3D-AD layout)."""
import json
import os

import numpy as np
import pytest

from cosarad_ros.cli.main import main
from cosarad_ros.core.anomaly.dataset import toy_benchmark
from cosarad_ros.core.data.datasets import write_template, write_test_sample


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Two toy classes written in millimetres: 3 templates, 2 good and 2 defective scans each."""
    root = tmp_path_factory.mktemp("bench")
    for cls in toy_benchmark(2, seed=5, n_templates=3, n_good=2, n_bad=2, points=2000):
        for i, t in enumerate(cls.templates):
            write_template(root, "real3d", cls.name, i, t * 1000.0)
        for i, s in enumerate(cls.tests):
            write_test_sample(root, "real3d", cls.name, i, s.defect_type, s.points * 1000.0, s.labels)
    return str(root)


FAST = '{"num_patches": 24, "registration_attempts": 1}'


def test_eval_writes_metrics_json_with_per_class_and_mean_aurocs(bench, tmp_path, capsys):
    out = str(tmp_path / "eval")
    assert main(["eval", "--data", bench, "--layout", "real3d", "--method", "fpfh", "--out", out,
                 "--config", FAST, "--attempts", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "O-AUROC" in printed and "mean" in printed
    with open(os.path.join(out, "metrics.json")) as f:
        doc = json.load(f)
    assert set(doc) == {"classes", "mean", "method", "model", "classes_seen_in_training"}
    assert doc["method"] == "fpfh" and doc["model"] is None and doc["classes_seen_in_training"] == []
    assert set(doc["classes"]) == {"toy5", "toy106"}
    from cosarad_ros.core.anomaly.evaluation import auroc

    for v in doc["classes"].values():
        assert {"o_auroc", "p_auroc", "n_good", "n_bad"} <= set(v)  # the required keys; extensions below
        assert v["n_good"] == 2 and v["n_bad"] == 2 and 0.0 <= v["o_auroc"] <= 1.0 and 0.0 <= v["p_auroc"] <= 1.0
        # per-scan object scores: the O-AUROC can be recomputed from them
        scans = v["scans"]
        assert len(scans) == 4 and sum(s["anomalous"] for s in scans.values()) == 2
        assert auroc(np.array([s["score"] for s in scans.values()]),
                     np.array([s["anomalous"] for s in scans.values()])) == pytest.approx(v["o_auroc"], abs=1e-6)
    assert set(doc["mean"]) == {"o_auroc", "p_auroc"}
    assert doc["mean"]["o_auroc"] == pytest.approx(np.mean([v["o_auroc"] for v in doc["classes"].values()]), abs=1e-6)
    assert os.path.isfile(os.path.join(out, "roc.png"))
    assert any(f.endswith(".png") for f in os.listdir(os.path.join(out, "maps")))


@pytest.mark.slow
def test_train_then_honest_eval_then_inspect(bench, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--data", bench, "--classes", "toy5", "--out", run, "--backbone", "tiny", "--epochs", "1",
                 "--batch-size", "4", "--centres-per-defect", "2", "--combos", "1", "--weak", "20",
                 "--quiet"]) == 0
    for f in ("model.safetensors", "curves.png", "checkpoint.pt", "training.json", "triplets.npz"):
        assert os.path.isfile(os.path.join(run, f)), f
    model = os.path.join(run, "model.safetensors")
    out = str(tmp_path / "eval")
    assert main(["eval", "--data", bench, "--method", "cosarad", "--model", model, "--out", out,
                 "--config", FAST, "--attempts", "1", "--quiet"]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        doc = json.load(f)
    # honest protocol: the class the model saw is not scored, and the file says what it saw
    assert doc["classes_seen_in_training"] == ["toy5"] and list(doc["classes"]) == ["toy106"]
    assert doc["model"] == os.path.abspath(model)
    capsys.readouterr()
    png = str(tmp_path / "map.png")
    scan = os.path.join(bench, "toy106", "test", "2_bulge.pcd")
    assert main(["inspect", scan, "--templates", os.path.join(bench, "toy106"), "--unit", "mm",
                 "--method", "cosarad", "--model", model, "--config", FAST, "--png", png]) == 0
    text = capsys.readouterr().out
    assert text.startswith(("PASS", "FAIL")) and "object score" in text and os.path.isfile(png)
    assert main(["inspect", scan, "--templates", os.path.join(bench, "toy106"), "--unit", "mm", "--json",
                 "--method", "fpfh", "--config", FAST, "--png", png]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] in ("PASS", "FAIL") and doc["part_type"] == "test"


def test_cli_errors_are_one_line(bench, tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path / "nope"), "--method", "fpfh", "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["eval", "--data", bench, "--method", "cosarad", "--model", str(tmp_path / "m.safetensors"),
                 "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "t")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["inspect", os.path.join(bench, "toy5", "test", "0_good.pcd"), "--templates",
                 str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err


def test_deviation_method_through_eval_and_inspect(bench, tmp_path, capsys):
    """The deviation detector goes through the same CLI: metrics.json with the same keys, a bulged
    scan FAILs and a good one PASSes.
    """
    out = str(tmp_path / "dev")
    assert main(["eval", "--data", bench, "--layout", "real3d", "--method", "deviation", "--out", out,
                 "--attempts", "1", "--quiet"]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        doc = json.load(f)
    assert doc["method"] == "deviation" and doc["model"] is None and doc["classes_seen_in_training"] == []
    assert set(doc["classes"]) == {"toy5", "toy106"}
    capsys.readouterr()
    verdicts = {}
    for name in ("0_good", "2_bulge"):
        scan = os.path.join(bench, "toy106", "test", f"{name}.pcd")
        assert main(["inspect", scan, "--templates", os.path.join(bench, "toy106"), "--unit", "mm", "--json",
                     "--method", "deviation", "--png", str(tmp_path / f"{name}.png")]) == 0
        verdicts[name] = json.loads(capsys.readouterr().out)["verdict"]
    assert verdicts == {"0_good": "PASS", "2_bulge": "FAIL"}
