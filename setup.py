"""pip install of the pure-Python core library and the ``cosarad`` CLI (no ROS needed).

The ROS package (nodes, interfaces, launch files) is built with colcon from CMakeLists.txt;
see README.md.
"""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent


def _requirements() -> list[str]:
    reqs = []
    for line in (here / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith(("pytest", "rosbags", "ruff")):   # test-only
            reqs.append(line)
    return reqs


def _version() -> str:
    ns: dict = {}
    exec((here / "cosarad_ros" / "_version.py").read_text(), ns)
    return ns["__version__"]


setup(
    name="cosarad_ros",
    version=_version(),
    description="Robotic 3D inspection: COSARAD anomaly detection, registration, CAD classification",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["cosarad_ros", "cosarad_ros.*"]),
    package_data={"cosarad_ros": ["models/**/*", "data/**/*"]},
    install_requires=_requirements(),
    entry_points={"console_scripts": ["cosarad = cosarad_ros.cli.main:main"]},
)
