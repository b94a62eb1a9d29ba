"""Part types prepared when their CAD arrives: view plans kept on disk, templates simulated through
them, `cosarad cad prepare` / `cad add --prepare`, and a prepared cell that neither plans nor
simulates at its first part.
"""
from __future__ import annotations

import numpy as np
import pytest

from cosarad_ros.cli.main import main
from cosarad_ros.core.planning import CellModel, plan_views
from cosarad_ros.core.planning.plan_cache import cached_plan, load_plan, plan_key, save_plan


@pytest.fixture(scope="module")
def part():
    from cosarad_ros.core.data.parts import make_part

    return make_part("block", seed=1).mesh


@pytest.fixture(scope="module")
def plan(part):
    return plan_views(part, cell=CellModel.default(), seed=0)


def test_a_saved_plan_loads_back_equal(plan, tmp_path):
    loaded = load_plan(save_plan(plan, tmp_path / "p.npz"))
    assert len(loaded.views) == len(plan.views) > 0
    for a, b in zip(loaded.views, plan.views):
        np.testing.assert_array_equal(a.sensor_pose, b.sensor_pose)
        np.testing.assert_array_equal(a.joints, b.joints)
        np.testing.assert_array_equal(a.visible_indices, b.visible_indices)
        np.testing.assert_array_equal(a.part_pose, b.part_pose)
        assert a.candidate == b.candidate and a.coverage_gain == b.coverage_gain
        assert (a.path is None) == (b.path is None)
        if a.path is not None:
            np.testing.assert_array_equal(a.path, b.path)
    np.testing.assert_array_equal(loaded.samples.points, plan.samples.points)
    np.testing.assert_array_equal(loaded.samples.areas, plan.samples.areas)
    np.testing.assert_array_equal(loaded.coverage_counts(), plan.coverage_counts())
    assert loaded.coverage == plan.coverage and loaded.joint_names == plan.joint_names
    assert loaded.solver == plan.solver and loaded.timings == plan.timings


def test_an_unreadable_plan_file_is_refused_by_name(tmp_path):
    bad = tmp_path / "plan_x.npz"
    bad.write_bytes(b"not a plan")
    with pytest.raises(ValueError, match="plan_x.npz is not a readable view plan"):
        load_plan(bad)
    with pytest.raises(FileNotFoundError):
        load_plan(tmp_path / "missing.npz")


def test_cached_plan_plans_once_and_replans_over_a_corrupt_entry(part, plan, tmp_path):
    said = []
    cell = CellModel.default()
    first = cached_plan(part, cell=cell, cache_dir=tmp_path, progress=said.append)
    assert said == ["planning views"]
    files = sorted(tmp_path.glob("plan_*.npz"))
    assert [f.name for f in files] == [f"plan_{plan_key(part, cell)}.npz"]
    # the cached plan is the plan the planner makes
    np.testing.assert_array_equal(np.stack([v.sensor_pose for v in first.views]),
                                  np.stack([v.sensor_pose for v in plan.views]))
    again = cached_plan(part, cell=cell, cache_dir=tmp_path, progress=said.append)
    assert said == ["planning views"]           # read back, not planned again
    np.testing.assert_array_equal(again.views[0].joints, first.views[0].joints)
    # another option is another entry; a damaged entry is planned again and rewritten
    assert plan_key(part, cell, options={"target_coverage": 0.9}) != plan_key(part, cell)
    files[0].write_bytes(b"\x00" * 64)
    cached_plan(part, cell=cell, cache_dir=tmp_path, progress=said.append)
    assert said == ["planning views"] * 2
    assert len(load_plan(files[0]).views) == len(plan.views)


def test_prepare_then_a_cell_inspects_its_first_part_without_planning_or_simulating(tmp_path, capsys):
    from cosarad_ros.core.inspection.inprocess import InProcessCell

    lib, cache = tmp_path / "lib", tmp_path / "work" / "banks"
    assert main(["cad", "catalogue", "--library", str(lib), "--types", "1", "--seed", "3"]) == 0
    label = next(p.stem for p in lib.glob("*.stl"))
    capsys.readouterr()
    assert main(["cad", "prepare", "--library", str(lib), "--cache", str(cache)]) == 0
    out = capsys.readouterr()
    assert f"{label}: 3 templates" in out.out and "prepared 1 of 1 part types" in out.out
    assert "planning views" in out.err and "simulating 3 good templates" in out.err   # progress
    assert len(list(cache.glob("plan_*.npz"))) == 1 and len(list(cache.glob("templates_*.npz"))) == 1
    # a second prepare only reads what is there
    assert main(["cad", "prepare", "--library", str(lib), "--cache", str(cache), label]) == 0
    assert "planning views" not in capsys.readouterr().err
    # the in-process cell on that work folder: the prepared plan and templates are used as they are
    said = []
    with InProcessCell(lib, work_dir=tmp_path / "work", progress=said.append) as cell:
        cell.prepare([label])
    assert not any("planning views" in m or "simulating" in m for m in said), said
    assert len(list(cache.glob("plan_*.npz"))) == 1 and len(list(cache.glob("templates_*.npz"))) == 1
    # unknown labels are named; nothing is written for them
    assert main(["cad", "prepare", "--library", str(lib), "--cache", str(cache), "nosuch"]) == 2
    assert "unknown part type(s) nosuch" in capsys.readouterr().err


def test_cad_add_prepare(tmp_path, capsys):
    import trimesh

    stl = tmp_path / "spacer.stl"
    trimesh.creation.box((30.0, 20.0, 12.0)).export(stl)
    lib, cache = tmp_path / "lib", tmp_path / "cache"
    assert main(["cad", "add", str(stl), "--library", str(lib), "--units", "mm", "--prepare",
                 "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "added spacer" in out and "spacer: 3 templates" in out
    assert len(list(cache.glob("plan_*.npz"))) == 1 and len(list(cache.glob("templates_*.npz"))) == 1
