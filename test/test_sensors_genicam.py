"""GenICam backend: the range conversion on synthetic buffers, and the real harvesters path
against the simulated GenTL producer ``viky.cti`` shipped in the genicam wheel.
"""
import os

import numpy as np
import pytest

from cosarad_ros.core.sensors import SensorNotFoundError, SensorTimeoutError, make_sensor
from cosarad_ros.core.sensors.genicam import Scan3dCalibration, find_producers, range_to_points

genicam = pytest.importorskip("genicam")
VIKY = os.path.join(os.path.dirname(genicam.__file__), "viky.cti")


# --- conversion --------------------------------------------------------------------------------

def test_coord3d_c16_rectified_grid_scale_offset_and_invalid():
    w, h = 4, 3
    raw = np.arange(w * h, dtype=np.uint16) * 100
    raw[5] = 0          # laser profiler "no data"
    raw[7] = 65535      # device invalid value
    calib = Scan3dCalibration(scale=(0.5, 2.0, 0.01), offset=(-1.0, 10.0, 200.0), unit=1e-3,
                              output_mode="RectifiedC_Linescan", invalid_value=65535, zero_is_invalid=True)
    pts, idx = range_to_points({"Coord3D_C16": raw}, w, h, calib)
    keep = [i for i in range(w * h) if i not in (0, 5, 7)]   # raw[0] == 0 too
    assert idx.tolist() == keep
    rows, cols = np.divmod(np.array(keep), w)
    expected = np.stack([cols * 0.5 - 1.0, rows * 2.0 + 10.0, raw[keep] * 0.01 + 200.0], 1) * 1e-3
    np.testing.assert_allclose(pts, expected, rtol=1e-6)


def test_coord3d_abc32f_packed_planar_and_projective():
    rng = np.random.default_rng(0)
    w, h = 5, 4
    xyz = rng.uniform(100, 900, size=(w * h, 3)).astype(np.float32)
    xyz[3] = np.nan
    calib = Scan3dCalibration(unit=1e-3)
    packed, idx = range_to_points({"Coord3D_ABC32f": xyz.reshape(-1)}, w, h, calib)
    planar, idx2 = range_to_points({"Coord3D_ABC32f_Planar": xyz.T.reshape(-1)}, w, h, calib)
    ok = np.isfinite(xyz).all(axis=1)
    np.testing.assert_allclose(packed, xyz[ok] * 1e-3, rtol=1e-6)
    np.testing.assert_array_equal(packed, planar)
    assert idx.tolist() == idx2.tolist() == np.flatnonzero(ok).tolist()
    # projective C-only image: X = (u - cu) Z / f
    z = np.full(w * h, 500.0, dtype=np.float32)
    pc = Scan3dCalibration(unit=1e-3, output_mode="CalibratedC", focal_length=250.0, principal_point=(2.0, 1.5))
    pts, idx = range_to_points({"Coord3D_C32f": z}, w, h, pc)
    rows, cols = np.divmod(idx, w)
    np.testing.assert_allclose(pts[:, 0], (cols - 2.0) * 0.5 / 250.0, atol=1e-7)
    np.testing.assert_allclose(pts[:, 1], (rows - 1.5) * 0.5 / 250.0, atol=1e-7)
    with pytest.raises(ValueError, match="focal_length"):
        range_to_points({"Coord3D_C32f": z}, w, h, Scan3dCalibration(output_mode="CalibratedC"))
    with pytest.raises(ValueError, match="expected 20 values"):
        range_to_points({"Coord3D_C16": np.zeros(7, np.uint16)}, w, h)
    with pytest.raises(ValueError, match="unsupported range pixel format"):
        range_to_points({"Mono8": np.zeros(20, np.uint8)}, w, h)
    with pytest.raises(ValueError, match="no C"):
        range_to_points({"Coord3D_A32f": np.zeros(20, np.float32)}, w, h)


# --- real harvesters + GenTL producer ----------------------------------------------------------------

@pytest.mark.skipif(not os.path.isfile(VIKY), reason="viky.cti not shipped with this genicam wheel")
def test_viky_range_frame_to_metres_and_device_loss():
    s = make_sensor({"type": "genicam", "cti_path": VIKY, "device": "VikyTL_DEV_green", "timeout": 1.0})
    s.connect()
    try:
        assert s.device_info["serial_number"] == "1"
        assert s.calibration.unit == pytest.approx(1e-3)          # Scan3dDistanceUnit = Millimeter
        pose = np.eye(4)
        pose[2, 3] = 1.0
        f = s.grab(pose)
        w, h = f.meta["width"], f.meta["height"]
        assert (w, h) == (400, 400) and len(f) == w * h
        assert set(f.meta["pixel_formats"]) == {"Coord3D_A32f", "Coord3D_B32f", "Coord3D_C32f"}
        # viky's A and B planes are the pixel column and row in millimetres
        rows, cols = np.divmod(f.meta["pixel_index"], w)
        np.testing.assert_allclose(f.points[:, 0], cols * 1e-3, atol=1e-7)
        np.testing.assert_allclose(f.points[:, 1], rows * 1e-3, atol=1e-7)
        assert 0.0 <= f.points[:, 2].min() and f.points[:, 2].max() < 0.1   # C: the ball's height in mm
        assert (f.points[:, 2] > 0).sum() > 100
        assert f.intensity is not None and f.intensity.shape == (len(f),)
        np.testing.assert_array_equal(f.sensor_pose, pose)
        assert len(s.grab()) == w * h
        # the device stops streaming under us: a timeout, the sensor is closed, reconnect works
        s._ia.stop()
        with pytest.raises(SensorTimeoutError, match="did not deliver"):
            s.grab()
        assert not s.is_connected
        s.connect()
        assert len(s.grab()) == w * h
    finally:
        s.close()


@pytest.mark.skipif(not os.path.isfile(VIKY), reason="viky.cti not shipped with this genicam wheel")
def test_genicam_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(SensorNotFoundError, match="no GenTL producer"):
        make_sensor({"type": "genicam", "cti_path": str(tmp_path / "missing.cti")}).connect()
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    with pytest.raises(SensorNotFoundError, match="GENICAM_GENTL64_PATH"):
        find_producers(None)
    monkeypatch.setenv("GENICAM_GENTL64_PATH", os.path.dirname(VIKY))
    assert VIKY in find_producers(None)
    with pytest.raises(SensorNotFoundError, match="VikyTL_DEV_red"):
        make_sensor({"type": "genicam", "cti_path": VIKY, "device": "no-such-camera"}).connect()
    with pytest.raises(SensorNotFoundError, match="out of range"):
        make_sensor({"type": "genicam", "cti_path": VIKY, "device": 7}).connect()
    s = make_sensor({"type": "genicam", "cti_path": VIKY, "range_component": "Disparity"})
    with pytest.raises(Exception, match="no 'Disparity' component"):
        s.connect()
    assert not s.is_connected
    with pytest.raises(ValueError, match="Feature=Value"):
        make_sensor({"type": "genicam", "settings": ["ExposureTime"]})
