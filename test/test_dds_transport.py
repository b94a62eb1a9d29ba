"""A 1,000,000-point cloud published by one process arrives bit-exact in another, over real
DDS (rclpy + rmw_fastrtps).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy")
from sensor_msgs.msg import PointCloud2  # noqa: E402

from cosarad_ros.ros import conversions as cv  # noqa: E402
from cosarad_ros.ros.node_utils import LATCHED_QOS  # noqa: E402
from dds_cloud_publisher import make_cloud  # noqa: E402
from ros_utils import RosHarness  # noqa: E402


def _env_with_source():
    """The child imports cosarad_ros from this checkout, like the test process does."""
    env = os.environ.copy()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_million_point_cloud_crosses_processes_exactly():
    n, seed, topic = 1_000_000, 7, "/test/big_cloud"
    proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "dds_cloud_publisher.py"),
                             str(n), str(seed), topic], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env_with_source())
    try:
        with RosHarness() as ros:
            msg = ros.wait_for_message(PointCloud2, topic, LATCHED_QOS, timeout=120)
        assert proc.poll() is None, proc.stdout.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    pts, rgb, scores = make_cloud(n, seed)
    assert (msg.height, msg.width) == (1, n)
    assert msg.header.frame_id == "sensor_optical_frame"
    arr = cv.pointcloud2_to_array(msg)
    np.testing.assert_array_equal(cv.pointcloud2_to_xyz(msg, skip_nans=False), pts)
    np.testing.assert_array_equal(cv.unpack_rgb(arr["rgb"]), rgb)
    np.testing.assert_array_equal(arr["anomaly_score"], scores)
