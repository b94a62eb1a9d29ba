"""Multi-view fusion: views from known (slightly wrong) sensor poses merged in the part frame."""
from __future__ import annotations

import numpy as np
import pytest

from cosarad_ros.core.geometry import look_at, random_rotation
from cosarad_ros.core.io import sample_mesh
from cosarad_ros.core.registration import fuse_views, partial_view, view_poses


def _apply(T, p):
    return p @ T[:3, :3].T + T[:3, 3]


@pytest.fixture(scope="module")
def views():
    """Six views of a procedural bracket from a ring of sensor poses, in the sensor frames, with the
    true sensor -> part poses and kinematic poses off by ~0.7 mm / 0.3 degrees.
    """
    from cosarad_ros.core.data.parts import make_part

    mesh = make_part("bracket", seed=3).mesh
    dense, _ = sample_mesh(mesh, 30000, seed=0)
    centre = dense.mean(axis=0)
    rng = np.random.default_rng(0)
    clouds, truth, kinematic = [], [], []
    for k in range(6):
        az = 2 * np.pi * k / 6
        eye = centre + np.array([0.3 * np.cos(az), 0.3 * np.sin(az), 0.2])
        T = look_at(eye, centre)  # sensor -> part
        idx = partial_view(dense, eye - centre)
        local = _apply(np.linalg.inv(T), dense[idx]) + rng.normal(scale=5e-5, size=(len(idx), 3))
        E = np.eye(4)
        E[:3, :3] = random_rotation(rng, 0.3)
        E[:3, 3] = rng.normal(scale=0.0004, size=3)
        clouds.append(local)
        truth.append(T)
        kinematic.append(T @ E)
    return clouds, np.stack(truth), np.stack(kinematic)


def _pose_errors(clouds, poses, truth):
    return np.array([np.linalg.norm(_apply(P, c) - _apply(G, c), axis=1).max()
                     for c, P, G in zip(clouds, poses, truth)])


def test_fusion_refines_kinematic_poses_and_deduplicates(views):
    clouds, truth, kinematic = views
    res = fuse_views(clouds, kinematic)
    assert res.ok, res.reason
    assert res.pairs >= 6
    before = _pose_errors(clouds, kinematic, truth)
    after = _pose_errors(clouds, res.poses, truth)
    # the views agree with each other much better, and with the part frame at least as well
    assert res.residual < 0.6 * res.residual_before
    assert np.median(after) < np.median(before)
    assert after.max() < 1.5e-3
    np.testing.assert_allclose(res.initial_poses, kinematic)
    # voxel de-duplication: overlaps are merged, so fewer points than the views together
    total = sum(len(c) for c in clouds)
    assert len(res.points) < 0.8 * total
    assert res.normals.shape == res.points.shape
    assert np.allclose(np.linalg.norm(res.normals, axis=1), 1.0)
    # merged points are about one voxel apart, while the raw overlaps hold near-duplicates
    from scipy.spatial import cKDTree

    d_merged, _ = cKDTree(res.points).query(res.points, k=2)
    raw = np.concatenate([_apply(P, c) for P, c in zip(res.poses, clouds)])
    d_raw, _ = cKDTree(raw).query(raw, k=2)
    assert np.median(d_merged[:, 1]) > 0.35 * res.voxel_size
    assert np.median(d_raw[:, 1]) < 0.8 * np.median(d_merged[:, 1])


def test_views_from_exact_poses_fuse_as_without_refinement(views):
    """Exact poses (simulated templates): the refinement has nothing to correct and is dropped,
    so fusing without it gives the same cloud.
    """
    clouds, truth, _ = views
    refined = fuse_views(clouds, truth)
    plain = fuse_views(clouds, truth, refine=False)
    np.testing.assert_array_equal(refined.poses, plain.poses)
    np.testing.assert_array_equal(refined.points, plain.points)


def test_no_view_of_a_good_block_slides_along_a_face():
    """Three cell views of a good block scanned from exact poses (``test/data``, written by the
    simulated cell): the view refinement can lower the overlap residual 5 % by sliding the
    middle view 1.6 mm along the block's end face, which leaves a ghost face that FAILs the part.
    A gain that small is the noise floor, not a misalignment: every view keeps its pose.
    """
    from pathlib import Path

    from cosarad_ros.core.inspection.fusion import CELL_VOXEL

    data = np.load(Path(__file__).parent / "data" / "fusion_block_exact_poses.npz")
    clouds = [data[f"view{i}"].astype(np.float64) for i in range(3)]
    kw = dict(part_pose=data["part_pose"], voxel_size=CELL_VOXEL)
    res = fuse_views(clouds, data["sensor_poses"], **kw)
    assert res.corrections_mm.max() < 0.05, res.corrections_mm
    # the slide the test guards against is there to be taken
    slid = fuse_views(clouds, data["sensor_poses"], min_residual_gain=0.05, **kw)
    assert slid.corrections_mm.max() > 1.0 and slid.residual < slid.residual_before


def test_a_stricter_icp_stop_does_not_change_the_refined_poses(views):
    """The pairwise ICP's stopping bound is far below the noise: a stricter bound places every
    view within 0.1 mm of the default's.
    """
    clouds, truth, kinematic = views
    default = fuse_views(clouds, kinematic)
    strict = fuse_views(clouds, kinematic, icp_tolerance=1e-7)
    assert _pose_errors(clouds, default.poses, strict.poses).max() < 1e-4
    assert default.residual < 1.05 * strict.residual
    with pytest.raises(ValueError, match="icp_tolerance"):
        fuse_views(clouds, kinematic, icp_tolerance=0.0)


def test_fusion_with_hand_eye_and_part_pose_matches_sensor_poses(views):
    clouds, truth, kinematic = views
    rng = np.random.default_rng(1)
    X = np.eye(4)  # flange -> sensor
    X[:3, :3] = random_rotation(rng)
    X[:3, 3] = [0.01, -0.02, 0.05]
    B = np.eye(4)  # base -> part
    B[:3, :3] = random_rotation(rng)
    B[:3, 3] = [0.45, 0.0, 0.12]
    flange = [B @ K @ np.linalg.inv(X) for K in kinematic]  # base -> flange
    np.testing.assert_allclose(view_poses(flange, hand_eye=X, part_pose=B), kinematic, atol=1e-12)
    plain = fuse_views(clouds, kinematic, refine=False)
    chained = fuse_views(clouds, flange, hand_eye=X, part_pose=B, refine=False)
    np.testing.assert_allclose(np.sort(chained.points, axis=0), np.sort(plain.points, axis=0), atol=1e-9)
    assert np.allclose(plain.poses, kinematic) and np.all(plain.corrections_mm == 0)


def test_fusion_rejects_corrections_beyond_the_limit(views):
    clouds, truth, kinematic = views
    res = fuse_views(clouds, kinematic, max_correction=1e-5)
    assert not res.ok and "correction" in res.reason
    np.testing.assert_allclose(res.poses, kinematic)  # every view kept its kinematic pose


def test_fusion_bad_input(views):
    clouds, _, kinematic = views
    with pytest.raises(ValueError, match="at least one view"):
        fuse_views([], [])
    with pytest.raises(ValueError, match="2 clouds but 1 poses"):
        fuse_views(clouds[:2], kinematic[:1])
    with pytest.raises(ValueError, match="view 1"):
        fuse_views([clouds[0], np.zeros((3, 3))], kinematic[:2])
    bad = kinematic[:2].copy()
    bad[1, 3] = [0, 0, 1, 1]
    with pytest.raises(ValueError, match="last row"):
        fuse_views(clouds[:2], bad)
