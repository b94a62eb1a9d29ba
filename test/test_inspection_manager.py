"""inspection_manager over real DDS with the real view planner: a cancelled ~/inspect goal ends
CANCELED at the next stage (no verdict published), the manager takes the next goal; it publishes
no transform of its own (the part frame's one owner is the cell description).
"""
import time

import pytest

pytest.importorskip("rclpy")
from action_msgs.msg import GoalStatus  # noqa: E402

from cosarad_ros.action import InspectPart  # noqa: E402
from cosarad_ros.core.planning.cell import example_robot_data_share  # noqa: E402
from cosarad_ros.msg import InspectionResult  # noqa: E402
from cosarad_ros.ros.inspection_manager import InspectionManager  # noqa: E402
from cosarad_ros.ros.node_utils import LATCHED_QOS  # noqa: E402
from cosarad_ros.ros.viewpoint_planner_node import ViewpointPlannerNode  # noqa: E402
from ros_utils import RosHarness  # noqa: E402

pytestmark = [pytest.mark.ros,
              pytest.mark.skipif(example_robot_data_share() is None, reason="example-robot-data not installed")]


def test_cancel_ends_the_inspection_at_the_next_stage(tmp_path):
    from cosarad_ros.core.data.parts import make_part

    lib = tmp_path / "cad"
    lib.mkdir()
    make_part("bracket", seed=1).mesh.export(lib / "bracket.stl")
    with RosHarness() as ros:
        ros.add(ViewpointPlannerNode(**ros.node_kwargs(cad_library=str(lib), coverage_dir="-", n_candidates=100,
                                                       n_samples=1200, playback_speed=1.0)))
        manager = ros.add(InspectionManager(**ros.node_kwargs(wait_for_services=10.0)))
        assert not [p for p in manager.publishers if p.topic_name in ("/tf", "/tf_static")]
        results = ros.collect(InspectionResult, "/inspection/result", LATCHED_QOS)
        client = ros.action_client(InspectPart, "/inspection_manager/inspect")
        stages = []
        handle = ros.wait_future(client.send_goal_async(InspectPart.Goal(part_id="P-1", part_type="bracket"),
                                              feedback_callback=lambda m: stages.append(m.feedback.stage)), 10)
        assert handle.accepted
        ros.wait_until(lambda: "move" in stages, timeout=120, what="the first move")
        cancel = ros.wait_future(handle.cancel_goal_async(), 10)
        assert cancel.goals_canceling, "the manager refused the cancel"
        res = ros.wait_future(handle.get_result_async(), 120)
        assert res.status == GoalStatus.STATUS_CANCELED
        assert res.result.result.verdict_text == "INCONCLUSIVE" and "cancelled" in res.result.result.reason
        assert "scan" not in stages                       # stopped before the next stage
        time.sleep(0.5)
        assert not results                                # a cancelled run is no verdict
        assert not manager._busy.locked()
        handle = ros.wait_future(client.send_goal_async(InspectPart.Goal(part_id="P-2", part_type="bracket")), 10)
        assert handle.accepted                            # free for the next part
        ros.wait_future(handle.cancel_goal_async(), 10)
        assert ros.wait_future(handle.get_result_async(), 120).status == GoalStatus.STATUS_CANCELED
