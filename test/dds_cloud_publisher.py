"""Helper process for test_dds_transport: publishes one big seeded cloud (transient local) until killed."""
import sys
import time

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2

from cosarad_ros.ros.conversions import xyz_to_pointcloud2
from cosarad_ros.ros.node_utils import LATCHED_QOS


def make_cloud(n: int, seed: int):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    scores = rng.random(n).astype(np.float32)
    return pts, rgb, scores


def main():
    n, seed, topic = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rclpy.init()
    node = Node("dds_cloud_publisher")
    pub = node.create_publisher(PointCloud2, topic, LATCHED_QOS)
    pts, rgb, scores = make_cloud(n, seed)
    pub.publish(xyz_to_pointcloud2(pts, frame_id="sensor_optical_frame", rgb=rgb, scores=scores, stamp=1.5))
    print("published", flush=True)
    try:
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.1)
            time.sleep(0.01)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
