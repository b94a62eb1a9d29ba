"""The ``cosarad`` command-line tool. See :mod:`cosarad_ros.cli.main`."""
