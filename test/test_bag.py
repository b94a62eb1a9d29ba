"""The rosbag2/MCAP recording of /inspection/result reads back message-for-message."""
import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message  # noqa: E402

from cosarad_ros.msg import Defect, InspectionResult  # noqa: E402
from cosarad_ros.ros.bag import BagWriter, message_definition  # noqa: E402
from cosarad_ros.ros.conversions import xyz_to_pointcloud2  # noqa: E402


def _result(i):
    m = InspectionResult(part_id=f"part-{i}", part_type="flange", verdict=i % 3, verdict_text=["PASS", "FAIL", "INCONCLUSIVE"][i % 3])
    m.scored_cloud = xyz_to_pointcloud2(np.full((10, 3), i, np.float32), frame_id="part", scores=np.arange(10))
    m.defects = [Defect(type="bulge", score=float(i), point_count=3)]
    return m


def test_definition_lists_every_dependency_once():
    text = message_definition(InspectionResult)
    for dep in ("MSG: std_msgs/Header", "MSG: sensor_msgs/PointCloud2", "MSG: sensor_msgs/PointField",
                "MSG: cosarad_ros/Defect", "MSG: geometry_msgs/Point", "MSG: builtin_interfaces/Time",
                "MSG: cosarad_ros/QualityReport", "MSG: cosarad_ros/StageTiming"):
        assert text.count(dep + "\n") == 1, dep


def test_bag_round_trip(tmp_path):
    from mcap_ros2.reader import read_ros2_messages

    msgs = [_result(i) for i in range(3)]
    with BagWriter(tmp_path / "results") as bag:
        for i, m in enumerate(msgs):
            bag.write("/inspection/result", m, stamp_ns=1_000_000_000 * (i + 1))
    meta = yaml.safe_load((tmp_path / "results" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["message_count"] == 3 and meta["storage_identifier"] == "mcap"
    assert meta["topics_with_message_count"][0]["topic_metadata"]["type"] == "cosarad_ros/msg/InspectionResult"
    # decoded by an independent CDR reader from the schema alone (what ros2 bag / Foxglove do)
    decoded = list(read_ros2_messages(str(tmp_path / "results" / "results_0.mcap")))
    assert [d.ros_msg.part_id for d in decoded] == ["part-0", "part-1", "part-2"]
    assert decoded[1].ros_msg.defects[0].type == "bulge"
    # and the raw CDR is exactly what rclpy serialised
    from mcap.reader import make_reader

    with open(tmp_path / "results" / "results_0.mcap", "rb") as fh:
        raw = [m.data for _, _, m in make_reader(fh).iter_messages()]
    back = deserialize_message(raw[2], InspectionResult)
    assert back == msgs[2]


def test_bag_refuses_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        BagWriter(tmp_path / "x")
