"""Registration core: Umeyama, similarity ICP, pre-processing, register() checks and failure modes.

Real Open3D / SciPy everywhere; clouds come from the procedural parts of
``cosarad_ros.core.data`` and from meshes that ship in installed packages (pybullet's bunny).
The statistical accuracy trials live in ``test_registration_trials.py``.
"""
from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from cosarad_ros.core.geometry import random_rotation, rotation_angle_deg
from cosarad_ros.core.io import sample_mesh
from cosarad_ros.core.registration import (
    AcceptanceOptions,
    GeneralizedICP,
    GlobalOptions,
    PointToPlaneICP,
    PreprocessOptions,
    RefineOptions,
    RegisterOptions,
    RegistrationResult,
    ScaleOptions,
    crop_roi,
    decompose_similarity,
    estimate_normals,
    make_global_aligner,
    make_refiner,
    outer_shell,
    preprocess,
    register,
    remove_plane,
    remove_statistical_outliers,
    similarity_icp,
    umeyama,
    voxel_down_sample,
)
from cosarad_ros.core.registration.preprocess import estimate_noise, point_spacing
from cosarad_ros.core.registration.trials import make_trial, pose_error


@pytest.fixture(scope="module")
def bracket():
    """Outer surface of a procedural L-bracket (about 60-100 mm), dense and reference samples."""
    from cosarad_ros.core.data.parts import make_part

    mesh = make_part("bracket", seed=3).mesh
    dense, _ = sample_mesh(mesh, 16000, seed=1)
    ref, _ = sample_mesh(mesh, 8000, seed=2)
    return dense[outer_shell(dense, views=20)], ref[outer_shell(ref, views=20)]


@pytest.fixture(scope="module")
def bunny():
    from cosarad_ros.core.data.package_meshes import load_package_mesh

    mesh = load_package_mesh("bunny", size=0.08).mesh
    dense, _ = sample_mesh(mesh, 20000, seed=1)
    ref, _ = sample_mesh(mesh, 10000, seed=2)
    return dense, ref


# ------------------------------------------------------------------------------- Umeyama
def test_umeyama_recovers_similarity_exactly():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    R, s, t = random_rotation(rng), 1.37, rng.normal(size=3)
    Y = s * X @ R.T + t
    est = umeyama(X, Y)
    assert est.scale == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(est.rotation, R, atol=1e-10)
    np.testing.assert_allclose(est.translation, t, atol=1e-10)
    assert est.rmse < 1e-10
    R2, t2, s2 = decompose_similarity(est.transform)
    assert s2 == pytest.approx(s) and np.allclose(R2, R) and np.allclose(t2, t)


def test_umeyama_rigid_and_weights():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    R, t = random_rotation(rng), rng.normal(size=3)
    Y = X @ R.T + t
    Y[:5] += 5.0  # five gross outliers...
    w = np.ones(40)
    w[:5] = 0.0  # ...given zero weight
    est = umeyama(X, Y, with_scale=False, weights=w)
    assert est.scale == 1.0
    np.testing.assert_allclose(est.rotation, R, atol=1e-9)
    assert np.linalg.det(est.rotation) == pytest.approx(1.0)
    unweighted = umeyama(X, Y, with_scale=False)
    assert rotation_angle_deg(unweighted.rotation, R) > 0.1  # the outliers do pull the plain fit


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 3))
    Y = X * np.array([1.0, 1.0, -1.0])  # a mirror image: no proper rotation fits exactly
    est = umeyama(X, Y)
    assert np.linalg.det(est.rotation) == pytest.approx(1.0)
    assert est.rmse > 0.1


@pytest.mark.parametrize("src,dst,match", [
    (np.zeros((5, 3)), np.zeros((4, 3)), "same shape"),
    (np.zeros((2, 3)), np.zeros((2, 3)), "need at least 3"),
    (np.full((5, 3), np.nan), np.zeros((5, 3)), "non-finite"),
    (np.ones((5, 3)), np.zeros((5, 3)), "coincide"),
    (np.outer(np.arange(5.0), [1, 2, 3]), np.zeros((5, 3)), "collinear"),
])
def test_umeyama_bad_input(src, dst, match):
    with pytest.raises(ValueError, match=match):
        umeyama(src, dst)


def test_similarity_icp_recovers_scale_drift(bunny):
    dense, ref = bunny
    rng = np.random.default_rng(3)
    R = random_rotation(rng, max_angle_deg=3.0)
    s = 1.03
    src = (dense[::2] - ref.mean(0)) @ R.T / s + ref.mean(0) + 0.0005  # shrunk, turned, shifted
    T, iters = similarity_icp(src, ref, estimate_normals(ref, radius=0.004), max_distance=0.01,
                              max_iterations=80)
    _, _, scale = decompose_similarity(T)
    assert abs(scale / s - 1.0) < 0.002  # within 0.2 %
    moved = src @ T[:3, :3].T + T[:3, 3]
    truth = dense[::2]
    assert np.linalg.norm(moved - truth, axis=1).max() < 5e-4
    assert iters < 80


# ------------------------------------------------------------------------------- pre-processing
def _part_on_table(rng):
    """A box-shaped part resting on a 40 cm table, plus sensor noise and a few flying pixels."""
    part = rng.uniform([-0.03, -0.02, 0.0], [0.03, 0.02, 0.04], size=(6000, 3))
    face = rng.integers(0, 5, size=len(part))
    part[face == 0, 2] = 0.04
    part[face == 1, 0] = -0.03
    part[face == 2, 0] = 0.03
    part[face == 3, 1] = -0.02
    part[face == 4, 1] = 0.02
    table = np.column_stack([rng.uniform(-0.2, 0.2, 8000), rng.uniform(-0.2, 0.2, 8000), np.zeros(8000)])
    flying = rng.uniform(-0.2, 0.2, size=(40, 3)) + [0, 0, 0.3]
    pts = np.vstack([part, table, flying]) + rng.normal(scale=1e-4, size=(6000 + 8000 + 40, 3))
    return pts, len(part), len(table)


def test_preprocess_removes_table_and_outliers():
    rng = np.random.default_rng(4)
    pts, n_part, n_table = _part_on_table(rng)
    res = preprocess(pts, remove_support_plane=True, plane_normal=(0, 0, 1), voxel_size=0.002,
                     viewpoint=(0, 0, 1.0))
    assert res.plane is not None and abs(abs(res.plane[2]) - 1.0) < 1e-3
    assert res.points[:, 2].min() > 0.0  # nothing of the table is left
    assert res.points[:, 2].max() < 0.045  # the flying pixels above are gone
    assert res.counts["plane"] < n_part + 40 and res.counts["plane"] > 0.8 * n_part
    assert res.counts["outliers"] < res.counts["plane"]
    # normals point up towards the sensor on the top face
    top = (res.points[:, 2] > 0.039) & (np.abs(res.points[:, 0]) < 0.025) & (np.abs(res.points[:, 1]) < 0.015)
    assert top.sum() > 50 and (res.normals[top, 2] > 0.95).all()
    assert res.voxel_size == 0.002


def test_remove_plane_keeps_part_face_that_is_not_dominant():
    rng = np.random.default_rng(5)
    pts, n_part, _ = _part_on_table(rng)
    part_only = pts[:n_part]
    keep, plane = remove_plane(part_only, expected_normal=(0, 0, 1), min_inlier_ratio=0.5)
    assert plane is None and keep.all()  # the top face is not a support plane


def test_statistical_outliers_two_sided_and_roi():
    rng = np.random.default_rng(6)
    pts = rng.normal(size=(2000, 3))
    far = np.vstack([pts, [[30.0, 0, 0], [0, 40.0, 0]]])
    keep = remove_statistical_outliers(far)
    assert not keep[-2:].any() and keep[:-2].mean() > 0.9
    # a uniform patch with one spot scanned 25 times over: only the two-sided rule (Kwon et al.'s
    # mu +- 2 sigma) drops the duplicates, whose neighbour distance is abnormally small
    patch = np.column_stack([rng.uniform(0, 1, 3000), rng.uniform(0, 1, 3000), np.zeros(3000)])
    dup = np.vstack([patch, np.repeat(patch[:1], 25, axis=0)])
    assert remove_statistical_outliers(dup)[-25:].all()
    two = remove_statistical_outliers(dup, two_sided=True)
    assert not two[-25:].any() and two[1:3000].mean() > 0.9
    mask = crop_roi(pts, (-1, -1, -1), (1, 1, 1))
    assert np.all(np.abs(pts[mask]) <= 1) and not np.all(mask)
    T = np.eye(4)
    T[:3, 3] = [5.0, 0, 0]
    assert not crop_roi(pts, (-1, -1, -1), (1, 1, 1), transform=T).any()  # box moved away


def test_voxel_and_spacing_and_noise_estimates():
    rng = np.random.default_rng(7)
    plane = np.column_stack([rng.uniform(0, 0.1, 20000), rng.uniform(0, 0.1, 20000), np.zeros(20000)])
    down, _ = voxel_down_sample(plane, 0.005)
    assert 300 < len(down) <= 441
    assert 0.0002 < point_spacing(plane) < 0.0006
    noisy = plane + np.array([0, 0, 1.0]) * rng.normal(scale=2e-4, size=(20000, 1))
    assert estimate_noise(plane) < 1e-6
    assert 1e-4 < estimate_noise(noisy) < 3e-4


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 3)), "only 0 points"),
    (np.full((50, 3), np.nan), "only 0 points left after finite"),
    (np.zeros((10, 2)), "shape"),
])
def test_preprocess_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        preprocess(bad)


# ------------------------------------------------------------------------------- register
def test_register_any_rotation_partial_noisy(bracket):
    dense, ref = bracket
    rng = np.random.default_rng(11)
    trial = make_trial(dense, ref, rng, noise=1e-4)
    res = register(trial.source, trial.target)
    assert isinstance(res, RegistrationResult)
    assert res.ok, res.reason
    err, ang = pose_error(res.transform, trial.transform, trial.source)
    assert err < 1e-3 and ang < 0.5
    assert res.reason == "" and res.fitness > 0.95 and res.chamfer <= res.max_chamfer
    assert res.scale == 1.0 and res.attempts >= 5
    d = res.to_dict()
    assert set(d) >= {"transform", "scale", "fitness", "rmse", "chamfer", "ok"}
    assert np.allclose(np.array(d["transform"]), res.transform)


def test_read_only_target_is_prepared_once_with_the_same_result(bracket):
    """A read-only reference keeps its preparation between calls (the anomaly detectors register
    every scan onto one); the pose is the one a writeable copy gives, and a writeable target is
    never cached (it could change in place).
    """
    from cosarad_ros.core.registration import pipeline

    dense, ref = bracket
    trial = make_trial(dense, ref, np.random.default_rng(21), noise=1e-4)
    ro = np.array(trial.target, dtype=np.float64)
    ro.flags.writeable = False
    a = register(trial.source, ro, attempts=2, seed=3)
    prep = pipeline._prepared_target(ro)
    assert pipeline._prepared_target(ro) is prep  # kept
    b = register(trial.source, ro, attempts=2, seed=3)
    c = register(trial.source, np.array(trial.target, dtype=np.float64), attempts=2, seed=3)
    assert a.ok and np.allclose(a.transform, b.transform) and np.allclose(a.transform, c.transform)
    w = np.array(trial.target, dtype=np.float64)
    assert pipeline._prepared_target(w) is not pipeline._prepared_target(w)


def test_register_different_parts_is_not_ok(bracket, bunny):
    rng = np.random.default_rng(12)
    trial = make_trial(bunny[0], bracket[1], rng, noise=1e-4)
    res = register(trial.source, trial.target)
    assert not res.ok
    assert "chamfer" in res.reason or "fitness" in res.reason


def test_register_random_blob_is_not_ok(bracket):
    rng = np.random.default_rng(13)
    blob = rng.normal(scale=0.02, size=(3000, 3))
    res = register(blob, bracket[1], RegisterOptions(global_search=GlobalOptions(feature_scales=(1.0,))), attempts=2)
    assert not res.ok and res.reason


def test_register_with_scale(bunny):
    dense, ref = bunny
    rng = np.random.default_rng(14)
    trial = make_trial(dense, ref, rng, noise=5e-5, scale=1.04)
    res = register(trial.source, trial.target, allow_scale=True)
    assert res.ok, res.reason
    assert abs(res.scale / 1.04 - 1.0) < 0.002
    err, ang = pose_error(res.transform, trial.transform, trial.source)
    assert err < 1e-3 and ang < 0.5
    rigid = register(trial.source, trial.target, init=res.transform @ np.diag([1 / 1.04] * 3 + [1.0]))
    assert rigid.chamfer > res.chamfer  # a rigid fit cannot absorb 4 % scale


def test_register_scale_out_of_range_is_not_ok(bunny):
    dense, ref = bunny
    rng = np.random.default_rng(15)
    trial = make_trial(dense, ref, rng, noise=5e-5, scale=1.1, max_angle_deg=5.0)
    options = RegisterOptions.from_options({"scale_range": (0.95, 1.05), "feature_scales": (1.0,),
                                            "local_search_deg": ()})
    res = register(trial.source, trial.target, options, allow_scale=True)
    # the refinement is clamped to the accepted range, so the true 10 % cannot be reached and the
    # best clamped fit fails a check (the scale bound or the residual it leaves)
    assert not res.ok and ("scale" in res.reason or "chamfer" in res.reason)
    assert 0.95 <= res.scale <= 1.05


@pytest.mark.parametrize("method", ["point_to_plane", "generalized", "symmetric", "point_to_point"])
def test_register_refiners_from_init(bunny, method):
    dense, ref = bunny
    rng = np.random.default_rng(16)
    trial = make_trial(dense[::2], ref, rng, noise=5e-5, translation=0.002, max_angle_deg=3.0)
    # an initial guess off by about 2 mm / 3 degrees: refinement alone must finish the job
    res = register(trial.source, trial.target, RegisterOptions(refine=RefineOptions(refine_method=method)),
                   init=np.eye(4))
    assert res.attempts == 1
    err, ang = pose_error(res.transform, trial.transform, trial.source)
    assert err < 1e-3 and ang < 0.5, (method, err, ang)
    assert res.ok and res.extra["refine_method"] == method


def test_register_accepts_open3d_clouds(bunny):
    dense, ref = bunny
    src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(dense[::3]))
    tgt = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(ref))
    res = register(src, tgt, init=np.eye(4))
    assert res.ok and np.allclose(res.transform, np.eye(4), atol=1e-3)


@pytest.mark.parametrize("src,match", [
    (np.zeros((0, 3)), "empty"),
    (np.zeros((5, 3)), "need at least 10"),
    (np.full((100, 3), np.nan), "non-finite"),
    (np.zeros((100, 4)), "shape"),
    ("not a cloud", "shape|numeric"),
])
def test_register_bad_input(bunny, src, match):
    with pytest.raises(ValueError, match=match):
        register(src, bunny[1])


def test_register_bad_parameters(bunny):
    src = bunny[0][:2000]
    with pytest.raises(ValueError, match="unknown global registration method"):
        register(src, bunny[1], RegisterOptions.from_options({"global_method": "magic"}))
    with pytest.raises(ValueError, match="unknown refinement method"):
        register(src, bunny[1], {"refine_method": "magic"})
    with pytest.raises(ValueError, match="attempts"):
        register(src, bunny[1], attempts=0)
    with pytest.raises(ValueError, match="voxel_size"):
        register(src, bunny[1], {"voxel_size": -1.0})
    with pytest.raises(ValueError, match="scale_range"):
        register(src, bunny[1], {"scale_range": (1.1, 1.2)})
    with pytest.raises(ValueError, match="options must be"):
        register(src, bunny[1], "fast")


@pytest.mark.parametrize("group,kwargs,match", [
    (PreprocessOptions, {"voxel_size": 0.0}, "voxel_size"),
    (PreprocessOptions, {"outlier_std": -1.0}, "outlier_std"),
    (PreprocessOptions, {"max_refine_points": 5}, "max_refine_points"),
    (GlobalOptions, {"feature_scales": ()}, "feature_scales"),
    (GlobalOptions, {"feature_scales": (1.0, -0.5)}, "feature_scales"),
    (GlobalOptions, {"local_search_deg": (float("nan"),)}, "local_search_deg"),
    (GlobalOptions, {"local_search_rounds": -1}, "local_search_rounds"),
    (GlobalOptions, {"local_search_fitness": 1.5}, "local_search_fitness"),
    (GlobalOptions, {"global_method": {"method": "fpfh_ransac", "edge_length": 1.5}}, "edge_length"),
    (RefineOptions, {"refine_top": 0}, "refine_top"),
    (RefineOptions, {"refine_method": {"method": "point_to_plane", "kernel": "magic"}}, "kernel"),
    (ScaleOptions, {"scale_range": (0.0, 1.2)}, "scale_range"),
    (ScaleOptions, {"min_scale_information": -0.1}, "min_scale_information"),
    (AcceptanceOptions, {"inlier_distance": -1.0}, "inlier_distance"),
    (AcceptanceOptions, {"min_fitness": 1.1}, "min_fitness"),
    (AcceptanceOptions, {"max_chamfer": float("inf")}, "max_chamfer"),
])
def test_register_option_groups_name_the_bad_field(group, kwargs, match):
    with pytest.raises(ValueError, match=match):
        group(**kwargs)


def test_register_options_flat_and_grouped():
    """Flat options (the former keyword arguments of register) land in their groups; defaults
    are those documented; the options are frozen and checked when replaced.
    """
    import dataclasses

    d = RegisterOptions()
    assert d.preprocess.voxel_size is None and d.preprocess.outlier_std == 2.0
    assert d.preprocess.max_refine_points == 40_000
    assert d.global_search.global_method == "fpfh_ransac" and d.global_search.feature_scales == (1.0, 1.4, 0.7)
    assert d.global_search.local_search_deg == (10.0, 25.0) and d.refine.refine_top == 2
    assert d.scale.scale_range == (0.8, 1.25) and d.acceptance.min_fitness == 0.9
    o = RegisterOptions.from_options({"min_fitness": 0.8, "voxel_size": 0.002, "scale": {"scale_range": [0.9, 1.1]}})
    assert o.acceptance.min_fitness == 0.8 and o.preprocess.voxel_size == 0.002
    assert o.scale.scale_range == (0.9, 1.1) and o.refine == d.refine
    assert o.with_options(refine_top=3).refine.refine_top == 3 and o.refine.refine_top == 2
    assert RegisterOptions(acceptance={"max_chamfer": 1e-3}).acceptance.max_chamfer == 1e-3
    assert set(RegisterOptions.option_names()) == set(d.options())
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.acceptance.min_fitness = 0.5  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown registration options .*'attempts'"):
        RegisterOptions.from_options({"attempts": 3})
    with pytest.raises(ValueError, match="min_fitness"):
        d.with_options(min_fitness=-0.1)
    with pytest.raises(ValueError, match="unknown AcceptanceOptions fields"):
        d.with_options(acceptance={"voxel_size": 1.0})


def test_method_configs_map_to_constructors():
    r = make_refiner({"method": "point_to_plane", "max_iterations": 7, "kernel": "tukey"})
    assert isinstance(r, PointToPlaneICP) and r.max_iterations == 7 and r.kernel == "tukey"
    assert isinstance(make_refiner("generalized"), GeneralizedICP)
    g = make_global_aligner({"method": "fpfh_ransac", "iterations": 500, "edge_length": 0.8})
    assert g.iterations == 500 and g.edge_length == 0.8
    with pytest.raises(ValueError, match="edge_length"):
        make_global_aligner({"method": "fpfh_ransac", "edge_length": 1.5})
    with pytest.raises(ValueError, match="robust kernel"):
        make_refiner({"method": "point_to_plane", "kernel": "nope"})
