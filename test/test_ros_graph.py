"""The cell's ROS graph as the launch files build it, checked with the six real nodes running:
every topic the RViz config shows is one a node publishes, with the display's message type;
every node reports on /diagnostics; no node of the package publishes TF (the cell description,
through robot_state_publisher, is the one owner of every cell frame, the part frame included).
"""
import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")

from cosarad_ros.core.planning.cell import example_robot_data_share  # noqa: E402
from ros_utils import RosHarness  # noqa: E402

pytestmark = [pytest.mark.ros,
              pytest.mark.skipif(example_robot_data_share() is None, reason="example-robot-data not installed")]
ROOT = Path(__file__).resolve().parents[1]
# nodes of other packages that the launch files start, with what they publish
EXTERNAL_PUBLISHERS = {
    "robot_state_publisher": {"/robot_description": "std_msgs/msg/String", "/tf": "tf2_msgs/msg/TFMessage",
                              "/tf_static": "tf2_msgs/msg/TFMessage"},
}
DISPLAY_TYPES = {
    "rviz_default_plugins/PointCloud2": "sensor_msgs/msg/PointCloud2",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Pose": "geometry_msgs/msg/PoseStamped",
    "rviz_default_plugins/RobotModel": "std_msgs/msg/String",
}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """``{node name: (publishers {topic: type}, subscriptions {topic: type})}`` of the six nodes."""
    from cosarad_ros.ros.anomaly_node import AnomalyNode
    from cosarad_ros.ros.cad_classifier_node import CadClassifierNode
    from cosarad_ros.ros.inspection_manager import InspectionManager
    from cosarad_ros.ros.registration_node import RegistrationNode
    from cosarad_ros.ros.scanner_node import ScannerNode
    from cosarad_ros.ros.viewpoint_planner_node import ViewpointPlannerNode

    tmp = tmp_path_factory.mktemp("graph")
    with RosHarness() as ros:
        kw = ros.node_kwargs
        nodes = [ScannerNode(**kw()), ViewpointPlannerNode(**kw(coverage_dir="-")), RegistrationNode(**kw()),
                 CadClassifierNode(**kw(library_dir=str(tmp / "cad"))), AnomalyNode(**kw(cache_dir=str(tmp / "banks"))),
                 InspectionManager(**kw())]
        for n in nodes:
            ros.add(n)

        def topics(entities):
            return {e.topic_name: _type_name(e.msg_type) for e in entities}

        yield {n.get_name(): (topics(n.publishers), topics(n.subscriptions)) for n in nodes}


def _type_name(cls) -> str:
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def _rviz_topics():
    doc = yaml.safe_load((ROOT / "config" / "rviz" / "inspection.rviz").read_text())
    out = []
    for d in doc["Visualization Manager"]["Displays"]:
        for key in ("Topic", "Description Topic"):
            if isinstance(d.get(key), dict):
                out.append((d["Class"], d["Name"], d[key]["Value"]))
    return out, doc["Visualization Manager"]["Global Options"]["Fixed Frame"]


def test_every_rviz_topic_is_published_with_the_displays_type(graph):
    published = {t: ty for pubs, _ in graph.values() for t, ty in pubs.items()}
    for ext in EXTERNAL_PUBLISHERS.values():
        published.update(ext)
    topics, _ = _rviz_topics()
    assert len(topics) >= 5
    for cls, name, topic in topics:
        assert topic in published, f"RViz display '{name}' shows {topic}, which no node publishes"
        assert published[topic] == DISPLAY_TYPES[cls], f"'{name}': {topic} is {published[topic]}"


def test_rviz_fixed_frame_and_cell_frames_have_one_owner(graph):
    from cosarad_ros.core.planning import CellModel

    _, fixed = _rviz_topics()
    for turntable in (False, True):
        urdf = CellModel.default({"turntable": turntable}).urdf
        children = [j.find("child").get("link") for j in ET.fromstring(urdf).findall("joint")]
        assert children.count("part") == 1, "the part frame has one parent in the cell description"
        assert fixed in urdf
    for name, (pubs, _) in graph.items():
        assert not {"/tf", "/tf_static"} & set(pubs), f"{name} publishes TF; robot_state_publisher owns the cell frames"
    # and no code path of the package sends transforms
    for f in (ROOT / "cosarad_ros").rglob("*.py"):
        text = f.read_text()
        assert "TransformBroadcaster" not in text, f"{f.relative_to(ROOT)} broadcasts transforms"


def test_every_node_reports_on_diagnostics(graph):
    for name, (pubs, _) in graph.items():
        assert pubs.get("/diagnostics") == "diagnostic_msgs/msg/DiagnosticArray", f"{name} has no /diagnostics"


def test_launch_remappings_name_topics_of_the_node(graph):
    """Every ``remappings=[(from, to)]`` in a launch file renames a topic the node really has."""
    for path in sorted((ROOT / "launch").glob("*.launch.py")):
        for call in ast.walk(ast.parse(path.read_text())):
            if not isinstance(call, ast.Call):
                continue
            kws = {k.arg: k.value for k in call.keywords}
            if "remappings" not in kws or "executable" not in kws:
                continue
            exe = ast.literal_eval(kws["executable"])
            pubs, subs = graph[exe]
            for pair in ast.literal_eval(kws["remappings"]):
                src = pair[0] if pair[0].startswith("/") else f"/{exe}/{pair[0][2:]}" if pair[0].startswith("~/") \
                    else f"/{pair[0]}"
                assert src in pubs or src in subs, f"{path.name}: {exe} has no topic {pair[0]}"
