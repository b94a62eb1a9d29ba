"""`cosarad cad` and `cosarad classify` end to end (in-process through the real dispatcher)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from cosarad_ros.cli.main import main
from cosarad_ros.core.cad.evaluation import multi_view_scan
from cosarad_ros.core.data.parts import part_catalogue
from cosarad_ros.core.io import write_points


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "lib"
    assert main(["cad", "catalogue", "--library", str(folder), "--types", "6", "--seed", "2"]) == 0
    return folder


def test_catalogue_list_add_remove(library, tmp_path, capsys):
    capsys.readouterr()
    assert main(["cad", "list", "--library", str(library), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["models"]) == 6 and not listed["errors"]
    labels = {m["label"] for m in listed["models"]}
    assert labels == {p.name for p in part_catalogue(6, seed=2)}
    # add a millimetre STL with metadata, then remove it
    import trimesh

    stl = tmp_path / "spacer.stl"
    trimesh.creation.box((20.0, 5.0, 30.0)).export(stl)
    meta = tmp_path / "spacer.yaml"
    meta.write_text(yaml.safe_dump({"code": "SP-1", "holes": []}))
    assert main(["cad", "add", str(stl), "--library", str(library), "--metadata", str(meta), "--units", "mm"]) == 0
    out = capsys.readouterr().out
    assert "added spacer" in out and "[5.00, 20.00, 30.00] mm" in out
    assert main(["cad", "add", str(stl), "--library", str(library)]) == 2          # duplicate label
    assert "already exists" in capsys.readouterr().err
    assert main(["cad", "remove", "spacer", "--library", str(library)]) == 0
    assert not (library / "spacer.stl").exists()
    assert main(["cad", "remove", "spacer", "--library", str(library)]) == 2
    assert "no CAD model 'spacer'" in capsys.readouterr().err


def test_classify_prints_label_candidates_quality_and_json(library, tmp_path, capsys):
    part = part_catalogue(6, seed=2)[1]
    pts, _, _ = multi_view_scan(part.mesh, np.random.default_rng(0), points_per_view=4000)
    scan = tmp_path / "scan.pcd"
    write_points(scan, pts)
    capsys.readouterr()
    assert main(["classify", str(scan), "--library", str(library)]) == 0
    text = capsys.readouterr().out
    assert f"label: {part.name}" in text and "quality (ISO/IEC 25012" in text and "candidates:" in text
    assert f"pose on {part.name} (scan -> model" in text
    assert main(["classify", str(scan), "--library", str(library), "--json", "--defects"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["label"] == part.name and d["score"] > 90
    assert {"label", "score", "candidates", "quality", "defects"} <= set(d)
    assert d["candidates"][0]["label"] == part.name and len(d["candidates"][0]["deviation"]) == 3
    assert set(d["quality"]) >= {"accuracy", "consistency", "completeness", "validity", "uniqueness", "total", "grade"}
    assert d["defects"] == []
    # the pose of the scan on the chosen model, with its fitness and residual
    assert d["reference_label"] == part.name and np.asarray(d["transform"]).shape == (4, 4)
    assert d["fitness"] > 0.99 and 0 < d["rmse"] < 1e-4
    # millimetre scan file
    mm = tmp_path / "scan_mm.xyz"
    np.savetxt(mm, pts * 1000)
    assert main(["classify", str(mm), "--library", str(library), "--scan-units", "mm", "--json",
                 "--no-quality"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["label"] == part.name and d["quality"] is None


def test_classify_errors(library, tmp_path, capsys):
    assert main(["classify", str(tmp_path / "missing.pcd"), "--library", str(library)]) == 2
    assert "missing.pcd" in capsys.readouterr().err
    scan = tmp_path / "few.xyz"
    np.savetxt(scan, np.random.default_rng(0).normal(size=(5, 3)))
    assert main(["classify", str(scan), "--library", str(library)]) == 2
    assert "at least 10" in capsys.readouterr().err
    assert main(["classify", str(scan), "--library", str(tmp_path / "nolib")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["classify", str(scan), "--library", str(library), "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
