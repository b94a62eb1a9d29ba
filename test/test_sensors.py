"""Simulated sensors, the cell scene, the Sensor interface and ``cosarad scan``.

Geometry checks are independent of the implementation: expected occlusions are computed with
a slab test of segments against axis-aligned boxes, and distances to the mesh with Open3D's
exact point-to-triangle distance.
"""
import numpy as np
import open3d as o3d
import pytest
import trimesh

from cosarad_ros.core.geometry import look_at, pose_to_matrix
from cosarad_ros.core.sensors import (
    LaserProfilerSensor,
    SensorFrame,
    SensorNotConnectedError,
    SensorNotFoundError,
    SensorTimeoutError,
    SimulatedScene,
    StructuredLightSensor,
    default_viewpoint,
    height_map_to_points,
    make_sensor,
    sensor_types,
)

BEARING = "/usr/share/opencascade/data/stl/bearing.stl"
NO_DROPOUT = {"dropout_start_deg": 90.0, "max_incidence_deg": 90.0}


def _mesh_distance(vertices, faces, points):
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)), o3d.core.Tensor(np.asarray(faces, np.uint32)))
    return rc.compute_distance(o3d.core.Tensor(np.asarray(points, np.float32))).numpy()


def _segment_hits_box(p0, p1, lo, hi, shrink=1e-4):
    """Slab test: whether the open segment p0 -> p1 passes through the box [lo, hi] (shrunk a bit)."""
    lo, hi = np.asarray(lo) + shrink, np.asarray(hi) - shrink
    d = p1 - p0
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - p0) / d
        t2 = (hi - p0) / d
    tmin = np.nanmax(np.where(np.isfinite(t1), np.minimum(t1, t2), -np.inf), axis=1)
    tmax = np.nanmin(np.where(np.isfinite(t1), np.maximum(t1, t2), np.inf), axis=1)
    # rays parallel to a slab: inside it or never
    par = ~np.isfinite(t1)
    outside = (par & ((p0 < lo) | (p0 > hi))).any(axis=1)
    return (tmax >= np.maximum(tmin, 0.0)) & (tmin < 1.0) & ~outside


@pytest.fixture(scope="module")
def bearing_scene():
    mesh = trimesh.load(BEARING)
    mesh.apply_scale(0.001)
    scene = SimulatedScene()
    scene.set_table(top_z=0.0)
    scene.set_part(mesh, pose=scene.resting_pose(mesh), part_id="bearing")
    return scene


def _box_on_table(box_size=(0.04, 0.04, 0.10)):
    scene = SimulatedScene()
    scene.set_table(top_z=0.0, size=(1.0, 1.0))
    box = trimesh.creation.box(box_size)
    scene.set_part(box, pose=scene.resting_pose(box))
    b = scene.bounds("part")
    return scene, b[0], b[1]


# --- interface -----------------------------------------------------------------------------

def test_make_sensor_types_and_config_errors():
    assert {"motioncam", "ruler", "genicam", "replay"} <= set(sensor_types())
    s = make_sensor({"type": "motioncam", "resolution": [64, 48]})
    assert isinstance(s, StructuredLightSensor) and s.resolution == (64, 48)
    assert isinstance(make_sensor("ruler"), LaserProfilerSensor)
    with pytest.raises(ValueError, match="unknown sensor type 'kinect'"):
        make_sensor({"type": "kinect"})
    with pytest.raises(ValueError, match="accepted keys: .*resolution"):
        make_sensor({"type": "motioncam", "resolutoin": [64, 48]})
    with pytest.raises(ValueError, match="needs a 'type'"):
        make_sensor({"seed": 1})
    with pytest.raises(ValueError, match="resolution"):
        make_sensor({"type": "motioncam", "resolution": [-5, 10]})
    with pytest.raises(ValueError, match="working_range"):
        make_sensor({"type": "motioncam", "working_range": [1.0, 0.5]})
    with pytest.raises(ValueError, match="motion"):
        make_sensor({"type": "ruler", "motion": "helical"})


def test_sensor_frame_validation_and_immutability():
    pts = np.random.default_rng(0).normal(size=(10, 3))
    T = pose_to_matrix([0, 0, 1], [0, 0, 0, 1])
    f = SensorFrame(points=pts, stamp=5.0, sensor_pose=T)
    assert f.points.dtype == np.float32 and len(f) == 10
    with pytest.raises(ValueError):
        f.points[0, 0] = 1.0  # read-only
    np.testing.assert_allclose(f.points_world(), pts.astype(np.float32) + [0, 0, 1], atol=1e-6)
    bad = pts.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        SensorFrame(points=bad, stamp=0.0)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        SensorFrame(points=np.zeros((4, 2)), stamp=0.0)
    with pytest.raises(ValueError, match="no sensor_pose"):
        SensorFrame(points=pts, stamp=0.0).points_world()
    with pytest.raises(ValueError, match="normals"):
        SensorFrame(points=pts, stamp=0.0, normals=np.zeros((3, 3)))
    assert len(SensorFrame(points=np.zeros((0, 3)), stamp=0.0)) == 0


def test_grab_needs_connect_and_validates_pose(bearing_scene):
    s = make_sensor({"type": "motioncam", "scene": bearing_scene, "resolution": [64, 48]})
    with pytest.raises(SensorNotConnectedError):
        s.grab()
    with s:
        assert s.is_connected
        with pytest.raises(ValueError, match="sensor_pose"):
            s.grab(np.eye(3))
    assert not s.is_connected


# --- structured light --------------------------------------------------------------------------

def test_structured_light_scan_lies_on_mesh_and_noise_matches_model(bearing_scene):
    cfg = {"type": "motioncam", "scene": bearing_scene, "resolution": [400, 286], "seed": 3}
    pose = default_viewpoint(bearing_scene, 0.75, elevation_deg=70.0)
    clean = make_sensor({**cfg, "noise_sigma": 0.0})
    noisy = make_sensor({**cfg, "noise_sigma": 3e-4})
    with clean, noisy:
        a, b = clean.grab(pose), noisy.grab(pose)
    part = bearing_scene.get("part")
    on_part = a.meta["labels"] == bearing_scene.label_of("part")
    assert on_part.sum() > 1000
    d = _mesh_distance(part.world_vertices(), part.faces, a.points_world()[on_part])
    assert d.max() < 2e-5, "noise-free points must lie on the mesh"
    # same seed -> same dropout draws -> same pixels; the depth differences are the noise
    assert np.array_equal(a.meta["pixel_rows"], b.meta["pixel_rows"])
    dz = (b.points[:, 2] - a.points[:, 2]).astype(np.float64)
    sigma = noisy.noise_at(a.points[:, 2])
    ratio = dz / sigma
    assert abs(ratio.std() - 1.0) < 0.05 and abs(ratio.mean()) < 0.05
    d_noisy = _mesh_distance(part.world_vertices(), part.faces, b.points_world()[on_part])
    assert np.quantile(d_noisy, 0.999) < 5 * sigma.max()
    # normals are unit, point towards the sensor
    n = a.normals
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert (np.einsum("ij,ij->i", n, a.points) < 0).all()


def test_structured_light_noise_grows_with_square_of_depth():
    scene = SimulatedScene()
    scene.set_table(top_z=0.0, size=(3.0, 3.0))
    stds = []
    for z in (0.6, 1.0):
        s = make_sensor({"type": "motioncam", "scene": scene, "resolution": [80, 60], "seed": 1,
                         "noise_sigma": 5e-4, **NO_DROPOUT})
        pose = look_at([0, 0, z], [0, 0, 0], up=(0, 1, 0))
        with s:
            f = s.grab(pose)
        stds.append(f.points_world()[:, 2].std())
    assert stds[1] / stds[0] == pytest.approx((1.0 / 0.6) ** 2, rel=0.12)


def test_structured_light_is_deterministic_for_a_seed(bearing_scene):
    def grab(seed):
        s = make_sensor({"type": "motioncam", "scene": bearing_scene, "resolution": [160, 120], "seed": seed})
        with s:
            return s.grab(), s.grab()
    a1, a2 = grab(7)
    b1, b2 = grab(7)
    c1, _ = grab(8)
    assert np.array_equal(a1.points, b1.points) and np.array_equal(a2.points, b2.points)
    assert not np.array_equal(a1.points, a2.points) or len(a1) == 0  # a new noise draw per grab
    assert not np.array_equal(a1.points, c1.points)


def test_structured_light_projector_shadow_matches_geometry():
    scene, lo, hi = _box_on_table((0.04, 0.04, 0.15))
    s = make_sensor({"type": "motioncam", "scene": scene, "resolution": [240, 180], "noise_sigma": 0.0,
                     "baseline": 0.25, **NO_DROPOUT})
    pose = look_at([0.0, 0.0, 0.75], [0.0, 0.0, 0.0], up=(0, 1, 0))
    with s:
        f = s.grab(pose)
    # every camera pixel that sees the table: expected lit unless the projector segment crosses the box
    K = s.camera_matrix
    w, h = s.resolution
    uu, vv = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    d = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1).reshape(-1, 3)
    dw = d @ pose[:3, :3].T
    t = -pose[2, 3] / dw[:, 2]
    X = pose[:3, 3] + dw * t[:, None]                     # table hits (z = 0)
    cam_blocked = _segment_hits_box(np.broadcast_to(pose[:3, 3], X.shape), X, lo, hi, shrink=-5e-4)
    on_box_top = (np.abs(X[:, :2]) <= hi[:2]).all(axis=1)
    table_pixel = ~cam_blocked & ~on_box_top
    P = pose[:3, 3] + pose[:3, :3] @ np.array([0.25, 0.0, 0.0])
    shadow = _segment_hits_box(np.broadcast_to(P, X.shape), X, lo, hi, shrink=5e-4)
    clear = table_pixel & (shadow == _segment_hits_box(np.broadcast_to(P, X.shape), X, lo, hi, shrink=-5e-4))
    got = np.zeros(w * h, dtype=bool)
    sel = f.meta["labels"] == scene.label_of("table")
    got[f.meta["pixel_rows"][sel].astype(int) * w + f.meta["pixel_cols"][sel]] = True
    assert shadow[clear].sum() > 200, "the test geometry must cast a projector shadow"
    assert clear.sum() > 0.95 * table_pixel.sum()
    assert np.array_equal(got[clear], ~shadow[clear])
    assert f.meta["stats"]["projector_shadowed"] > 0


def test_structured_light_grazing_angle_dropout_and_working_range():
    scene = SimulatedScene()
    plane = trimesh.creation.box((2.0, 2.0, 0.01))
    # narrow field of view: the incidence angle is nearly the same over the image
    res = {"resolution": [60, 45], "fov_deg": [8.0, 6.0], "seed": 0, "dropout_start_deg": 65.0,
           "max_incidence_deg": 80.0}

    def scan(tilt_deg, dist=0.75):
        R = trimesh.transformations.rotation_matrix(np.radians(tilt_deg), [1, 0, 0])
        scene.set_part(plane, pose=R)
        s = make_sensor({"type": "motioncam", "scene": scene, "baseline": 0.01, **res})
        with s:
            return s.grab(look_at([0, 0, dist], [0, 0, 0], up=(0, 1, 0)))

    assert len(scan(20.0)) == 60 * 45       # frontal: every pixel
    assert len(scan(86.0)) == 0             # beyond max incidence: nothing
    mid = len(scan(72.5))                   # half way through the ramp: some dropped
    assert 0.2 * 60 * 45 < mid < 0.8 * 60 * 45
    assert len(scan(0.0, dist=1.3)) == 0    # beyond the far limit
    assert len(scan(0.0, dist=0.4)) == 0    # closer than the near limit


# --- laser profiler ------------------------------------------------------------------------------

def test_laser_profiler_linear_scan_on_mesh_height_map_and_camera_occlusion():
    scene, lo, hi = _box_on_table()
    s = make_sensor({"type": "ruler", "scene": scene, "columns": 200, "step": 2e-3, "travel": 0.16,
                     "noise_sigma": 0.0, "baseline": 0.2, "fan_angle_deg": 30.0, **NO_DROPOUT})
    start = s.default_pose()
    with s:
        f = s.grab(start)
    P, C = s.num_profiles, 200
    assert f.height_map.shape == (P, C) and f.height_map.dtype == np.uint16
    assert (f.height_map > 0).sum() == len(f)
    # the points rebuilt from the 16-bit map are the cloud
    back = height_map_to_points(f.height_map, scale=f.meta["height_map_scale"],
                                offset=f.meta["height_map_offset"], column_slopes=f.meta["column_slopes"],
                                spacing=f.meta["profile_spacing"])
    order = np.lexsort((f.meta["column_index"], f.meta["profile_index"]))
    np.testing.assert_allclose(back, f.points[order], atol=1e-6)
    # on the surfaces (quantisation of 7.6 um only)
    box = scene.get("part")
    on_box = f.meta["labels"] == scene.label_of("part")
    assert _mesh_distance(box.world_vertices(), box.faces, f.points_world()[on_box]).max() < 2e-5
    assert abs(f.points_world()[~on_box][:, 2]).max() < 2e-5
    # camera occlusion: table points hidden from the camera by the box are missing, others present
    poses = s.profile_poses(start)
    origins = np.repeat(poses[:, :3, 3], C, axis=0)
    dirs = np.einsum("pij,cj->pci", poses[:, :3, :3], s._rays).reshape(-1, 3)
    X = origins + dirs * (-origins[:, 2] / dirs[:, 2])[:, None]
    # rays grazing the box's edges count as blocked (grown box): only clear table hits are compared
    laser_blocked = _segment_hits_box(origins, X, lo, hi, shrink=-5e-4) | (np.abs(X[:, :2]) <= hi[:2]).all(axis=1)
    cam = origins + np.repeat(poses[:, :3, 1], C, axis=0) * 0.2
    cam_blocked = _segment_hits_box(cam, X, lo, hi, shrink=5e-4)
    # segments passing within 0.5 mm of a box edge are ambiguous; compare the others exactly
    clear = ~laser_blocked & (cam_blocked == _segment_hits_box(cam, X, lo, hi, shrink=-5e-4))
    present = f.height_map.reshape(-1) > 0
    assert cam_blocked[clear].sum() > 100, "the geometry must hide some laser line from the camera"
    assert clear.sum() > 0.9 * (~laser_blocked).sum()
    assert np.array_equal(present[clear], ~cam_blocked[clear])
    assert f.meta["stats"]["camera_occluded"] > 0


def test_laser_profiler_noise_and_rotary_axis_covers_all_sides():
    mesh = trimesh.creation.cylinder(radius=0.04, height=0.06, sections=64)
    scene = SimulatedScene()
    scene.set_part(mesh, pose=np.eye(4))
    s = make_sensor({"type": "ruler", "scene": scene, "motion": "rotary", "rotary_step_deg": 4.0,
                     "columns": 128, "noise_sigma": 2e-4, "seed": 2})
    # look at the side of the cylinder, laser line vertical through the axis
    start = look_at([0.0, -0.6, 0.0], [0.0, 0.0, 0.0], up=(1, 0, 0))
    with s:
        f = s.grab(start)
    assert s.num_profiles == 90 and f.height_map.shape == (90, 128)
    w = f.points_world()
    part = scene.get("part")
    d = _mesh_distance(part.world_vertices(), part.faces, w)
    assert np.quantile(d, 0.99) < 4 * s.noise_at(0.6 + 0.04) and np.median(d) > 1e-5
    az = np.degrees(np.arctan2(w[:, 1], w[:, 0]))
    hist, _ = np.histogram(az, bins=36, range=(-180, 180))
    assert (hist > 0).all(), "a full turn must see every side of the part"


def test_laser_profiler_deterministic_and_pose_frame():
    scene, _, _ = _box_on_table()
    cfg = {"type": "ruler", "scene": scene, "columns": 64, "travel": 0.05, "step": 5e-3, "seed": 4}
    a, b = make_sensor(cfg), make_sensor(cfg)
    with a, b:
        fa, fb = a.grab(), b.grab()
    assert np.array_equal(fa.points, fb.points) and len(fa) > 0
    np.testing.assert_allclose(fa.sensor_pose, a.default_pose())


# --- faults ----------------------------------------------------------------------------------------

def test_device_stops_answering_and_comes_back(bearing_scene):
    s = make_sensor({"type": "motioncam", "scene": bearing_scene, "resolution": [32, 24],
                     "fail_after": 2, "recover_after": 1})
    s.connect()
    s.grab(), s.grab()
    with pytest.raises(SensorTimeoutError, match="stopped answering"):
        s.grab()
    assert not s.is_connected and not s.device_present and s.failure_count == 1
    with pytest.raises(SensorNotFoundError, match="not found"):
        s.connect()                         # refused once ...
    s.connect()                             # ... then back
    assert s.is_connected and len(s.grab()) >= 0 and s.grab_count == 3
    s.unplug()
    with pytest.raises(SensorTimeoutError):
        s.grab()
    s.plug_in()
    s.connect()
    s.grab()
    info = s.info()
    assert info["grabs"] == 4 and info["failures"] == 2 and info["connected"]


# --- scene -------------------------------------------------------------------------------------------

def test_scene_swaps_parts_and_helpers():
    scene = SimulatedScene()
    scene.set_table(top_z=0.8)
    a = trimesh.creation.box((0.1, 0.1, 0.1))
    scene.set_part(a, pose=scene.resting_pose(a, table_top_z=0.8, xy=(0.5, 0.0)))
    b = scene.bounds("part")
    np.testing.assert_allclose(b, [[0.45, -0.05, 0.8], [0.55, 0.05, 0.9]], atol=1e-9)
    pose = default_viewpoint(scene, 0.75)
    np.testing.assert_allclose(pose[:3, 3] + 0.75 * pose[:3, 2], b.mean(axis=0), atol=1e-9)
    s = make_sensor({"type": "motioncam", "scene": scene, "resolution": [80, 60]})
    with s:
        n1 = (s.grab(pose).meta["labels"] == scene.label_of("part")).sum()
        scene.set_part(trimesh.creation.box((0.2, 0.2, 0.1)), pose=scene.resting_pose(
            trimesh.creation.box((0.2, 0.2, 0.1)), table_top_z=0.8, xy=(0.5, 0.0)))
        n2 = (s.grab(pose).meta["labels"] == scene.label_of("part")).sum()
    assert n2 > 2 * n1 > 0
    with pytest.raises(ValueError, match="no 'fixture'"):
        scene.get("fixture")
    with pytest.raises(FileNotFoundError):
        scene.set_part("/nonexistent/part.stl")
    with pytest.raises(ValueError, match="triangle"):
        scene.set_part((np.zeros((3, 3)), np.zeros((0, 3), int)))


# --- CLI -----------------------------------------------------------------------------------------------

def test_cli_scan_writes_points_on_the_part(tmp_path, capsys):
    from cosarad_ros.cli.main import main
    from cosarad_ros.core.io import read_points

    out = tmp_path / "scan.ply"
    png = tmp_path / "scan.png"
    rc = main(["scan", BEARING, "--scale", "0.001", "--out", str(out), "--set", "resolution=[300,214]",
               "--set", "noise_sigma=0", "--preview", str(png)])
    assert rc == 0 and png.stat().st_size > 1000
    pts = read_points(out)
    mesh = trimesh.load(BEARING)
    mesh.apply_scale(0.001)
    assert len(pts) > 300
    assert _mesh_distance(mesh.vertices, mesh.faces, pts).max() < 2e-5   # part frame
    out2 = tmp_path / "scan_sensor.xyz"
    assert main(["scan", BEARING, "--scale", "0.001", "--sensor", "ruler", "--frame", "sensor",
                 "--set", "columns=128", "--out", str(out2)]) == 0
    z = read_points(out2)[:, 2]
    assert 0.55 < z.min() and z.max() < 0.65                              # optical z ~ working distance
    assert main(["scan", BEARING, "--out", str(tmp_path / "x.ply"), "--set", "bogus=1"]) == 2
    assert "does not accept 'bogus'" in capsys.readouterr().err
    assert main(["scan", str(tmp_path / "missing.stl"), "--out", str(out)]) == 2
