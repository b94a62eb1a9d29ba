"""Round-trip and malformed-input tests of cosarad_ros.ros.conversions (real rclpy messages)."""
import re

import numpy as np
import pytest

pytest.importorskip("rclpy")
from geometry_msgs.msg import Pose, Transform  # noqa: E402
from sensor_msgs.msg import PointField  # noqa: E402

from cosarad_ros.core.geometry import random_rotation  # noqa: E402
from cosarad_ros.ros import conversions as cv  # noqa: E402

ALL_TYPES = ["i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"]


def _random_struct(shape, rng, order="<"):
    dt = np.dtype([("x", order + "f4"), ("y", order + "f4"), ("z", order + "f4")]
                  + [(f"f_{t}", order + t) for t in ALL_TYPES]
                  + [("vec", order + "f4", (3,))])
    arr = np.zeros(shape, dtype=dt)
    for name in dt.names:
        base = dt.fields[name][0].base
        if base.kind == "f":
            arr[name] = rng.normal(size=arr[name].shape)
        else:
            info = np.iinfo(base)
            arr[name] = rng.integers(info.min, info.max, size=arr[name].shape, endpoint=True,
                                     dtype=base.newbyteorder("="))
    return arr


@pytest.mark.parametrize("shape", [(1000,), (20, 30), (0,)])
@pytest.mark.parametrize("order", ["<", ">"])
def test_every_field_kind_round_trips(shape, order):
    rng = np.random.default_rng(0)
    arr = _random_struct(shape, rng, order)
    msg = cv.array_to_pointcloud2(arr, frame_id="sensor_optical_frame", stamp=12.5)
    assert msg.is_bigendian == (order == ">")
    assert msg.header.frame_id == "sensor_optical_frame"
    assert cv.stamp_to_seconds(msg.header.stamp) == 12.5
    assert len(msg.data) == msg.point_step * msg.width * msg.height
    back = cv.pointcloud2_to_array(msg)
    assert back.shape == (shape if len(shape) == 2 else (shape[0],))
    for name in arr.dtype.names:
        np.testing.assert_array_equal(back[name], arr[name])
    # the field table says what the data holds
    dts = {f.name: f.datatype for f in msg.fields}
    assert dts["f_u1"] == PointField.UINT8 and dts["f_f8"] == PointField.FLOAT64
    assert [f.count for f in msg.fields if f.name == "vec"] == [3]


def test_read_is_zero_copy_and_read_only():
    pts = np.random.default_rng(1).normal(size=(500, 3)).astype(np.float32)
    msg = cv.xyz_to_pointcloud2(pts, frame_id="part")
    raw = np.frombuffer(msg.data, np.uint8)
    arr = cv.pointcloud2_to_array(msg)
    xyz = cv.pointcloud2_to_xyz(msg, skip_nans=False)
    assert np.shares_memory(arr, raw) and np.shares_memory(xyz, raw)
    assert not xyz.flags.writeable
    np.testing.assert_array_equal(xyz, pts)


def test_xyz_rgb_normals_scores_round_trip():
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(300, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(300, 3), dtype=np.uint8)
    nrm = rng.normal(size=(300, 3)).astype(np.float32)
    score = rng.random(300).astype(np.float32)
    msg = cv.xyz_to_pointcloud2(pts, frame_id="part", rgb=rgb, normals=nrm, scores=score)
    assert cv.pointcloud2_fields(msg) == ("x", "y", "z", "rgb", "normal_x", "normal_y", "normal_z", "anomaly_score")
    arr = cv.pointcloud2_to_array(msg)
    np.testing.assert_array_equal(cv.unpack_rgb(arr["rgb"]), rgb)
    np.testing.assert_array_equal(arr["anomaly_score"], score)
    np.testing.assert_array_equal(np.stack([arr["normal_x"], arr["normal_y"], arr["normal_z"]], -1), nrm)
    # packed rgb follows the 0x00RRGGBB convention RViz's RGB8 transformer reads
    assert arr["rgb"][:1].view(np.uint32)[0] == (int(rgb[0, 0]) << 16) | (int(rgb[0, 1]) << 8) | int(rgb[0, 2])


def test_organised_cloud_with_nan_points():
    pts = np.random.default_rng(3).normal(size=(4, 5, 3)).astype(np.float32)
    pts[1, 2] = np.nan
    pts[3, 0] = np.nan
    msg = cv.xyz_to_pointcloud2(pts, frame_id="sensor_optical_frame")
    assert (msg.height, msg.width) == (4, 5) and not msg.is_dense
    assert cv.pointcloud2_to_array(msg).shape == (4, 5)
    kept = cv.pointcloud2_to_xyz(msg)
    assert kept.shape == (18, 3) and np.isfinite(kept).all()
    allpts = cv.pointcloud2_to_xyz(msg, skip_nans=False)
    assert allpts.shape == (20, 3) and np.isnan(allpts).any(axis=1).sum() == 2


def test_row_padding_is_skipped_and_non_float_xyz_is_converted():
    # a producer that pads rows and stores xyz as float64 with an extra byte between points
    dt = np.dtype({"names": ["x", "y", "z", "i"], "formats": ["<f8", "<f8", "<f8", "u1"],
                   "offsets": [0, 8, 16, 24], "itemsize": 32})
    arr = np.zeros((2, 3), dtype=dt)
    arr["x"] = np.arange(6).reshape(2, 3)
    msg = cv.array_to_pointcloud2(arr, frame_id="f")
    padded = bytearray()
    for r in range(2):
        padded += bytes(msg.data[r * 96:(r + 1) * 96]) + b"\xff" * 8
    msg.row_step = 104
    msg.data = bytes(padded)
    xyz = cv.pointcloud2_to_xyz(msg)
    assert xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz[:, 0], np.arange(6))


def _cloud(**kw):
    msg = cv.xyz_to_pointcloud2(np.zeros((10, 3), np.float32), frame_id="f")
    for k, v in kw.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize("mutate, message", [
    (dict(width=11, row_step=132), "expected row_step * height = 132 * 1"),
    (dict(row_step=12), "row_step 12 < point_step"),
    (dict(point_step=8), "does not fit in point_step"),
    (dict(fields=[PointField(name="x", offset=0, datatype=7, count=1),
                  PointField(name="y", offset=4, datatype=7, count=1),
                  PointField(name="z", offset=8, datatype=99, count=1)]), "field 'z' has unknown datatype 99"),
    (dict(fields=[PointField(name="x", offset=0, datatype=7, count=1)]), "no field(s) y, z"),
    (dict(fields=[]), "no field(s) x, y, z (fields: none)"),
])
def test_malformed_messages_raise_clear_errors(mutate, message):
    msg = _cloud(**mutate)
    with pytest.raises(ValueError, match=re.escape(message)):
        cv.pointcloud2_to_xyz(msg)


def test_structured_reader_refuses_a_cloud_without_fields():
    with pytest.raises(ValueError, match="has no fields"):
        cv.pointcloud2_to_array(_cloud(fields=[]))


def test_data_length_mismatch_names_the_numbers():
    msg = _cloud()
    msg.data = bytes(msg.data)[:-4]
    with pytest.raises(ValueError, match=r"has 116 bytes, expected row_step \* height = 120"):
        cv.pointcloud2_to_array(msg)


def test_xyz_writer_refuses_bad_input():
    with pytest.raises(ValueError, match="shape"):
        cv.xyz_to_pointcloud2(np.zeros((5, 2)), frame_id="f")
    with pytest.raises(ValueError, match="frame_id"):
        cv.xyz_to_pointcloud2(np.zeros((5, 3)), frame_id="")
    with pytest.raises(ValueError, match="scores has 4 entries, expected 5"):
        cv.xyz_to_pointcloud2(np.zeros((5, 3)), frame_id="f", scores=np.zeros(4))


def test_transform_and_pose_round_trip():
    rng = np.random.default_rng(4)
    for _ in range(50):
        T = np.eye(4)
        T[:3, :3] = random_rotation(rng)
        T[:3, 3] = rng.normal(size=3)
        msg = cv.matrix_to_transform(T)
        assert isinstance(msg, Transform)
        np.testing.assert_allclose(cv.transform_to_matrix(msg), T, atol=1e-12)
        pose = cv.matrix_to_pose(T)
        assert isinstance(pose, Pose)
        np.testing.assert_allclose(cv.pose_to_matrix(pose), T, atol=1e-12)


def test_stamp_round_trip_and_validation():
    st = cv.seconds_to_stamp(1700000000.123456789)
    assert st.sec == 1700000000 and abs(st.nanosec - 123456716) < 1000
    assert cv.seconds_to_stamp(1.9999999999).nanosec < 1_000_000_000
    with pytest.raises(ValueError):
        cv.seconds_to_stamp(float("nan"))
