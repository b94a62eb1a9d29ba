"""Simulated scans: surface sampling, visibility by ray casting, noise, density, pose."""
from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from cosarad_ros.core.data.defects import refine_mesh_near
from cosarad_ros.core.data.parts import make_part
from cosarad_ros.core.data.scans import (
    apply_pose,
    density_field,
    full_scan,
    partial_scan,
    random_pose,
    weighted_subsample,
)
from cosarad_ros.core.geometry import rotation_angle_deg


@pytest.fixture(scope="module")
def part():
    return make_part("bracket", seed=3)


@pytest.fixture(scope="module")
def scene(part):
    # faces refined to <= 2 mm: float32 distance queries are exact enough on them
    V, F = refine_mesh_near(part.mesh.vertices, part.mesh.faces, lambda x: np.full(len(x), -1.0),
                            radius=0.0, max_edge=2e-3)
    s = o3d.t.geometry.RaycastingScene()
    s.add_triangles(o3d.core.Tensor(V.astype(np.float32)), o3d.core.Tensor(F.astype(np.uint32)))
    return s


def _dist(scene, pts):
    return scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()


def test_full_scan_noise_and_count(part, scene):
    scan = full_scan(part.mesh, 8000, np.random.default_rng(0), noise=5e-5)
    assert scan.points.shape == (8000, 3) and scan.sensor_pose is None
    assert _dist(scene, scan.clean_points).max() < 1e-6  # clean points on the surface
    offset = np.einsum("ij,ij->i", scan.points - scan.clean_points, scan.normals)
    assert np.std(offset) == pytest.approx(5e-5, rel=0.1)
    np.testing.assert_allclose(np.linalg.norm(scan.points - scan.clean_points, axis=1), np.abs(offset), atol=1e-12)


def test_partial_scan_sees_only_visible_surface(part, scene):
    rng = np.random.default_rng(1)
    scan = partial_scan(part.mesh, 6000, rng, view_direction=(0.3, -0.5, 0.8), noise=0.0)
    n = len(scan)
    assert 0.7 * 6000 <= n <= 6000
    eye = scan.sensor_pose[:3, 3]
    d = scan.clean_points - eye
    dist = np.linalg.norm(d, axis=1)
    rays = np.concatenate([np.broadcast_to(eye, d.shape), d / dist[:, None]], 1).astype(np.float32)
    t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    # nothing lies between the sensor and any scanned point
    assert np.all(t >= dist - 2e-5)
    # normals face the sensor; the optical z axis points at the part
    assert np.all(np.einsum("ij,ij->i", scan.normals, -d) > 0)
    z = scan.sensor_pose[:3, 2]
    assert z @ (part.mesh.bounds.mean(axis=0) - eye) > 0
    # a surface facing away from the sensor is not seen: the bracket's bottom (z = 0, normal -z)
    assert not np.any((np.abs(scan.clean_points[:, 2]) < 1e-9) & (scan.normals[:, 2] < -0.9))


def test_partial_scan_noise_along_rays(part):
    rng = np.random.default_rng(2)
    scan = partial_scan(part.mesh, 4000, rng, noise=1e-4)
    eye = scan.sensor_pose[:3, 3]
    dirs = scan.clean_points - eye
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    delta = scan.points - scan.clean_points
    along = np.einsum("ij,ij->i", delta, dirs)
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1), np.abs(along), atol=1e-12)
    assert np.std(along) == pytest.approx(1e-4, rel=0.1)


def test_scans_are_deterministic(part):
    a = partial_scan(part.mesh, 3000, np.random.default_rng(7))
    b = partial_scan(part.mesh, 3000, np.random.default_rng(7))
    np.testing.assert_array_equal(a.points, b.points)
    c = full_scan(part.mesh, 3000, np.random.default_rng(7))
    d = full_scan(part.mesh, 3000, np.random.default_rng(7))
    np.testing.assert_array_equal(c.points, d.points)


def test_density_variation_and_weighted_subsample():
    rng = np.random.default_rng(0)
    w = np.r_[np.full(5000, 1.0), np.full(5000, 3.0)]
    idx = weighted_subsample(w, 2000, rng)
    assert len(np.unique(idx)) == 2000
    share = (idx >= 5000).mean()
    assert 0.68 < share < 0.82  # heavier half drawn more (0.75 at small k)
    pts = rng.uniform(size=(4000, 3))
    f = density_field(pts, rng, wavelength=0.5, strength=0.6)
    assert f.min() == pytest.approx(0.4) and f.max() == pytest.approx(1.0)


def test_random_pose_is_rigid(part):
    T = random_pose(np.random.default_rng(4), max_translation=0.02)
    R = T[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert np.all(np.abs(T[:3, 3]) <= 0.02)
    scan = full_scan(part.mesh, 500, np.random.default_rng(0))
    moved = apply_pose(scan, T)
    np.testing.assert_allclose(moved.points, scan.points @ R.T + T[:3, 3])
    small = random_pose(np.random.default_rng(4), max_angle_deg=5.0)
    assert rotation_angle_deg(small[:3, :3]) <= 5.0 + 1e-9


def test_bad_scan_requests(part):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_points"):
        full_scan(part.mesh, 0, rng)
    with pytest.raises(ValueError, match="view_direction"):
        partial_scan(part.mesh, 100, rng, view_direction=(0, 0, 0))
    with pytest.raises(ValueError, match="distance_factor"):
        partial_scan(part.mesh, 100, rng, distance_factor=0.5)
    with pytest.raises(ValueError, match="sees only"):
        partial_scan(part.mesh, 100, rng, min_points=10**7)
