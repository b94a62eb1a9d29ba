"""The ROS package as an integrator installs and runs it: package.xml declares every ROS package and
Python library the code imports under its rosdistro key (so `rosdep install --from-paths src` has
nothing to guess), versions agree, `colcon test` runs the test suite, and after
`source scripts/env.sh` the CLI runs from any folder and `cosarad` is on the PATH.
"""
import ast
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / ".ws" / "install" / "cosarad_ros"

# Python module -> rosdep key (rosdistro: the ROS package providing it, or rosdep/python.yaml).
ROSDEP_KEY = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "ament_index_python": "ament_index_python",
    "launch": "launch", "launch_ros": "launch_ros", "xacro": "xacro",
    "tf2_ros": "tf2_ros_py",                 # the Python module of tf2_ros ships in tf2_ros_py
    "moveit": "moveit_py", "pinocchio": "pinocchio", "coal": "pinocchio",   # pinocchio brings coal
    "numpy": "python3-numpy", "scipy": "python3-scipy", "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib", "mpl_toolkits": "python3-matplotlib", "tqdm": "python3-tqdm",
    "trimesh": "python3-trimesh-pip", "open3d": "python3-open3d-pip", "torch": "python3-torch",
    "mcap": "mcap-ros2-support", "mcap_ros2": "mcap-ros2-support", "lxml": "python3-lxml",
}
# No rosdep key: installed with pip from requirements.txt (named there) or optional.
PIP_ONLY = {"manifold3d": "manifold3d", "safetensors": "safetensors", "harvesters": "harvesters",
            "genicam": "genicam", "yourdfpy": "yourdfpy"}
OPTIONAL = {"gmsh"}                          # STEP / IGES import when present
WRONG_KEYS = {"python3-trimesh", "tf2_ros", "python3-open3d", "python3-pytorch-pip"}


def _package_xml():
    root = ET.parse(ROOT / "package.xml").getroot()
    deps = {}
    for tag in ("depend", "exec_depend", "build_depend", "buildtool_depend", "test_depend", "build_export_depend"):
        for el in root.findall(tag):
            deps.setdefault(el.text.strip(), set()).add(tag)
    return root, deps


def _imported_modules() -> dict[str, set[str]]:
    files = [*ROOT.glob("cosarad_ros/**/*.py"), *ROOT.glob("launch/*.py"), *(ROOT / "bin").iterdir()]
    mods: dict[str, set[str]] = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                mods.setdefault(n.split(".")[0], set()).add(str(f.relative_to(ROOT)))
    return mods


def _is_interface_package(mod: str) -> bool:
    return mod.endswith(("_msgs", "_srvs", "_interfaces"))


def test_package_xml_declares_every_ros_package_and_library_the_code_imports():
    _, deps = _package_xml()
    run_deps = {k for k, tags in deps.items() if tags & {"depend", "exec_depend"}}
    missing, unknown = [], []
    for mod, where in sorted(_imported_modules().items()):
        if mod in sys.stdlib_module_names or mod == "cosarad_ros":
            continue
        key = mod if _is_interface_package(mod) else ROSDEP_KEY.get(mod)
        if key is not None:
            if key not in run_deps:
                missing.append(f"{key} (import {mod} in {sorted(where)[0]})")
        elif mod in PIP_ONLY or mod in OPTIONAL:
            continue
        else:
            unknown.append(f"{mod} ({sorted(where)[0]})")
    assert not missing, f"package.xml does not declare: {missing}"
    assert not unknown, f"imports with no rosdep key decided (add to ROSDEP_KEY / PIP_ONLY): {unknown}"


def test_every_pip_only_library_is_in_requirements():
    reqs = {re.split(r"[<>=\[ ]", line.split("#")[0].strip())[0].lower()
            for line in (ROOT / "requirements.txt").read_text().splitlines() if line.split("#")[0].strip()}
    assert {v.lower() for v in PIP_ONLY.values()} <= reqs, sorted({v.lower() for v in PIP_ONLY.values()} - reqs)
    assert "rosbags" in reqs


def test_rosdep_keys_are_rosdistro_keys_and_packages_found_by_xacro_are_declared():
    _, deps = _package_xml()
    assert not (set(deps) & WRONG_KEYS), f"not rosdep keys / wrong package: {set(deps) & WRONG_KEYS}"
    xacro_text = (ROOT / "urdf" / "cosarad_cell.urdf.xacro").read_text()
    found = set(re.findall(r"\$\(find ([\w-]+)\)", xacro_text))
    assert found == {"example-robot-data", "ur_description"}
    assert found <= set(deps)
    # what the build needs is a build dependency; what colcon test needs, a test dependency
    for pkg in ("ament_cmake", "ament_cmake_python", "rosidl_default_generators"):
        assert "buildtool_depend" in deps[pkg]
    assert "test_depend" in deps["ament_cmake_pytest"] and "test_depend" in deps["python3-pytest"]
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for pkg in re.findall(r"find_package\((\w+) REQUIRED\)", cmake):
        assert pkg in deps, f"CMakeLists finds {pkg}, package.xml does not declare it"


def test_versions_agree():
    root, _ = _package_xml()
    ns: dict = {}
    exec((ROOT / "cosarad_ros" / "_version.py").read_text(), ns)
    assert root.find("version").text.strip() == ns["__version__"]
    assert "version=_version()" in (ROOT / "setup.py").read_text()
    assert "entry_points={\"console_scripts\": [\"cosarad = cosarad_ros.cli.main:main\"]}" in \
        (ROOT / "setup.py").read_text()


@pytest.mark.skipif(not (INSTALL / "share" / "cosarad_ros" / "package.xml").is_file(),
                    reason="no colcon install (.ws); run scripts/setup_env.sh")
def test_cli_runs_from_any_folder_and_cosarad_is_on_the_path(tmp_path):
    """From a folder that is not the checkout, Python imports the colcon-installed package, whose
    ``__init__.py`` is rosidl's: the CLI must not need anything from it.
    """
    script = (f"source {ROOT}/scripts/env.sh && cd {tmp_path} && "
              "python -m cosarad_ros --help && cosarad --version && command -v cosarad && "
              f"{INSTALL}/lib/cosarad_ros/cell_demo --help")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "AMENT_PREFIX_PATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "usage: cosarad" in r.stdout and "plan-views" in r.stdout
    ns: dict = {}
    exec((ROOT / "cosarad_ros" / "_version.py").read_text(), ns)
    assert f"cosarad {ns['__version__']}" in r.stdout
    on_path = [line for line in r.stdout.splitlines() if line.endswith("/cosarad")]
    assert on_path and on_path[0].startswith(str(INSTALL / "bin")), r.stdout
    assert "--tell-type" in r.stdout                                   # the demo's own --help


@pytest.mark.skipif(shutil.which("ctest") is None
                    or not (ROOT / ".ws" / "build" / "cosarad_ros" / "CTestTestfile.cmake").is_file(),
                    reason="no colcon build tree with tests (scripts/setup_env.sh builds with BUILD_TESTING=ON)")
def test_colcon_test_runs_the_pytest_suite():
    r = subprocess.run(["ctest", "-N", "--test-dir", str(ROOT / ".ws" / "build" / "cosarad_ros")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.search(r"Test\s+#1: pytest", r.stdout), r.stdout
    assert "Total Tests: 1" in r.stdout
    cmd = (ROOT / ".ws" / "build" / "cosarad_ros" / "CTestTestfile.cmake").read_text()
    assert re.search(r'"-m" "pytest" "[^"]*cosarad_ros/test"', cmd), cmd   # python -m pytest <package>/test
