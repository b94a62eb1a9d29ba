"""ISO/IEC 25012 quality metrics against hand-computed values (Kwon et al. 2025, sec. 3.6)."""
from __future__ import annotations

import numpy as np
import pytest

from cosarad_ros.core.cad.quality import (
    QUALITY_WEIGHTS,
    accuracy_score,
    chamfer_distance,
    completeness_score,
    consistency_score,
    grade_for,
    mean_fpfh,
    quality_report,
    uniqueness_score,
    validity_score,
)

# four reference points on a 3 x 4 rectangle (diagonal 5 m) far apart from each other
REF = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0], [3.0, 4.0, 0.0]])


def test_chamfer_and_accuracy_by_hand():
    scan = REF + [0.1, 0.0, 0.0]     # every point 0.1 from its counterpart, nearest both ways
    assert chamfer_distance(scan, REF) == pytest.approx(0.2)        # 0.1 + 0.1
    acc, cd = accuracy_score(scan, REF)
    assert cd == pytest.approx(0.2)
    assert acc == pytest.approx(1 - 0.2 / 5.0)                       # diag of REF is 5
    # one extra scan point 1.0 above the first: scan->ref mean = (4 * 0.1 + 1) / 5 = 0.28,
    # ref->scan mean stays 0.1
    scan2 = np.vstack([scan, [0.0, 0.0, 1.0]])
    assert chamfer_distance(scan2, REF) == pytest.approx(0.28 + 0.1)
    assert accuracy_score(REF * 100, REF)[0] == 0.0                  # clipped at 0


def test_completeness_by_hand():
    ref = np.array([[i * 0.01, 0.0, 0.0] for i in range(10)])      # 10 points, 1 cm apart
    scan = ref[:7] + [0.0, 0.0005, 0.0]                              # 7 covered within 1 mm
    assert completeness_score(scan, ref, tolerance=0.001) == pytest.approx(0.7)
    assert completeness_score(scan, ref, tolerance=0.0004) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        completeness_score(scan, ref, tolerance=0.0)


def test_validity_by_hand():
    # 18 points at distance 1 and 2 at distance 10 from the centroid (symmetric pairs keep the
    # centroid at 0): mu = 1.9, sigma = 2.7, band [-3.5, 7.3] -> the two far points are invalid
    dirs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [1, -1, 0],
                     [1, 0, -1]], dtype=float)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pts = np.vstack([dirs, -dirs, [[10.0, 0, 0], [-10.0, 0, 0]]])
    r = np.linalg.norm(pts - pts.mean(axis=0), axis=1)
    assert r.mean() == pytest.approx(1.9) and r.std() == pytest.approx(2.7)
    assert validity_score(pts) == pytest.approx(18 / 20)
    assert validity_score(pts, n_sigma=4.0) == pytest.approx(1.0)     # band up to 12.7


def test_uniqueness_by_hand():
    base = np.array([[i * 0.001, 0.0, 0.0] for i in range(7)])      # 7 distinct points, 1 mm apart
    dup = np.vstack([base, base[:3] + 1e-6])                         # 3 near-duplicates (1 um off)
    assert uniqueness_score(base, voxel_size=1e-4) == pytest.approx(1.0)
    assert uniqueness_score(dup, voxel_size=1e-4) == pytest.approx(7 / 10)
    assert uniqueness_score(dup, voxel_size=1.0) == pytest.approx(1 / 10)   # one voxel


def _sphere(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return 0.05 * v / np.linalg.norm(v, axis=1, keepdims=True)


def _plane(n, seed=0):
    xy = np.random.default_rng(seed).uniform(-0.05, 0.05, size=(n, 2))
    return np.column_stack([xy, np.zeros(n)])


def test_consistency_is_the_cosine_of_mean_fpfh():
    a, b = _sphere(4000, 1), _plane(4000, 2)
    assert consistency_score(a, a, voxel_size=0.004) == pytest.approx(1.0)
    fa = mean_fpfh(a, voxel_size=0.004)
    fb = mean_fpfh(b, voxel_size=0.004)
    expected = float(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb)))
    got = consistency_score(a, b, voxel_size=0.004)
    assert got == pytest.approx(expected, rel=1e-9)
    assert got < 0.9          # a sphere does not look like a plane
    same_shape = consistency_score(_sphere(3000, 5), a, voxel_size=0.004)
    assert same_shape > 0.97 and same_shape > got
    assert consistency_score(a, b, voxel_size=0.004, reference_descriptor=fb) == pytest.approx(got)


def test_total_and_grade_are_the_weighted_sum():
    scan = _sphere(3000, 3)
    ref = _sphere(6000, 4)
    q = quality_report(scan, ref, completeness_tolerance=0.003)
    parts = {k: getattr(q, k) for k in QUALITY_WEIGHTS}
    assert q.total == pytest.approx(sum(QUALITY_WEIGHTS[k] * v for k, v in parts.items()))
    assert QUALITY_WEIGHTS == {"accuracy": 0.10, "consistency": 0.30, "completeness": 0.20,
                               "validity": 0.20, "uniqueness": 0.20}
    assert all(0.0 <= v <= 1.0 for v in parts.values())
    assert q.grade == grade_for(q.total)
    assert [grade_for(t) for t in (0.95, 0.85, 0.75, 0.65, 0.55, 0.2)] == ["A", "B", "C", "D", "E", "F"]
    # equal weights on accuracy only
    w = {k: 0.0 for k in QUALITY_WEIGHTS}
    w["accuracy"] = 1.0
    q2 = quality_report(scan, ref, weights=w)
    assert q2.total == pytest.approx(q2.accuracy)
    d = q.as_dict()
    assert set(d) >= {"accuracy", "consistency", "completeness", "validity", "uniqueness", "total", "grade"}


def test_quality_input_errors():
    ref = _sphere(500)
    with pytest.raises(ValueError, match="empty"):
        quality_report(np.zeros((0, 3)), ref)
    bad = ref.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        quality_report(bad, ref)
    with pytest.raises(ValueError, match="shape"):
        quality_report(ref[:, :2], ref)
    with pytest.raises(ValueError, match="sum to 1"):
        quality_report(ref, ref, weights={k: 0.5 for k in QUALITY_WEIGHTS})
