"""cosarad_ros: robotic 3D inspection of manufactured parts.

Layers:

* :mod:`cosarad_ros.core` -- pure Python (numpy / Open3D / torch), no ROS import.
* :mod:`cosarad_ros.cli` -- the ``cosarad`` command-line tool, built on the core.
* :mod:`cosarad_ros.ros` -- thin rclpy nodes over the core (needs ROS 2).

The generated interfaces (``cosarad_ros.msg``, ``.srv``, ``.action``) live in the colcon
install tree, in a folder of the same package name; ``extend_path`` lets a source checkout
and that install tree form one package.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)  # noqa: F821 (set by the import system)
from cosarad_ros._version import __version__  # noqa: E402,F401 (source checkout only)
