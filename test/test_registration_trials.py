"""Statistical acceptance of ``register``: random rigid transforms (uniform over SO(3)),
sensor noise and a partial view, on non-symmetric parts from installed packages and a
procedural part, 30-300 mm, in metres.

Criterion: at least 95 % of the trials recovered within 1 mm and 0.5 degrees, and *no* trial
reported ``ok`` with a wrong pose; with a scale drift, the scale within 0.2 %. The benchmark
(``benchmarks/bench_registration.py``) runs the same protocol with many more trials.
"""
from __future__ import annotations

import numpy as np
import pytest

from cosarad_ros.core.io import sample_mesh
from cosarad_ros.core.registration import outer_shell, register
from cosarad_ros.core.registration.trials import make_trial, pose_error

PARTS = ("bunny", "duck", "head", "bracket")


@pytest.fixture(scope="module")
def shells():
    """Unit-size outer-surface samples (dense for the views, sparser for the references)."""
    from cosarad_ros.core.data.package_meshes import load_package_mesh
    from cosarad_ros.core.data.parts import make_part

    out = {}
    for name in PARTS:
        mesh = make_part("bracket", seed=3).mesh if name == "bracket" else load_package_mesh(name, size=1.0).mesh
        mesh = mesh.copy()
        mesh.apply_scale(1.0 / float(max(mesh.extents)))
        # castings like 'head' hide most of their faces inside: sample more so that the outer
        # surface gets about 16 000 / 8 000 points whatever the part
        probe, _ = sample_mesh(mesh, 4000, seed=0)
        visible = max(float(outer_shell(probe, views=24).mean()), 0.05)
        dense, _ = sample_mesh(mesh, int(16000 / visible), seed=1)
        ref, _ = sample_mesh(mesh, int(8000 / visible), seed=2)
        out[name] = (dense[outer_shell(dense, views=24)], ref[outer_shell(ref, views=24)])
    return out


@pytest.mark.slow
def test_rigid_trials_recover_the_pose_within_1mm_and_half_a_degree(shells):
    rng = np.random.default_rng(2025)
    good, silent, n = 0, [], 0
    for name in PARTS:
        dense, ref = shells[name]
        for _ in range(4):
            size = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))))
            noise = size * float(np.exp(rng.uniform(np.log(5e-4), np.log(3e-3))))
            trial = make_trial(dense * size, ref * size, rng, noise=noise)
            res = register(trial.source, trial.target, seed=n)
            err, ang = pose_error(res.transform, trial.transform, trial.source)
            accurate = err < 1e-3 and ang < 0.5
            good += accurate
            if res.ok and not accurate:
                silent.append((name, size, err, ang))
            n += 1
    assert not silent, f"ok=True with a wrong pose: {silent}"
    # 16 trials resolve the success rate in steps of 6 %: one miss is allowed (94 %); the
    # benchmark measures the rate with hundreds of trials
    assert good >= n - 1, f"{good}/{n} recovered"


def test_scale_drift_trials(shells):
    """Scale drift of +-5 %: curved parts give the scale within 0.2 %; a view that shows too little
    to fix the scale (mostly planes) must say so instead of returning a plausible wrong scale.
    """
    rng = np.random.default_rng(7)
    for k, name in enumerate(PARTS):
        dense, ref = shells[name]
        size = 0.1
        s = float(rng.uniform(0.95, 1.05))
        trial = make_trial(dense * size, ref * size, rng, noise=size * 1e-3, scale=s)
        res = register(trial.source, trial.target, allow_scale=True, seed=k)
        if name in ("bunny", "duck"):
            assert res.ok, (name, res.reason)
        if res.ok:
            assert abs(res.scale / s - 1.0) < 0.002, (name, res.scale, s)
            err, ang = pose_error(res.transform, trial.transform, trial.source)
            assert err < 1e-3 and ang < 0.5, (name, err, ang)
        else:
            assert res.reason, name
