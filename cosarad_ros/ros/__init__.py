"""ROS 2 layer: thin rclpy nodes over :mod:`cosarad_ros.core`.

Modules here may import rclpy and message packages; the core may not.
"""
