"""The package version, in a module of its own: the colcon install's ``cosarad_ros/__init__.py``
is the one rosidl generates for the interfaces, so nothing may rely on names defined in
``cosarad_ros/__init__.py``. Keep it equal to ``<version>`` in package.xml.
"""
__version__ = "0.1.0"
