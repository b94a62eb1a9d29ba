"""Registration onto a part type's reference with retries and the symmetry check
(``cosarad_ros.core.registration.template_align``): a near-symmetric part registered onto its symmetric
counterpart is moved back to the true pose, an exactly symmetric one keeps an equally good pose.
"""
import numpy as np
import pytest

from cosarad_ros.core.anomaly.dataset import partial_view
from cosarad_ros.core.geometry import random_rotation, transform_points
from cosarad_ros.core.registration.symmetry import symmetry_rotations
from cosarad_ros.core.registration.template_align import (
    align_to_reference,
    refine_pose,
    resolve_symmetry,
    symmetry_candidates,
)


def _box(rng, n, size=(0.08, 0.05, 0.02)):
    """Points on the surface of a box centred at the origin, area-uniform."""
    a, b, c = size
    areas = np.array([b * c, b * c, a * c, a * c, a * b, a * b])
    face = rng.choice(6, n, p=areas / areas.sum())
    u, v = rng.uniform(-0.5, 0.5, (2, n))
    p = np.empty((n, 3))
    ax = face // 2
    sign = np.where(face % 2 == 0, 0.5, -0.5)
    for k in range(3):
        others = [i for i in range(3) if i != k]
        m = ax == k
        p[m, k] = sign[m] * size[k]
        p[m, others[0]] = u[m] * size[others[0]]
        p[m, others[1]] = v[m] * size[others[1]]
    return p


def _part(rng, n=30000, boss=True):
    """A box with (optionally) a dome of 8 mm radius, 4 mm high, off-centre on its top face."""
    p = _box(rng, n)
    if boss:
        c = np.array([0.025, 0.01])
        r = np.linalg.norm(p[:, :2] - c, axis=1)
        top = (p[:, 2] > 0.0099) & (r < 0.008)
        p[top, 2] += 0.004 * np.sqrt(1.0 - (r[top] / 0.008) ** 2)
    return p


def _about_centroid(R, pts):
    c = pts.mean(0)
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = c - R @ c
    return M


def test_symmetry_rotations_are_distinct_proper_rotations():
    R = symmetry_rotations(30.0)
    # the 24 rotations of a box, plus 8 new turns per axis (90/180/270 degrees are box rotations)
    assert R.shape == (48, 3, 3)
    assert np.allclose(R[0], np.eye(3))
    assert np.allclose(np.einsum("kij,kil->kjl", R, R), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(R), 1.0)
    flat = R.reshape(len(R), -1)
    gaps = np.abs(flat[:, None] - flat[None]).max(-1) + np.eye(len(R))
    assert gaps.min() > 1e-3
    assert len(symmetry_rotations(90.0)) == 24
    with pytest.raises(ValueError, match="step_deg"):
        symmetry_rotations(0.0)


def test_wrong_symmetric_pose_of_a_near_symmetric_part_is_corrected():
    rng = np.random.default_rng(0)
    ref = _part(rng)
    scan_part = _part(np.random.default_rng(1))  # another sampling of the same part
    view = scan_part[partial_view(scan_part, rng, direction=[0.3, -0.2, 1.0])]
    T_true = np.eye(4)
    T_true[:3, :3] = random_rotation(rng)
    T_true[:3, 3] = [0.1, -0.05, 0.2]
    scan = transform_points(np.linalg.inv(T_true), view)  # the scan in the sensor's frame
    # registered a half turn about the vertical axis away: the box matches, the dome lands on
    # the flat top face
    Rz = np.diag([-1.0, -1.0, 1.0])
    T_wrong = _about_centroid(Rz, ref) @ T_true
    d_wrong = np.linalg.norm(transform_points(T_wrong, scan) - view, axis=1)
    assert np.median(d_wrong) > 0.01
    T, chamfer = resolve_symmetry(scan, ref, T_wrong)
    err = np.linalg.norm(transform_points(T, scan) - view, axis=1)
    assert err.max() < 5e-4, err.max()
    assert chamfer < 1e-3


def test_exact_symmetry_keeps_an_equally_good_pose():
    rng = np.random.default_rng(2)
    ref = _part(rng, boss=False)
    view = _part(np.random.default_rng(3), boss=False)
    view = view[partial_view(view, rng, direction=[0.2, 0.1, 1.0])]
    T, chamfer = resolve_symmetry(view, ref, np.eye(4))
    # any box symmetry is as good as the identity: the scan stays on the surface
    from scipy.spatial import cKDTree

    d, _ = cKDTree(ref).query(transform_points(T, view))
    d0, _ = cKDTree(ref).query(view)
    assert d.mean() <= d0.mean() * 1.05
    assert chamfer == pytest.approx(d.mean(), rel=0.05)


def test_symmetry_candidates_are_the_poses_the_reference_cannot_tell_apart():
    """A view of a plain box fits its half-turns as well as its true pose: those come back (each
    turned by 180 degrees and still on the surface), the given pose itself does not; a view of a
    part no turn maps onto itself gets none; a bad ratio is refused.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(4)
    ref = _part(rng, boss=False)
    view = _part(np.random.default_rng(5), boss=False)
    view = view[partial_view(view, rng, direction=[0.2, 0.1, 1.0])]
    cands = symmetry_candidates(view, ref, np.eye(4))
    assert cands.ndim == 3 and cands.shape[1:] == (4, 4) and len(cands) >= 1
    tree = cKDTree(ref)
    d0 = tree.query(view)[0].mean()
    for C in cands:
        moved = transform_points(C, view)
        assert tree.query(moved)[0].mean() < 1.25 * d0
        assert np.linalg.norm(moved - view, axis=1).mean() > 0.01  # a different pose, not the given one
    angles = np.degrees(np.arccos(np.clip((np.trace(cands[:, :3, :3], axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert np.any(angles > 170), angles
    # three boxes of different sizes in a row, sampled twice: no turn maps them onto themselves
    def blob(r):
        return np.concatenate([_box(r, 6000, (0.02, 0.02, 0.02)),
                               _box(r, 6000, (0.03, 0.05, 0.01)) + [0.03, 0.0, 0.0],
                               _box(r, 6000, (0.02, 0.01, 0.04)) + [0.06, 0.01, 0.005]])

    assert len(symmetry_candidates(blob(np.random.default_rng(6)), blob(np.random.default_rng(7)), np.eye(4))) == 0
    with pytest.raises(ValueError, match="max_ratio"):
        symmetry_candidates(view, ref, np.eye(4), max_ratio=0.5)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        symmetry_candidates(view, ref, np.eye(3))


BLOCK = np.array((0.07, 0.12, 0.13))


def corner_block(seed: int, n: int = 30000) -> np.ndarray:
    """A 70 x 120 x 130 mm box with a dome (8 mm radius, 4 mm high) on its top face near the
    (+x, +y, +z) corner, sampled.
    """
    p = _box(np.random.default_rng(seed), n, BLOCK)
    r = np.linalg.norm(p[:, :2] - [0.01, 0.035], axis=1)
    top = (p[:, 2] > BLOCK[2] / 2 - 1e-4) & (r < 0.008)
    p[top, 2] += 0.004 * np.sqrt(1.0 - (r[top] / 0.008) ** 2)
    return p


def corner_view_and_wrong_pose(seed: int = 2):
    """A view of the block's domed corner (60 x 56 x 46 mm of it) and a pose that turns it a
    quarter about z, swaps x and y, and slides it onto another corner, where its faces fit:
    ``(view (N, 3), T_wrong (4, 4))``; the true pose is the identity.
    """
    full = corner_block(seed)
    view = full[np.all(full > BLOCK / 2 - [0.06, 0.056, 0.046], axis=1)]
    T = np.eye(4)
    T[:3, :3] = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
    T[:3, 3] = [-0.025, 0.025, 0.0]
    return view, T


def test_slides_carry_a_small_view_to_the_corner_no_turn_about_the_centroid_reaches():
    """A corner view placed on another corner (a quarter turn plus a slide, not a turn about the
    centroid): with ``slides`` the true placement is among the candidates; the turns alone do
    not reach it, and stay among the slid candidates (the slides only add poses).
    """
    from scipy.spatial import cKDTree

    ref = corner_block(1)
    view, T_wrong = corner_view_and_wrong_pose()
    tree = cKDTree(ref)
    assert tree.query(transform_points(T_wrong, view))[0].mean() < 1.2 * tree.query(view)[0].mean()  # it fits there

    def err(C):  # mean displacement from the true pose (the identity)
        return np.linalg.norm(transform_points(C, view) - view, axis=1).mean()

    turns = symmetry_candidates(view, ref, T_wrong)
    slid = symmetry_candidates(view, ref, T_wrong, slides=0.9)
    assert min(err(C) for C in turns) > 0.01
    assert min(err(C) for C in slid) < 1e-4
    for C in turns:
        assert min(np.abs(C - K).max() for K in slid) < 1e-9
    with pytest.raises(ValueError, match="slides"):
        symmetry_candidates(view, ref, T_wrong, slides=1.5)


def test_align_to_reference_recovers_the_pose_of_a_near_symmetric_part():
    rng = np.random.default_rng(4)
    ref = _part(rng)
    part = _part(np.random.default_rng(5))
    view = part[partial_view(part, rng, direction=[-0.4, 0.3, 1.0])]
    T_true = np.eye(4)
    T_true[:3, :3] = random_rotation(rng)
    T_true[:3, 3] = [0.3, 0.1, -0.2]
    scan = transform_points(np.linalg.inv(T_true), view)
    res = align_to_reference(scan, ref, seed=0)
    err = np.linalg.norm(transform_points(res.transform, scan) - view, axis=1)
    assert res.ok, res.reason
    assert err.max() < 1e-3, err.max()


def test_resolve_symmetry_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        resolve_symmetry(np.zeros((10, 2)), np.zeros((10, 3)), np.eye(4))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        resolve_symmetry(np.zeros((10, 3)), np.zeros((10, 3)), np.eye(3))


def test_retries_run_until_the_chamfer_is_within_accept_spacing():
    """A bound no pose can reach runs every retry (and still keeps the best pose); a loose bound
    stops after the first registration; a bad bound is refused.
    """
    rng = np.random.default_rng(7)
    ref = _part(rng, n=8000)
    view = _part(np.random.default_rng(8), n=8000)
    view = view[partial_view(view, rng, direction=[0.3, -0.2, 1.0])]
    T_true = np.eye(4)
    T_true[:3, :3] = random_rotation(rng)
    scan = transform_points(np.linalg.inv(T_true), view)
    loose = align_to_reference(scan, ref, seed=0, retries=2, symmetry=False, accept_spacing=100.0)
    strict = align_to_reference(scan, ref, seed=0, retries=2, symmetry=False, accept_spacing=1e-3)
    assert loose.tries == 1
    assert strict.tries == 5  # the first registration, then two retries of two methods each
    assert strict.chamfer <= loose.chamfer + 1e-12
    err = np.linalg.norm(transform_points(strict.transform, scan) - view, axis=1)
    assert err.max() < 2e-3, err.max()
    with pytest.raises(ValueError, match="accept_spacing"):
        align_to_reference(scan, ref, accept_spacing=0.0)


def test_escalation_runs_only_while_the_pose_fails_its_checks():
    """A cloud no pose can fit (a sphere against a box) gets the extra rounds and is still
    reported as failed; a scan that registers costs the same with escalation as without; a bad
    value is refused.
    """
    rng = np.random.default_rng(9)
    ref = _part(rng, n=6000)
    sphere = rng.normal(size=(4000, 3))
    sphere = 0.02 * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    plain = align_to_reference(sphere, ref, seed=0, retries=1, escalate=0, symmetry=False, refine=False)
    more = align_to_reference(sphere, ref, seed=0, retries=1, escalate=2, symmetry=False, refine=False)
    assert not plain.ok and not more.ok
    assert more.tries > plain.tries  # two more rounds ran
    assert more.chamfer <= plain.chamfer + 1e-12  # the best pose is kept across all rounds
    view = _part(np.random.default_rng(10), n=6000)
    view = view[partial_view(view, rng, direction=[0.3, -0.2, 1.0])]
    scan = transform_points(np.linalg.inv(_about_centroid(random_rotation(rng), view)), view)
    a = align_to_reference(scan, ref, seed=0, escalate=0)
    b = align_to_reference(scan, ref, seed=0, escalate=6)
    assert a.ok and b.ok and a.tries == b.tries and np.allclose(a.transform, b.transform)
    with pytest.raises(ValueError, match="escalate"):
        align_to_reference(scan, ref, escalate=-1)


def test_read_only_reference_gives_the_same_pose_and_is_prepared_once():
    """Registering onto a read-only reference (what the detectors pass) keeps its preparation
    between scans and lands on the same pose as a writeable copy; near-symmetric part, retries on.
    """
    from cosarad_ros.core.registration.cloud import readonly_memo

    rng = np.random.default_rng(4)
    ref = _part(rng, n=25000)
    part = _part(np.random.default_rng(5), n=25000)
    view = part[partial_view(part, rng, direction=[-0.4, 0.3, 1.0])]
    scan = transform_points(np.linalg.inv(_about_centroid(random_rotation(rng), view)), view)
    ro = ref.copy()
    ro.flags.writeable = False
    a = align_to_reference(scan, ro, seed=0)
    memo = readonly_memo(ro)
    assert "tree" in memo and not memo[("sample", 1)].flags.writeable  # kept, and prepared once by register()
    assert memo["normals"].shape == ref.shape  # the polish's normals, estimated once
    b = align_to_reference(scan, ro, seed=0)
    c = align_to_reference(scan, ref, seed=0)
    assert a.ok and np.allclose(a.transform, b.transform) and np.allclose(a.transform, c.transform, atol=1e-9)
    assert readonly_memo(ref) is None and ref.flags.writeable  # a writeable reference is never kept, nor changed


def test_refine_pose_polishes_a_nearly_right_pose_to_the_noise_level():
    """A pose off by 0.5 degrees and 0.4 mm (what the sample-based global stages leave) is brought
    to within a few micrometres of the truth on a noisy partial view; the Chamfer distance drops.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(11)
    ref = _part(rng, n=30000)
    view = _part(np.random.default_rng(12), n=30000)
    view = view[partial_view(view, rng, direction=[0.2, -0.5, 1.0])]
    view = view + rng.normal(0.0, 3e-5, view.shape)  # 0.03 mm noise, as the synthetic scanner
    spacing = float(np.median(cKDTree(ref).query(ref[:2000], k=2)[0][:, 1]))
    a = np.radians(0.5)
    off = np.eye(4)
    off[:3, :3] = [[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]]
    off[:3, 3] = [4e-4, -2e-4, 1e-4]
    before = np.linalg.norm(transform_points(off, view) - view, axis=1)
    T, chamfer = refine_pose(view, ref, off, spacing=spacing)
    after = np.linalg.norm(transform_points(T, view) - view, axis=1)
    assert np.percentile(before, 99) > 3e-4
    assert np.percentile(after, 99) < 3e-5, np.percentile(after, 99)
    d, _ = cKDTree(ref).query(transform_points(off, view), k=1)
    assert chamfer < d.mean()
    # an exact pose stays (nothing lowers its Chamfer distance noticeably)
    T2, _ = refine_pose(view, ref, np.eye(4), spacing=spacing)
    assert np.linalg.norm(transform_points(T2, view) - view, axis=1).max() < 3e-5
    with pytest.raises(ValueError, match="spacing"):
        refine_pose(view, ref, off, spacing=0.0)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        refine_pose(view, ref, np.eye(3), spacing=spacing)
    with pytest.raises(ValueError, match=r"\(N >= 3, 3\)"):
        refine_pose(view[:, :2], ref, off, spacing=spacing)
