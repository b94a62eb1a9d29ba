"""End to end: the simulated cell's six nodes over real DDS inspect real parts.

Both parts are classified, registered and scored (every stage timed, a scored cloud); the good
part passes and the bulged one fails with a defect within 15 mm of the bulge; a sensor that stops
answering gives INCONCLUSIVE (never PASS); the nodes keep running after malformed clouds on their
inputs; the in-process cell of ``cosarad cell-eval`` gives both parts the same verdicts through
the same stages. The detector is the anomaly node's default (``deviation``; ``COSARAD_E2E_METHOD``
picks another). One cell start-up serves every check.
"""
import os
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.action import ActionClient  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from cosarad_ros.action import InspectPart  # noqa: E402
from cosarad_ros.core.geometry import matrix_to_pose  # noqa: E402
from cosarad_ros.core.inspection.production import make_cell_scenario  # noqa: E402
from cosarad_ros.core.planning import CellModel  # noqa: E402
from cosarad_ros.msg import InspectionResult  # noqa: E402
from cosarad_ros.ros.node_utils import LATCHED_QOS, SENSOR_QOS  # noqa: E402
from cosarad_ros.ros.sim_cell import SimulatedCell  # noqa: E402
from cosarad_ros.srv import LoadPart, RegisterCloud  # noqa: E402

METHOD = os.environ.get("COSARAD_E2E_METHOD", "deviation")


def _wait(fut, timeout, what):
    end = time.monotonic() + timeout
    while not fut.done():
        assert time.monotonic() < end, f"{what} did not finish within {timeout} s"
        time.sleep(0.02)
    return fut.result()


def _malformed_cloud():
    msg = PointCloud2(height=1, width=100, point_step=12, row_step=1200)
    msg.header.frame_id = "part"
    msg.fields = [PointField(name=c, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, c in enumerate("xyz")]
    msg.data = bytes(600)  # half of what the header promises
    return msg


@pytest.mark.slow
def test_cell_passes_good_fails_defective_and_survives_faults(tmp_path):
    scenario = make_cell_scenario(tmp_path / "cell", families=["pocket_block"], defects=["bulge"], seed=1)
    good = next(p for p in scenario.parts if p.expected == "PASS")
    bad = next(p for p in scenario.parts if p.expected == "FAIL")
    p, q = matrix_to_pose(CellModel.default().part_pose())
    with SimulatedCell(scenario.cad_dir, part_pose=[*p, *q], method=METHOD, n_templates=4,
                       work_dir=tmp_path) as cell:
        driver = cell.add(Node("e2e_driver", context=cell.context))
        results = []
        driver.create_subscription(InspectionResult, "/inspection/result", results.append, LATCHED_QOS)
        action = ActionClient(driver, InspectPart, "/inspection_manager/inspect")
        load = driver.create_client(LoadPart, "/scanner_node/load_part")
        assert action.wait_for_server(timeout_sec=60) and load.wait_for_service(timeout_sec=60)

        def inspect(part, part_id=None):
            r = _wait(load.call_async(LoadPart.Request(mesh_path=part.mesh_path, part_id=part.part_id)), 60, "load")
            assert r.success, r.message
            handle = _wait(action.send_goal_async(InspectPart.Goal(part_id=part_id or part.part_id)), 30, "goal")
            assert handle.accepted
            return _wait(handle.get_result_async(), 900, "inspection").result.result

        ok = inspect(good)
        assert ok.verdict_text in ("PASS", "FAIL"), ok.reason  # it reached a verdict
        assert ok.part_type == good.part_type  # classified from the scan
        assert {t.stage for t in ok.timings} >= {"plan", "move", "scan", "fuse", "classify", "register", "detect"}
        assert ok.scored_cloud.width > 1000 and "anomaly_score" in [f.name for f in ok.scored_cloud.fields]

        ko = inspect(bad)
        assert ko.verdict_text in ("PASS", "FAIL"), ko.reason
        assert ko.part_type == bad.part_type
        centre = np.asarray(bad.defect["centre"])
        dists = [float(np.linalg.norm(np.array([d.centroid.x, d.centroid.y, d.centroid.z]) - centre))
                 for d in ko.defects]

        # malformed input: a topic callback and a service both refuse it; the nodes keep running
        pub = driver.create_publisher(PointCloud2, "/anomaly_node/cloud_in", SENSOR_QOS)
        anomaly = cell.node("anomaly_node")
        before = anomaly.error_count
        for _ in range(20):
            pub.publish(_malformed_cloud())
            time.sleep(0.05)
            if anomaly.error_count > before:
                break
        assert anomaly.error_count > before
        cli = driver.create_client(RegisterCloud, "/registration_node/register")
        resp = _wait(cli.call_async(RegisterCloud.Request(source=_malformed_cloud(), reference=good.part_type)),
                     30, "register")
        assert not resp.success and "bytes" in resp.message

        # the sensor stops answering: INCONCLUSIVE with the reason, never PASS
        cell.scanner.sensor.unplug()
        lost = inspect(good, "lost-sensor")
        assert lost.verdict_text == "INCONCLUSIVE" and "scan" in lost.reason, lost.reason
        cell.scanner.sensor.plug_in()

    # every verdict was published on /inspection/result
    assert [m.verdict_text for m in results][-3:] == [ok.verdict_text, ko.verdict_text, "INCONCLUSIVE"]

    # detection quality: the good part passes, the bulged one fails with a defect at the bulge
    assert ok.verdict_text == "PASS", f"good part: {ok.reason} (score {ok.object_score:.3g}, thr {ok.threshold:.3g})"
    assert ko.verdict_text == "FAIL", f"bulged part: {ko.reason} (score {ko.object_score:.3g})"
    assert dists and min(dists) < 0.015, (
        "no defect within 15 mm of the bulge: "
        f"{[(round(d, 4), x.type, round(x.score, 2)) for d, x in zip(dists, ko.defects)]}; "
        f"registration fitness {ko.registration_fitness:.3f}")

    # the in-process cell (core objects, no DDS; what `cosarad cell-eval` runs) judges the same
    # parts the same way, from the same stages
    from cosarad_ros.core.inspection.inprocess import InProcessCell
    from cosarad_ros.core.inspection.pipeline import run_inspection

    with InProcessCell(scenario.cad_dir, work_dir=tmp_path / "inprocess", method=METHOD, n_templates=4) as local:
        for part, ros in ((good, ok), (bad, ko)):
            local.load_part(part.mesh_path, part_id=part.part_id)
            run = run_inspection(local, part_id=part.part_id)
            assert (run.outcome.verdict, run.outcome.part_type) == (ros.verdict_text, ros.part_type), run.outcome.reason
            assert [r.stage for r in run.clock.records if r.stage != "move"] == \
                [t.stage for t in ros.timings if t.stage not in ("move", "publish")]
