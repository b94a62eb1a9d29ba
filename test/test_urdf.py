"""The cell description: urdf/cosarad_cell.urdf.xacro processed by xacro, loaded by standard URDF
parsers (yourdfpy, pinocchio), frame tree and REP 103 sensor frames.
"""
from pathlib import Path

import numpy as np
import pytest
import yaml

from cosarad_ros.core.planning.cell import (
    CELL_XACRO,
    CellConfig,
    CellModel,
    example_robot_data_share,
    package_dirs,
    process_xacro,
    resolve_package_uri,
    urdf_dir,
)

pytestmark = pytest.mark.skipif(example_robot_data_share() is None, reason="example-robot-data not installed")

ROOT = Path(__file__).resolve().parents[1]


def _urdf(**args) -> str:
    return process_xacro(urdf_dir() / CELL_XACRO, CellConfig.from_dict(args).xacro_mappings())


def _load(urdf_text: str, tmp_path):
    import yourdfpy

    path = tmp_path / "cell.urdf"
    path.write_text(urdf_text)
    dirs = package_dirs()
    return yourdfpy.URDF.load(str(path), filename_handler=lambda f: resolve_package_uri(f, dirs),
                              load_meshes=False, build_scene_graph=True)


def _chain(robot, link: str) -> list[str]:
    parent_of = {j.child: j.parent for j in robot.robot.joints}
    out = [link]
    while out[-1] in parent_of:
        out.append(parent_of[out[-1]])
    return out[::-1]


@pytest.fixture(scope="module")
def default_urdf():
    return _urdf()


def test_urdf_dir_is_the_repository_folder():
    assert urdf_dir() == ROOT / "urdf"


def test_frame_tree_of_the_default_cell(default_urdf, tmp_path):
    robot = _load(default_urdf, tmp_path)
    assert robot.base_link == "world"
    assert list(robot.actuated_joint_names) == list(CellModel.UR_JOINTS)
    assert _chain(robot, "sensor_optical_frame") == [
        "world", "base_link", "shoulder_link", "upper_arm_link", "forearm_link", "wrist_1_link",
        "wrist_2_link", "wrist_3_link", "tool0", "sensor_link", "sensor_optical_frame"]
    assert _chain(robot, "part") == ["world", "fixture", "part"]
    for link in ("floor", "table"):
        assert _chain(robot, link) == ["world", link]
    # the fixture top is the part frame; the table top is z = 0 of world
    T_part = robot.get_transform("part", "world")
    np.testing.assert_allclose(T_part[:3, 3], [0.45, 0.0, 0.12], atol=1e-9)
    T_floor = robot.get_transform("floor", "world")
    assert T_floor[2, 3] == pytest.approx(-0.75)


def test_sensor_frames_follow_rep103(default_urdf, tmp_path):
    robot = _load(default_urdf, tmp_path)
    q = np.array([0.3, -1.2, 1.4, -1.9, -1.5, 0.7])
    robot.update_cfg(q)
    T_link = robot.get_transform("sensor_link", "world")
    T_opt = robot.get_transform("sensor_optical_frame", "world")
    T_tool = robot.get_transform("tool0", "world")
    # optical z forward = body x, optical x right = -body y, optical y down = -body z
    np.testing.assert_allclose(T_opt[:3, 2], T_link[:3, 0], atol=1e-9)
    np.testing.assert_allclose(T_opt[:3, 0], -T_link[:3, 1], atol=1e-9)
    np.testing.assert_allclose(T_opt[:3, 1], -T_link[:3, 2], atol=1e-9)
    # the default mount looks along the flange axis
    np.testing.assert_allclose(T_opt[:3, 2], T_tool[:3, 2], atol=1e-9)
    # and pinocchio agrees with yourdfpy on the forward kinematics
    cell = CellModel(default_urdf)
    np.testing.assert_allclose(cell.fk(q), T_opt, atol=1e-9)


def test_sensor_body_and_optical_offset_come_from_the_preset(tmp_path):
    presets = yaml.safe_load((urdf_dir() / "sensors.yaml").read_text())
    for name in ("motioncam3d_s", "motioncam3d_m"):
        robot = _load(_urdf(sensor_type=name), tmp_path)
        link = robot.link_map["sensor_link"]
        np.testing.assert_allclose(link.collisions[0].geometry.box.size, presets[name]["body"])
        T = robot.get_transform("sensor_optical_frame", "sensor_link")
        np.testing.assert_allclose(T[:3, 3], presets[name]["optical_offset"], atol=1e-12)


def test_mount_arguments_move_the_sensor(tmp_path):
    robot = _load(_urdf(mount_xyz=(0.0, 0.03, 0.05), mount_rpy=(0.0, -np.pi / 2, 0.2)), tmp_path)
    T = robot.get_transform("sensor_link", "tool0")
    np.testing.assert_allclose(T[:3, 3], [0.0, 0.03, 0.05], atol=1e-9)
    ref = _load(_urdf(), tmp_path).get_transform("sensor_link", "tool0")
    assert not np.allclose(T[:3, :3], ref[:3, :3])


def test_turntable_argument_adds_a_rotating_part_frame(tmp_path):
    urdf = _urdf(turntable=True, part_xyz=(0.01, 0.0, 0.0))
    robot = _load(urdf, tmp_path)
    assert "turntable_joint" in robot.actuated_joint_names
    assert _chain(robot, "part") == ["world", "fixture", "turntable_link", "part"]
    cell = CellModel(urdf)
    assert cell.turntable_joint == "turntable_joint"
    assert "turntable_joint" not in cell.arm_joint_names
    p0 = cell.part_pose(0.0)[:3, 3]
    p90 = cell.part_pose(np.pi / 2)[:3, 3]
    # the part frame sits 1 cm off the turntable axis: a quarter turn moves it around the axis
    np.testing.assert_allclose(p0 - [0.45, 0.0, 0.14], [0.01, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(p90 - [0.45, 0.0, 0.14], [0.0, 0.01, 0.0], atol=1e-9)


def test_the_arm_comes_from_the_installed_package_not_the_repository(default_urdf):
    meshes = [line for line in default_urdf.splitlines() if "<mesh" in line]
    assert meshes and all("package://example-robot-data/robots/ur_description/" in m for m in meshes)
    assert not [p for p in (ROOT / "urdf").rglob("*") if p.suffix.lower() in (".stl", ".dae", ".obj")]
    # every mesh resolves to a file of the installed package and pinocchio builds the collision model
    cell = CellModel(default_urdf)
    gm = cell.geometry_model()
    links = {cell.link_of(g) for g in gm.geometryObjects}
    assert {"shoulder_link", "forearm_link", "wrist_3_link", "sensor_link", "table", "fixture"} <= links


def test_ur_types_of_the_package_and_a_clear_error_for_unknown_ones():
    ur10 = CellModel.default()
    assert ur10.config.ur_type == "ur10"
    ur5 = CellModel.default({"ur_type": "ur5"})
    assert ur10.reach() > ur5.reach() + 0.3
    with pytest.raises(ValueError, match="ur_type 'ur42'.*known: .*ur5"):
        CellModel.default({"ur_type": "ur42"})


def test_bad_xacro_arguments_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="unknown sensor_type: nope.*motioncam3d_s"):
        _urdf(sensor_type="nope")
    with pytest.raises(ValueError, match="arm_source must be"):
        process_xacro(urdf_dir() / CELL_XACRO, {"arm_source": "abb"})
    with pytest.raises(ValueError, match="unknown cell argument"):
        CellConfig.from_dict({"fixture_heigth": 0.1})
    with pytest.raises(FileNotFoundError):
        process_xacro(urdf_dir() / "missing.urdf.xacro")


def test_the_xacro_runs_from_the_command_line(tmp_path):
    """`xacro cosarad_cell.urdf.xacro` as robot_state_publisher launch files call it."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("xacro") or str(Path(sys.executable).parent / "xacro")
    if not Path(exe).exists():
        pytest.skip("no xacro executable")
    arm = CellConfig().xacro_mappings()["arm_urdf"]
    out = subprocess.run([exe, str(urdf_dir() / CELL_XACRO), f"arm_urdf:={arm}",
                          "sensor_type:=motioncam3d_m"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    robot = _load(out.stdout, tmp_path)
    assert "sensor_optical_frame" in robot.link_map
