"""The CAD model as nominal surface: signed distances and the one registration of an inspection."""
import numpy as np
import pytest

from cosarad_ros.core.data.parts import make_part
from cosarad_ros.core.geometry import transform_points
from cosarad_ros.core.registration.mesh_reference import MeshReference


@pytest.fixture(scope="module")
def flange():
    return make_part("flange", seed=2)


def _pose(deg, shift):
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", deg, degrees=True).as_matrix()
    T[:3, 3] = shift
    return T


def test_signed_distance_is_positive_outside_and_negative_inside(flange):
    ref = MeshReference(flange.mesh)
    pts, nrm = ref.sample(5000, seed=1)
    # offsets near an edge come closer to the neighbouring face: most points, not all, are exact
    out, inside = ref.signed_distance(pts + 5e-4 * nrm), ref.signed_distance(pts - 3e-4 * nrm)
    assert np.mean(np.abs(out - 5e-4) < 2e-5) > 0.9 and (out > 0).all()
    assert np.mean(np.abs(inside + 3e-4) < 2e-5) > 0.9 and np.mean(inside < 0) > 0.98
    np.testing.assert_allclose(ref.distance(pts - 3e-4 * nrm), np.abs(inside), atol=1e-9)


def test_align_recovers_a_small_placement_error_from_a_noisy_partial_view(flange):
    ref = MeshReference(flange.mesh)
    pts, _ = ref.sample(30000, seed=3)
    view = pts[pts[:, 2] > 0.003][:8000]
    view = view + np.random.default_rng(0).normal(0, 1e-4, view.shape)
    truth = _pose([1.0, -0.5, 2.0], [0.002, -0.001, 0.0015])
    scan = transform_points(np.linalg.inv(truth), view)
    al = ref.align(scan)
    err = np.abs(transform_points(al.transform, scan) - view).max()
    assert err < 5e-5, f"pose error {err * 1e3:.3f} mm"
    assert al.fitness > 0.99 and al.rmse < 2e-4


def test_align_keeps_the_better_seed(flange):
    ref = MeshReference(flange.mesh)
    pts, _ = ref.sample(20000, seed=4)
    view = pts[pts[:, 2] > 0.003]
    truth = _pose([0.0, 0.0, 37.0], [0.003, 0.0, 0.0])  # far beyond what ICP repairs from identity
    scan = transform_points(np.linalg.inv(truth), view)
    al = ref.align(scan, init=(np.eye(4), truth @ _pose([0, 0, 1.0], [0.0005, 0, 0])))
    assert al.seed_index == 1
    assert np.abs(transform_points(al.transform, scan) - view).max() < 1e-4


def test_bad_input_is_refused_with_a_clear_error(flange):
    import trimesh

    with pytest.raises(ValueError, match="no faces"):
        MeshReference(trimesh.Trimesh())
    ref = MeshReference(flange.mesh)
    with pytest.raises(ValueError, match="scan"):
        ref.align(np.full((100, 3), np.nan))
    with pytest.raises(ValueError, match="init"):
        ref.align(ref.sample(200)[0], init=())
