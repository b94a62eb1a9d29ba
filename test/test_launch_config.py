"""Launch files, executables and config YAML agree with the nodes.

* every executable named in a launch file exists in ``bin/`` and in the colcon install;
* every parameter in ``config/*.yaml`` is declared by its node (the node module's ``PARAMS``);
* each node's defaults in its YAML pass the node's own validation;
* every launch file offers ``namespace`` and ``use_sim_time`` (per-node ones ``node_name`` too),
  declares every argument it reads, starts every node in the namespace with ``use_sim_time``;
  the scanner is a launch_ros ``LifecycleNode`` that launch configures and activates;
* what the launch files compute (:mod:`cosarad_ros.ros.launch_params`): robot_state_publisher's
  URDF is the very cell the planner builds from the same parameters, for every cell parameter;
  ``~`` in ``cad_library`` reaches no node unexpanded;
* launch files are loaded by ``launch`` where it is installed (skipped with the reason here).
"""
import ast
import importlib
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
NODES = sorted(p.name for p in (ROOT / "bin").iterdir() if p.name.endswith(("_node", "_manager")))


def _launch_executables(path: Path, package: str = "cosarad_ros") -> set[str]:
    """Executables of ``package`` started by a launch file (``Node(package=..., executable=...)``)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            kws = {kw.arg: kw.value for kw in node.keywords if isinstance(kw.value, ast.Constant)}
            if "executable" in kws and kws.get("package") is not None and kws["package"].value == package:
                found.add(kws["executable"].value)
    return found


def test_there_is_a_launch_file_per_node_and_the_cell_launch():
    names = {p.name for p in LAUNCH_FILES}
    assert "inspection.launch.py" in names
    launched = set().union(*(_launch_executables(p) for p in LAUNCH_FILES))
    assert set(NODES) <= launched, f"nodes never launched: {set(NODES) - launched}"


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launched_executable_exists(launch_file):
    install = ROOT / ".ws" / "install" / "cosarad_ros" / "lib" / "cosarad_ros"
    for exe in _launch_executables(launch_file):
        assert (ROOT / "bin" / exe).is_file(), f"{launch_file.name}: no bin/{exe}"
        assert os.access(ROOT / "bin" / exe, os.X_OK), f"bin/{exe} is not executable"
        if install.is_dir():
            assert (install / exe).exists(), f"{exe} not installed by colcon under lib/cosarad_ros"


@pytest.mark.parametrize("node", NODES)
def test_every_node_module_has_main_and_params(node):
    mod = importlib.import_module(f"cosarad_ros.ros.{node}")
    assert callable(getattr(mod, "main", None)), f"{node} has no main()"
    assert getattr(mod, "PARAMS", None), f"{node} has no PARAMS"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parameter_is_declared_and_valid(config):
    from cosarad_ros.ros.launch_params import node_parameters

    doc = yaml.safe_load(config.read_text())
    assert isinstance(doc, dict) and doc, f"{config.name} is empty"
    for node_name in doc:
        node_parameters(node_name, str(config))     # raises naming an undeclared or invalid parameter


def _calls(tree, name):
    return [c for c in ast.walk(tree) if isinstance(c, ast.Call) and
            (getattr(c.func, "id", None) == name or getattr(c.func, "attr", None) == name)]


def _declared(tree) -> set[str]:
    return {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_arguments_namespace_and_sim_time(launch_file):
    tree = ast.parse(launch_file.read_text())
    declared = _declared(tree)
    assert {"namespace", "use_sim_time"} <= declared
    if launch_file.name not in ("inspection.launch.py", "viewpoint_planner.launch.py"):
        assert {"node_name", "params_file"} <= declared            # several instances side by side
    used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")
            if isinstance(c.args[0], ast.Constant)}
    for fn in ast.walk(tree):   # get(name) helpers perform LaunchConfiguration(name)
        if isinstance(fn, ast.Call) and getattr(fn.func, "id", None) == "get" and fn.args and \
                isinstance(fn.args[0], ast.Constant):
            used.add(fn.args[0].value)
    tuples = [n for n in ast.walk(tree)
              if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PLANNER_ARGS"]
    for t in tuples:
        used |= set(ast.literal_eval(t.value))
    assert used <= declared, f"{launch_file.name} reads undeclared arguments {sorted(used - declared)}"
    for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        nodes = _calls(fn, "Node") + _calls(fn, "LifecycleNode")
        for call in nodes:
            kws = {k.arg for k in call.keywords}
            assert "namespace" in kws, f"{launch_file.name}: a node outside the namespace"
        if nodes:
            assert "use_sim_time" in ast.unparse(fn), f"{launch_file.name}: {fn.name} starts nodes without use_sim_time"


def test_scanner_is_a_lifecycle_node_that_launch_configures_and_activates():
    text = (ROOT / "launch" / "scanner.launch.py").read_text()
    tree = ast.parse(text)
    assert _calls(tree, "LifecycleNode") and not _calls(tree, "Node")
    transitions = {ast.unparse(k.value) for c in _calls(tree, "ChangeState") for k in c.keywords
                   if k.arg == "transition_id"}
    assert transitions == {"Transition.TRANSITION_CONFIGURE", "Transition.TRANSITION_ACTIVATE"}
    assert _calls(tree, "OnStateTransition")      # activate once launch saw it inactive
    assert '"autostart": False' in text           # the node never drives its own lifecycle under launch


def test_cell_launch_passes_namespace_and_sim_time_to_what_it_includes():
    tree = ast.parse((ROOT / "launch" / "inspection.launch.py").read_text())
    includes = [c for c in _calls(tree, "include")]
    assert {ast.literal_eval(c.args[0]) for c in includes} == {"scanner.launch.py", "viewpoint_planner.launch.py"}
    for c in includes:
        keys = {ast.literal_eval(k) for k in c.args[1].keys if k is not None}
        spread = [ast.unparse(v) for k, v in zip(c.args[1].keys, c.args[1].values) if k is None]
        assert spread == ["common"] or {"namespace", "use_sim_time"} <= keys
        for key in keys:
            assert key in _declared(ast.parse((ROOT / "launch" / ast.literal_eval(c.args[0])).read_text())), key
    assert "cad_library" in ast.unparse(tree) and "expand_path" in ast.unparse(tree)


def test_launch_parameters_apply_the_yaml_section_for_any_node_name(tmp_path):
    from cosarad_ros.ros.launch_params import launch_parameters, node_parameters

    f = tmp_path / "p.yaml"
    f.write_text("registration_node:\n  ros__parameters:\n    voxel_size: 0.003\n    attempts: 3\n")
    p = launch_parameters("registration_node", str(f), {"attempts": 4}, use_sim_time="true")
    assert p["voxel_size"] == 0.003 and p["attempts"] == 4 and p["use_sim_time"] is True
    assert p["global_method"] == "fpfh_ransac"                      # declared defaults fill the rest
    f.write_text("/**:\n  ros__parameters:\n    voxel_size: -1.0\n")
    with pytest.raises(ValueError, match="voxel_size"):
        node_parameters("registration_node", str(f))
    with pytest.raises(ValueError, match="voxle_size"):
        node_parameters("registration_node", None, {"voxle_size": 0.1})
    assert "sensor_pose" not in launch_parameters("scanner_node")   # an empty list cannot be typed in YAML


CELL_CHANGES = {   # planner parameter -> a value other than the default (each changes the cell)
    "ur_type": "ur5", "sensor_type": "motioncam3d_m", "turntable": True, "fixture_xyz": [0.5, 0.1, 0.15],
    "part_xyz": [0.01, -0.02, 0.0], "part_rpy": [0.0, 0.0, 0.3], "mount_xyz": [0.0, 0.01, 0.02],
    "mount_rpy": [0.0, -1.5, 0.1],
}


@pytest.mark.parametrize("param", sorted(CELL_CHANGES))
def test_robot_state_publisher_gets_the_planners_cell(param, tmp_path):
    """Each cell parameter set in the planner's params file reaches xacro (the URDF changes)."""
    pytest.importorskip("xacro")
    from cosarad_ros.core.planning.cell import example_robot_data_share
    from cosarad_ros.ros.launch_params import planner_launch

    if example_robot_data_share() is None:
        pytest.skip("example-robot-data not installed")
    default_urdf, _ = planner_launch({"params_file": str(ROOT / "config" / "viewpoint_planner_node.yaml")})
    f = tmp_path / "planner.yaml"
    doc = yaml.safe_load((ROOT / "config" / "viewpoint_planner_node.yaml").read_text())
    doc["viewpoint_planner_node"]["ros__parameters"][param] = CELL_CHANGES[param]
    f.write_text(yaml.safe_dump(doc))
    urdf, _ = planner_launch({"params_file": str(f)})
    assert urdf != default_urdf, f"{param} does not reach the cell description"


def test_launched_urdf_is_the_planners_own_cell(tmp_path):
    """robot_state_publisher's URDF equals the one the running planner built and publishes."""
    pytest.importorskip("rclpy")
    from std_msgs.msg import String

    from cosarad_ros.core.planning.cell import example_robot_data_share
    from cosarad_ros.ros.launch_params import launch_parameters, planner_launch
    from cosarad_ros.ros.node_utils import LATCHED_QOS
    from cosarad_ros.ros.viewpoint_planner_node import ViewpointPlannerNode
    from ros_utils import RosHarness

    if example_robot_data_share() is None:
        pytest.skip("example-robot-data not installed")
    f = tmp_path / "planner.yaml"
    doc = yaml.safe_load((ROOT / "config" / "viewpoint_planner_node.yaml").read_text())
    doc["viewpoint_planner_node"]["ros__parameters"].update(fixture_xyz=[0.5, -0.05, 0.14], part_rpy=[0.0, 0.0, 0.5],
                                                            mount_xyz=[0.0, 0.0, 0.02])
    f.write_text(yaml.safe_dump(doc))
    args = {"params_file": str(f), "turntable": "true", "cad_library": "~/cosarad_cad"}
    urdf, overrides = planner_launch(args)
    assert overrides["cad_library"] == os.path.expanduser("~/cosarad_cad")      # never "~/..."
    params = launch_parameters("viewpoint_planner_node", str(f), overrides)
    assert params["cad_library"].startswith("/")
    with RosHarness() as ros:
        params.pop("use_sim_time")
        ros.add(ViewpointPlannerNode(**ros.node_kwargs(**dict(params, coverage_dir="-"))))
        published = ros.wait_for_message(String, "/viewpoint_planner_node/robot_description", LATCHED_QOS)
    assert published.data == urdf
    assert 'name="turntable_joint"' in urdf and 'xyz="0.5 -0.05 0.14"' in urdf


def test_launch_files_load_with_launch():
    try:  # (the repository's own launch/ folder must not pass for the launch package)
        import launch
        from launch.launch_description_sources import PythonLaunchDescriptionSource
    except ImportError:
        pytest.skip("the ROS 2 launch package is not installed here (no PyPI wheel); "
                    "this test runs where ROS 2 is installed")

    for path in LAUNCH_FILES:
        desc = PythonLaunchDescriptionSource(str(path)).get_launch_description(launch.LaunchContext())
        assert desc.entities, f"{path.name} describes nothing"
