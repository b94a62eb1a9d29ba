"""Core library: pure Python algorithms with no ROS dependency.

Nothing under this package may import ``rclpy`` or any ROS message package; it must be usable
from a notebook, the ``cosarad`` CLI and the nodes alike.
"""
