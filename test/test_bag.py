"""The rosbag2/MCAP recording reads back message-for-message, with rosbag2's type names and the QoS
each topic's publishers offered, through three independent readers: ``mcap_ros2`` (schema-only
CDR decoding), ``rosbags`` (a rosbag2 implementation of its own) and rclpy.
"""
import time

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from cosarad_ros.core.inspection.outcome import DefectSummary  # noqa: E402
from cosarad_ros.msg import Defect, InspectionResult  # noqa: E402
from cosarad_ros.ros.bag import BagWriter, message_definition, type_description_hash  # noqa: E402
from cosarad_ros.ros.conversions import xyz_to_pointcloud2  # noqa: E402
from cosarad_ros.ros.node_utils import LATCHED_QOS, RELIABLE_QOS  # noqa: E402
from cosarad_ros.ros.result_msgs import defect_markers  # noqa: E402
from ros_utils import RosHarness  # noqa: E402


def _result(i):
    m = InspectionResult(part_id=f"part-{i}", part_type="flange", verdict=i % 3,
                         verdict_text=["PASS", "FAIL", "INCONCLUSIVE"][i % 3])
    m.scored_cloud = xyz_to_pointcloud2(np.full((10, 3), i, np.float32), frame_id="part", scores=np.arange(10))
    m.defects = [Defect(type="bulge", score=float(i), point_count=3)]
    return m


def read_with_rosbags(folder):
    """``[(topic, msgtype, decoded message)]`` of a rosbag2 folder, decoded by ``rosbags`` from the
    message definitions stored in the bag (no rclpy).
    """
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    out = []
    with Reader(folder) as reader:
        for conn in reader.connections:
            if conn.msgtype not in store.types:
                store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        for conn, _, raw in reader.messages():
            out.append((conn.topic, conn.msgtype, store.deserialize_cdr(raw, conn.msgtype)))
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    return out, qos


def test_definition_lists_every_dependency_once():
    text = message_definition(InspectionResult)
    for dep in ("MSG: std_msgs/Header", "MSG: sensor_msgs/PointCloud2", "MSG: sensor_msgs/PointField",
                "MSG: cosarad_ros/Defect", "MSG: geometry_msgs/Point", "MSG: builtin_interfaces/Time",
                "MSG: cosarad_ros/QualityReport", "MSG: cosarad_ros/StageTiming"):
        assert text.count(dep + "\n") == 1, dep


def test_bag_round_trip(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.reader import read_ros2_messages

    msgs = [_result(i) for i in range(3)]
    with BagWriter(tmp_path / "results") as bag:
        for i, m in enumerate(msgs):
            bag.write("/inspection/result", m, stamp_ns=1_000_000_000 * (i + 1))
    meta = yaml.safe_load((tmp_path / "results" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["message_count"] == 3 and meta["storage_identifier"] == "mcap" and meta["version"] == 9
    topic = meta["topics_with_message_count"][0]["topic_metadata"]
    assert topic["type"] == "cosarad_ros/msg/InspectionResult"
    assert topic["type_description_hash"].startswith("RIHS01_")
    assert topic["type_description_hash"] == type_description_hash(InspectionResult)
    # the MCAP schema carries the same full type name as the topic (rosbag2 >= Iron)
    with open(tmp_path / "results" / "results_0.mcap", "rb") as fh:
        reader = make_reader(fh)
        summary = reader.get_summary()
        assert [s.name for s in summary.schemas.values()] == ["cosarad_ros/msg/InspectionResult"]
        raw = [m.data for _, _, m in reader.iter_messages()]
    # decoded by an independent CDR reader from the schema alone (what ros2 bag / Foxglove do)
    decoded = list(read_ros2_messages(str(tmp_path / "results" / "results_0.mcap")))
    assert [d.ros_msg.part_id for d in decoded] == ["part-0", "part-1", "part-2"]
    assert decoded[1].ros_msg.defects[0].type == "bulge"
    # by rosbags, a rosbag2 reader of its own
    back, _ = read_with_rosbags(tmp_path / "results")
    assert [(t, ty) for t, ty, _ in back] == [("/inspection/result", "cosarad_ros/msg/InspectionResult")] * 3
    assert [m.part_id for _, _, m in back] == ["part-0", "part-1", "part-2"]
    assert [m.verdict_text for _, _, m in back] == ["PASS", "FAIL", "INCONCLUSIVE"]
    assert back[2][2].defects[0].score == pytest.approx(2.0) and back[2][2].scored_cloud.width == 10
    # and the raw CDR is exactly what rclpy serialised
    assert deserialize_message(raw[2], InspectionResult) == msgs[2]


def test_recording_keeps_each_topics_offered_qos(tmp_path):
    """A latched result topic and a volatile marker topic, recorded as ``ros2 bag record`` does:
    each keeps its own QoS, and a late recorder still gets the latched result.
    """
    first = _result(0)
    markers = defect_markers([DefectSummary("bulge", (0.01, 0.0, 0.02), (0.004, 0.004, 0.002), 9.0, 12)],
                             frame_id="part")
    with RosHarness() as ros:
        res_pub = ros.client.create_publisher(InspectionResult, "/inspection/result", LATCHED_QOS)
        mark_pub = ros.client.create_publisher(MarkerArray, "/inspection/defect_markers", RELIABLE_QOS)
        res_pub.publish(first)            # before the recorder exists: only transient local delivers it
        bag = BagWriter(tmp_path / "cell")
        try:
            bag.record(ros.client, "/inspection/result", InspectionResult)
            bag.record(ros.client, "/inspection/defect_markers", MarkerArray)
            ros.wait_until(lambda: bag._counts["/inspection/result"] == 1, timeout=10, what="latched result")
            time.sleep(0.3)               # the marker subscription is matched
            ros.wait_until(lambda: mark_pub.get_subscription_count() > 0, timeout=10, what="marker match")
            mark_pub.publish(markers)
            res_pub.publish(_result(1))
            ros.wait_until(lambda: bag._counts["/inspection/result"] == 2
                           and bag._counts["/inspection/defect_markers"] == 1, timeout=10, what="both topics")
            with pytest.raises(ValueError, match="no publisher of /nobody"):
                bag.record(ros.client, "/nobody", InspectionResult, wait=0.2)
        finally:
            bag.close()
    meta = yaml.safe_load((tmp_path / "cell" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    qos = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
           for t in meta["topics_with_message_count"]}
    assert [(q["reliability"], q["durability"]) for q in qos["/inspection/result"]] == [("reliable", "transient_local")]
    markers_qos = qos["/inspection/defect_markers"]
    assert [(q["reliability"], q["durability"]) for q in markers_qos] == [("reliable", "volatile")]
    back, rb_qos = read_with_rosbags(tmp_path / "cell")
    assert rb_qos["/inspection/result"][0].durability.name == "TRANSIENT_LOCAL"
    assert rb_qos["/inspection/defect_markers"][0].durability.name == "VOLATILE"
    results = [m for t, _, m in back if t == "/inspection/result"]
    assert [m.part_id for m in results] == ["part-0", "part-1"]
    marks = [m for t, _, m in back if t == "/inspection/defect_markers"]
    assert len(marks) == 1 and len(marks[0].markers) == len(markers.markers)
    assert marks[0].markers[1].pose.position.x == pytest.approx(0.01)


def test_bag_refuses_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        BagWriter(tmp_path / "x")
