"""MCAP point-cloud IO and the replay backend (files and recordings)."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh

from cosarad_ros.core.geometry import pose_to_matrix
from cosarad_ros.core.io import write_points
from cosarad_ros.core.sensors import SensorFrame, SensorNotFoundError, SensorTimeoutError, make_sensor
from cosarad_ros.core.sensors.mcap_io import (
    mcap_topics,
    pointcloud2_dict_to_arrays,
    read_pointcloud_mcap,
    write_pointcloud_mcap,
)


def _frames(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(50, 200))
        pts = rng.normal(size=(k, 3)) * 0.05 + [0, 0, 0.7]
        nrm = rng.normal(size=(k, 3))
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        pose = pose_to_matrix(rng.normal(size=3), rng.normal(size=4))
        out.append(SensorFrame(points=pts, stamp=1_700_000_000.0 + 0.25 * i + 1e-3 * rng.random(), sensor_pose=pose,
                               normals=nrm, intensity=rng.random(k)))
    return out


def _same(a: SensorFrame, b: SensorFrame, pose=True):
    assert np.array_equal(a.points, b.points)
    assert abs(a.stamp - b.stamp) < 1e-6 and a.frame_id == b.frame_id
    if a.normals is not None:
        assert np.array_equal(a.normals, b.normals)
    if a.intensity is not None:
        assert np.array_equal(a.intensity, b.intensity)
    if pose:
        np.testing.assert_allclose(b.sensor_pose, a.sensor_pose, atol=1e-12)


def test_mcap_round_trip_gives_back_the_same_clouds(tmp_path):
    frames = _frames(4)
    path = tmp_path / "scan.mcap"
    assert write_pointcloud_mcap(path, frames) == 4
    topics = {t.topic: t for t in mcap_topics(path)}
    assert topics["/scanner_node/points"].schema == "sensor_msgs/msg/PointCloud2"
    assert topics["/scanner_node/points"].message_count == 4
    assert topics["/scanner_node/sensor_pose"].schema == "geometry_msgs/msg/PoseStamped"
    back = read_pointcloud_mcap(path)
    assert len(back) == 4
    for a, b in zip(frames, back):
        _same(a, b)
        assert b.meta["pose_frame_id"] == "world"
    # without poses
    write_pointcloud_mcap(tmp_path / "nopose.mcap", frames, pose_topic=None, compression="none")
    back = read_pointcloud_mcap(tmp_path / "nopose.mcap")
    assert [b.sensor_pose for b in back] == [None] * 4
    for a, b in zip(frames, back):
        _same(a, b, pose=False)


def test_mcap_messages_are_real_ros_cdr(tmp_path):
    """What we encode without ROS deserialises with rclpy into sensor_msgs/PointCloud2."""
    rclpy_ser = pytest.importorskip("rclpy.serialization")
    from mcap.reader import make_reader
    from sensor_msgs.msg import PointCloud2

    from cosarad_ros.ros.conversions import pointcloud2_to_xyz, stamp_to_seconds

    frames = _frames(2, seed=1)
    path = tmp_path / "cdr.mcap"
    write_pointcloud_mcap(path, frames, topic="/cloud")
    with open(path, "rb") as fh:
        msgs = [m for _, ch, m in make_reader(fh).iter_messages(topics=["/cloud"])]
    assert len(msgs) == 2
    for f, m in zip(frames, msgs):
        msg = rclpy_ser.deserialize_message(m.data, PointCloud2)
        assert msg.header.frame_id == f.frame_id
        assert abs(stamp_to_seconds(msg.header.stamp) - f.stamp) < 1e-6
        np.testing.assert_array_equal(pointcloud2_to_xyz(msg), f.points)
        assert [fl.name for fl in msg.fields] == ["x", "y", "z", "intensity", "normal_x", "normal_y", "normal_z"]


def test_pointcloud2_decoding_handles_padding_float64_and_big_endian():
    pts = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, np.nan], [7.0, 8.0, 9.0]])
    dt = np.dtype({"names": ["x", "y", "z"], "formats": [">f8"] * 3, "offsets": [0, 8, 16], "itemsize": 32})
    arr = np.zeros(3, dtype=dt)
    arr["x"], arr["y"], arr["z"] = pts.T
    row = arr.tobytes() + b"\0" * 8            # row padding
    msg = SimpleNamespace(height=1, width=3, point_step=32, row_step=104, is_bigendian=True,
                          fields=[SimpleNamespace(name=c, offset=8 * i, datatype=8, count=1)
                                  for i, c in enumerate("xyz")],
                          data=row)
    cols = pointcloud2_dict_to_arrays(msg)
    np.testing.assert_array_equal(cols["x"], pts[:, 0])
    assert np.isnan(cols["z"][1])
    msg.data = row[:-1]
    with pytest.raises(ValueError, match="bytes"):
        pointcloud2_dict_to_arrays(msg)
    msg.data, msg.fields[0].datatype = row, 42
    with pytest.raises(ValueError, match="unknown datatype"):
        pointcloud2_dict_to_arrays(msg)


def test_replay_of_mcap_serves_the_recorded_clouds_and_loops(tmp_path):
    frames = _frames(3, seed=2)
    path = tmp_path / "rec.mcap"
    write_pointcloud_mcap(path, frames)
    r = make_sensor({"type": "replay", "path": str(path)})
    with r:
        got = [r.grab() for _ in range(4)]
    for a, b in zip(frames, got[:3]):
        _same(a, b)
    _same(frames[0], got[3])
    assert got[3].meta["pass"] == 1
    # no loop: the end is a SensorTimeoutError; restamp gives the grab time
    r = make_sensor({"type": "replay", "path": str(path), "loop": False, "restamp": True, "frame_id": "cam"})
    r.connect()
    g = [r.grab() for _ in range(3)]
    assert all(x.frame_id == "cam" and x.stamp > frames[-1].stamp for x in g)
    with pytest.raises(SensorTimeoutError, match="finished after 3"):
        r.grab()
    assert not r.is_connected


def test_replay_of_files_and_errors(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(100, 3))
    write_points(tmp_path / "a.pcd", a)
    np.savetxt(tmp_path / "b.xyz", a[:40])
    trimesh.creation.box((0.1, 0.1, 0.1)).export(tmp_path / "c.stl")
    (tmp_path / "notes.md").write_text("not a cloud")
    T = pose_to_matrix([0, 0, 1], [0, 0, 0, 1])
    r = make_sensor({"type": "replay", "path": str(tmp_path), "mesh_points": 300, "transform": T.tolist()})
    with r:
        f1, f2, f3 = r.grab(), r.grab(np.eye(4)), r.grab()
    np.testing.assert_allclose(f1.points, (a + [0, 0, 1]).astype(np.float32), atol=1e-6)
    assert len(f2) == 40 and np.array_equal(f2.sensor_pose, np.eye(4)) and f1.sensor_pose is None
    assert len(f3) == 300 and f3.normals is not None
    assert np.abs(f3.points[:, :2]).max() <= 0.05 + 1e-6
    with pytest.raises(SensorNotFoundError, match="nothing to replay"):
        make_sensor({"type": "replay", "path": str(tmp_path / "nothing*.pcd")}).connect()
    bad = tmp_path / "bad" / "broken.mcap"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89MCAP0\r\n garbage")
    with pytest.raises(ValueError, match="MCAP"):
        read_pointcloud_mcap(bad)
    r = make_sensor({"type": "replay", "path": str(bad)})
    r.connect()
    with pytest.raises(SensorTimeoutError, match="replay"):
        r.grab()
    with pytest.raises(FileNotFoundError):
        read_pointcloud_mcap(tmp_path / "missing.mcap")


def test_mcap_topic_selection(tmp_path):
    frames = _frames(2, seed=4)
    path = tmp_path / "two.mcap"
    from mcap_ros2.writer import Writer

    from cosarad_ros.core.sensors.mcap_io import POINTCLOUD2_MSGDEF, _frame_to_pc2

    with open(path, "wb") as fh:
        w = Writer(fh)
        schema = w.register_msgdef("sensor_msgs/msg/PointCloud2", POINTCLOUD2_MSGDEF)
        for i, f in enumerate(frames):
            w.write_message(f"/cam{i}/points", schema, _frame_to_pc2(f), log_time=int(f.stamp * 1e9))
        w.finish()
    with pytest.raises(ValueError, match="several"):
        read_pointcloud_mcap(path)
    got = read_pointcloud_mcap(path, topic="/cam1/points")
    assert len(got) == 1
    _same(frames[1], got[0], pose=False)
    with pytest.raises(ValueError, match="no topic"):
        read_pointcloud_mcap(path, topic="/nope")
    # a rosbag2 folder
    bag = tmp_path / "bag"
    bag.mkdir()
    write_pointcloud_mcap(bag / "bag_0.mcap", frames)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    r = make_sensor({"type": "replay", "path": str(bag)})
    with r:
        _same(frames[0], r.grab())
    assert os.path.isdir(bag)
