"""CAD library: folder loading, YAML metadata, run-time additions and their errors."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
import yaml

from cosarad_ros.core.cad import CadLibrary, load_cad_mesh, parse_metadata, step_supported


def _box_file(folder, name, dims, scale=1.0):
    m = trimesh.creation.box(np.asarray(dims) * scale)
    path = folder / name
    m.export(path)
    return path


def test_folder_loads_labels_metadata_and_units(tmp_path):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    _box_file(lib_dir, "plain.stl", (0.02, 0.03, 0.04))
    _box_file(lib_dir, "in_mm.stl", (20.0, 30.0, 50.0))  # millimetre file
    (lib_dir / "in_mm.yaml").write_text(yaml.safe_dump({
        "label": "insert_mm", "code": "INS-1", "units": "mm",
        "tolerances": {"dimension": 0.5},
        "holes": [{"centre": [0, 0, 25], "diameter": 6, "axis": [0, 0, -1], "depth": 50}]}))
    lib = CadLibrary(lib_dir)
    assert lib.labels == ["insert_mm", "plain"]
    plain = lib.get("plain")
    np.testing.assert_allclose(plain.dimensions, [0.02, 0.03, 0.04], atol=1e-9)
    mm = lib.get("insert_mm")
    np.testing.assert_allclose(mm.dimensions, [0.02, 0.03, 0.05], atol=1e-9)   # scaled to metres
    assert mm.code == "INS-1"
    assert mm.tolerances == {"dimension": pytest.approx(0.0005)}
    (hole,) = mm.holes
    np.testing.assert_allclose(hole.centre, [0, 0, 0.025])
    assert hole.diameter == pytest.approx(0.006) and hole.depth == pytest.approx(0.05)
    np.testing.assert_allclose(hole.axis, [0, 0, -1])


def test_add_persists_and_is_seen_by_a_new_instance(tmp_path):
    src = _box_file(tmp_path, "new_part.stl", (0.01, 0.02, 0.03))
    lib = CadLibrary(tmp_path / "lib", create=True)
    assert len(lib) == 0
    m = lib.add(src, metadata="code: NP-7\nholes: []\n")
    assert m.label == "new_part" and m.code == "NP-7"
    assert (tmp_path / "lib" / "new_part.stl").is_file()
    assert yaml.safe_load((tmp_path / "lib" / "new_part.yaml").read_text())["code"] == "NP-7"
    again = CadLibrary(tmp_path / "lib")
    assert again.labels == ["new_part"]
    np.testing.assert_allclose(again.get("new_part").dimensions, [0.01, 0.02, 0.03], atol=1e-9)
    # explicit label, then removal
    m2 = lib.add(src, label="other-label")
    assert set(lib.labels) == {"new_part", "other-label"} and m2.path.name == "other-label.stl"
    lib.remove("other-label")
    assert CadLibrary(tmp_path / "lib").labels == ["new_part"]


def test_add_errors_are_clear(tmp_path):
    src = _box_file(tmp_path, "p.stl", (0.01, 0.02, 0.03))
    lib = CadLibrary(tmp_path / "lib", create=True)
    lib.add(src)
    with pytest.raises(ValueError, match="already exists"):
        lib.add(src)                                   # duplicate label
    with pytest.raises(FileNotFoundError):
        lib.add(tmp_path / "missing.stl")
    bad = tmp_path / "broken.stl"
    bad.write_bytes(b"solid nonsense\nthis is not an stl\n")
    with pytest.raises(ValueError, match="broken.stl"):
        lib.add(bad)
    with pytest.raises(ValueError, match="not a valid name"):
        lib.add(src, label="../escape")
    with pytest.raises(ValueError, match="YAML"):
        lib.add(src, label="q", metadata="holes: [unclosed")
    with pytest.raises(ValueError, match="diameter"):
        lib.add(src, label="q", metadata={"holes": [{"centre": [0, 0, 0], "diameter": -1}]})
    with pytest.raises(ValueError, match="units"):
        lib.add(src, label="q", metadata={"units": "furlong"})
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="unsupported"):
        lib.add(txt)
    # nothing half-written by the failures
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["p.stl", "p.yaml"]
    with pytest.raises(KeyError, match="known: p"):
        lib.get("nope")


def test_broken_files_in_folder(tmp_path):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    _box_file(lib_dir, "good.stl", (0.01, 0.01, 0.02))
    (lib_dir / "bad.stl").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="bad.stl"):
        CadLibrary(lib_dir)
    lib = CadLibrary(lib_dir, strict=False)
    assert lib.labels == ["good"] and "bad.stl" in lib.errors
    with pytest.raises(FileNotFoundError):
        CadLibrary(tmp_path / "nowhere")


def test_duplicate_label_in_folder_is_refused(tmp_path):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    _box_file(lib_dir, "a.stl", (0.01, 0.01, 0.02))
    _box_file(lib_dir, "b.stl", (0.01, 0.01, 0.03))
    (lib_dir / "b.yaml").write_text("label: a\n")
    with pytest.raises(ValueError, match="duplicate label 'a'"):
        CadLibrary(lib_dir)


def test_parse_metadata_and_mesh_units(tmp_path):
    assert parse_metadata(None) == {} and parse_metadata("  ") == {}
    with pytest.raises(ValueError, match="mapping"):
        parse_metadata("- 1\n- 2\n")
    path = _box_file(tmp_path, "mm.stl", (10.0, 20.0, 30.0))
    np.testing.assert_allclose(np.sort(load_cad_mesh(path, units="mm").extents), [0.01, 0.02, 0.03])
    lib = CadLibrary(tmp_path / "lib", create=True)
    m = lib.add(path, metadata={"units": "mm", "mesh_units": "mm", "nominal_dimensions": [10, 20, 30]})
    np.testing.assert_allclose(m.dimensions, [0.01, 0.02, 0.03], atol=1e-9)


def test_step_files_need_gmsh(tmp_path):
    step = tmp_path / "part.step"
    step.write_text("ISO-10303-21;\nEND-ISO-10303-21;\n")
    if step_supported():
        with pytest.raises(ValueError):
            load_cad_mesh(step)   # an empty STEP file has no surface
    else:
        with pytest.raises(ValueError, match="gmsh"):
            load_cad_mesh(step)


def test_signed_distance_sign_convention(tmp_path):
    path = _box_file(tmp_path, "b.stl", (0.02, 0.02, 0.02))
    lib = CadLibrary(tmp_path / "lib", create=True)
    m = lib.add(path)
    d = m.signed_distance(np.array([[0, 0, 0.012], [0, 0, 0.009], [0.0105, 0, 0]]))
    np.testing.assert_allclose(d, [0.002, -0.001, 0.0005], atol=1e-6)
    np.testing.assert_allclose(m.distance(np.array([[0, 0, 0.009]])), [0.001], atol=1e-6)
