"""``cosarad register SOURCE TARGET [--json]`` run as a real subprocess on real files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cosarad_ros.core.io import read_points, sample_mesh, write_points
from cosarad_ros.core.registration.trials import make_trial, pose_error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cosarad(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "cosarad_ros", "register", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from cosarad_ros.core.data.package_meshes import load_package_mesh

    folder = tmp_path_factory.mktemp("reg_cli")
    mesh = load_package_mesh("duck", size=0.07).mesh
    dense, _ = sample_mesh(mesh, 16000, seed=1)
    ref, _ = sample_mesh(mesh, 8000, seed=2)
    trial = make_trial(dense, ref, np.random.default_rng(3), noise=5e-5)
    src = write_points(folder / "scan.ply", trial.source, dtype="float64")
    tgt = write_points(folder / "reference.pcd", trial.target, dtype="float64")
    other = load_package_mesh("bunny", size=0.07).mesh
    bunny = write_points(folder / "bunny.xyz", sample_mesh(other, 8000, seed=4)[0], dtype="float64")
    return folder, trial, src, tgt, bunny


def test_cli_json_recovers_transform(files):
    folder, trial, src, tgt, _ = files
    out = folder / "aligned.ply"
    proc = _cosarad(src, tgt, "--json", "--out", out)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert {"transform", "scale", "fitness", "rmse", "chamfer", "ok"} <= set(res)
    assert res["ok"] is True and res["reason"] == "" and res["scale"] == 1.0
    T = np.array(res["transform"])
    assert T.shape == (4, 4)
    err, ang = pose_error(T, trial.transform, trial.source)
    assert err < 1e-3 and ang < 0.5
    aligned = read_points(out)
    np.testing.assert_allclose(aligned, trial.source @ T[:3, :3].T + T[:3, 3], atol=1e-9)


def test_cli_text_output_and_failure_exit_code(files):
    folder, trial, src, tgt, bunny = files
    proc = _cosarad(bunny, tgt, "--attempts", "2")
    assert proc.returncode == 1  # ran fine, but the clouds do not register
    assert "registration FAILED" in proc.stdout and "transform (source -> target)" in proc.stdout


def test_cli_bad_input_is_one_clear_line(files, tmp_path):
    folder, _, src, _, _ = files
    proc = _cosarad(src, tmp_path / "missing.pcd")
    assert proc.returncode == 2
    assert "missing.pcd" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "broken.ply"
    bad.write_text("ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nend_header\n1\n")
    proc = _cosarad(bad, src)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    proc = _cosarad(src, src, "--voxel", "-1")
    assert proc.returncode == 2 and "--voxel" in proc.stderr
