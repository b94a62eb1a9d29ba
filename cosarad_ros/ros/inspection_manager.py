"""``inspection_manager``: runs one inspection as the action ``~/inspect``
(``cosarad_ros/action/InspectPart``).

plan views -> move -> scan -> fuse -> classify -> register to the reference -> detect -> publish,
by calling the other nodes' services; the sequence and the verdict rule are
:func:`cosarad_ros.core.inspection.pipeline.run_inspection`. Publishes the ``InspectionResult`` on
``/inspection/result`` (transient local: late subscribers get the last one) and the defect markers.
A cancelled goal stops at the next stage (the move or service call under way finishes first) and
ends ``canceled`` with an INCONCLUSIVE result that is not published as a verdict.

TF: the ``part`` frame has one owner, the cell description (robot_state_publisher with
``urdf/cosarad_cell.urdf.xacro``: fixture -> part, turning with the turntable); this node
publishes no transform. ``part_pose`` is its nominal pose in ``world`` for fusing the views.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from visualization_msgs.msg import MarkerArray

from cosarad_ros.action import InspectPart
from cosarad_ros.core.geometry import pose_to_matrix as pose_list_to_matrix
from cosarad_ros.core.inspection.fusion import CELL_VOXEL, DEFAULT_ROI, fuse_scans
from cosarad_ros.core.inspection.outcome import InspectionOutcome, StageRecord
from cosarad_ros.core.inspection.pipeline import Classified, Detected, Registered, ViewScan, run_inspection
from cosarad_ros.msg import InspectionResult
from cosarad_ros.ros import conversions as cv
from cosarad_ros.ros.node_utils import (
    LATCHED_QOS,
    RELIABLE_QOS,
    GuardedCallbacks,
    NodeDiagnostics,
    Param,
    declare_parameters,
    non_negative,
    positive,
    run_node,
    unit_interval,
)
from cosarad_ros.ros.result_msgs import defect_markers, outcome_from_msg, result_msg, timing_msgs
from cosarad_ros.srv import ClassifyPart, DetectAnomalies, MoveToView, PlanViews, RegisterCloud, Scan

PARAMS = (
    Param("planner_ns", "viewpoint_planner_node", "Namespace of the planner's plan_views / move_to_view services "
          "(relative: in this node's namespace)"),
    Param("scanner_ns", "scanner_node", "Namespace of the scanner's scan service (relative: in this node's namespace)"),
    Param("registration_ns", "registration_node", "Namespace of the registration service"),
    Param("classifier_ns", "cad_classifier_node", "Namespace of the classify service"),
    Param("anomaly_ns", "anomaly_node", "Namespace of the detect service"),
    Param("world_frame", "world", "Fixed frame of the cell (REP 105)"),
    Param("part_frame", "part", "Frame of the part on the fixture; results are published in it"),
    Param("part_pose", [0.45, 0.0, 0.12, 0.0, 0.0, 0.0, 1.0],
          "Nominal pose of the part frame in the world frame: x y z [m] qx qy qz qw",
          check=lambda v: len(v) == 7, check_text="must have 7 numbers: x y z qx qy qz qw"),
    Param("fuse_voxel", CELL_VOXEL, "Voxel edge for de-duplicating fused views [m] (the simulated templates "
          "are fused alike)", check=positive),
    Param("roi_min", list(DEFAULT_ROI[0]), "Region of interest kept around the part, min corner in the part frame [m] "
          "(z above 0 drops the fixture)", check=lambda v: len(v) == 3, check_text="must have 3 numbers"),
    Param("roi_max", list(DEFAULT_ROI[1]), "Region of interest, max corner in the part frame [m]",
          check=lambda v: len(v) == 3, check_text="must have 3 numbers"),
    Param("min_registration_fitness", 0.5, "Registrations below this fitness give INCONCLUSIVE", check=unit_interval),
    Param("min_points", 500, "Fused clouds with fewer points give INCONCLUSIVE", check=positive),
    Param("locate_area", [0.20, 0.20], "Area [x y] (m) of the fixture, centred on the part frame, looked at from "
          "above to locate a part of unknown type before its survey views are planned",
          check=lambda v: len(v) == 2 and min(v) > 0, check_text="must be 2 positive numbers"),
    Param("service_timeout", 120.0, "Longest wait for one service answer [s]; the whole wait while a service has "
          "not answered yet", check=positive),
    Param("timeout_factor", 5.0, "Once a service has answered, later calls wait at most this many times its "
          "longest answer so far (at least min_service_timeout, at most service_timeout)",
          check=lambda v: v >= 1.0, check_text="must be >= 1"),
    Param("min_service_timeout", 30.0, "Shortest wait for an answer from a service that has answered before [s]",
          check=positive),
    Param("wait_for_services", 30.0, "Seconds to wait for a service to appear [s]", check=non_negative),
)


class StageError(RuntimeError):
    """A service call failed; the message is the stage's reason."""


class InspectionCancelled(Exception):
    """The action goal was cancelled; raised from the progress callback between stages."""


class ServiceCell:
    """:class:`cosarad_ros.core.inspection.pipeline.Cell` implemented with the other nodes' services."""

    def __init__(self, node: "InspectionManager"):
        self.node = node
        p = node.p
        g = node.client_group
        mk = node.create_client
        self.plan_cli = mk(PlanViews, f"{p.planner_ns}/plan_views", callback_group=g)
        self.move_cli = mk(MoveToView, f"{p.planner_ns}/move_to_view", callback_group=g)
        self.scan_cli = mk(Scan, f"{p.scanner_ns}/scan", callback_group=g)
        self.reg_cli = mk(RegisterCloud, f"{p.registration_ns}/register", callback_group=g)
        self.cls_cli = mk(ClassifyPart, f"{p.classifier_ns}/classify", callback_group=g)
        self.det_cli = mk(DetectAnomalies, f"{p.anomaly_ns}/detect", callback_group=g)
        self.part_type_for_plan = ""
        self.longest_answer: dict[tuple, float] = {}   # (service name, work) -> longest answer so far [s]

    def answer_limit(self, srv_name: str, work: str = "") -> float:
        """Seconds to wait for ``srv_name`` working on ``work``: ``service_timeout`` until it has
        answered once for that work, then ``timeout_factor`` times its longest answer, within
        ``[min_service_timeout, service_timeout]``.
        """
        p = self.node.p
        key = srv_name if isinstance(srv_name, tuple) else (srv_name, work)
        longest = self.longest_answer.get(key)
        if longest is None:
            return float(p.service_timeout)
        return float(min(p.service_timeout, max(p.min_service_timeout, p.timeout_factor * longest)))

    def _call(self, cli, req, what: str, work: str = ""):
        """Call a service and wait for the answer; a server that leaves the ROS graph while the
        call is in flight (its node stopped or died) or exceeds :meth:`answer_limit` fails the
        stage at once. ``work`` names what the call works on (a part type, an envelope): the
        first call for new work may prepare it (plan views, simulate templates, fit banks) and
        waits the full ``service_timeout``.
        """
        p = self.node.p
        if not cli.wait_for_service(timeout_sec=p.wait_for_services):
            raise StageError(f"{what}: service {cli.srv_name} is not available")
        key = (cli.srv_name, work)
        limit = self.answer_limit(key)
        t0 = time.monotonic()
        fut = cli.call_async(req)
        done = threading.Event()
        fut.add_done_callback(lambda _f: done.set())
        absent_since = None
        while not done.wait(0.25):
            now = time.monotonic()
            if now - t0 > limit:
                cli.remove_pending_request(fut)
                seen = self.longest_answer.get(key)
                why = f"; its longest answer so far took {seen:.2f} s" if seen is not None else ""
                raise StageError(f"{what}: service {cli.srv_name} did not answer within {limit:.3g} s{why}")
            if cli.service_is_ready():
                absent_since = None
            elif absent_since is None:
                absent_since = now
            elif now - absent_since > 1.0:
                cli.remove_pending_request(fut)
                raise StageError(f"{what}: service {cli.srv_name} went away after {now - t0:.1f} s without "
                                 "answering (its node stopped)")
        took = time.monotonic() - t0
        self.longest_answer[key] = max(took, self.longest_answer.get(key, 0.0))
        resp = fut.result()
        if resp is None:
            raise StageError(f"{what}: service {cli.srv_name} returned nothing")
        if hasattr(resp, "success") and not resp.success:
            raise StageError(f"{what}: {resp.message or 'failed'}")
        return resp

    # --- Cell protocol ---
    def plan(self, part_type: str, envelope=None) -> int:
        if part_type:
            req = PlanViews.Request(part_type=part_type)
        else:
            req = PlanViews.Request(mesh_path=self.node.envelope_mesh_path(envelope))
        resp = self._call(self.plan_cli, req, "plan_views", work=part_type or req.mesh_path)
        self.node.last_plan = resp
        return len(resp.views.poses)

    def move(self, index: int) -> np.ndarray:
        resp = self._call(self.move_cli, MoveToView.Request(index=index), "move_to_view")
        self.node.last_sensor_pose = resp.sensor_pose
        return cv.pose_to_matrix(resp.sensor_pose.pose)

    def scan(self, sensor_pose: np.ndarray) -> ViewScan:
        req = Scan.Request()
        req.sensor_pose = PoseStamped()
        req.sensor_pose.header.frame_id = self.node.p.world_frame
        req.sensor_pose.pose = cv.matrix_to_pose(sensor_pose)
        resp = self._call(self.scan_cli, req, "scan")
        pts = cv.pointcloud2_to_xyz(resp.cloud).astype(np.float64)
        return ViewScan(pts, cv.pose_to_matrix(resp.sensor_pose.pose))

    def fuse(self, scans: list[ViewScan]) -> np.ndarray:
        p = self.node.p
        return fuse_scans(scans, part_pose=self.node.part_pose, voxel_size=p.fuse_voxel,
                          roi=(p.roi_min, p.roi_max))

    def classify(self, points: np.ndarray) -> Classified:
        cloud = cv.xyz_to_pointcloud2(points, frame_id=self.node.p.part_frame)
        # the fused cloud is in the part frame, where the fixture holds a part in its CAD pose
        req = ClassifyPart.Request(cloud=cloud, prior_transform=np.eye(4).reshape(-1).tolist())
        resp = self._call(self.cls_cli, req, "classify")
        q = resp.quality
        T = np.asarray(resp.transform, dtype=np.float64)
        return Classified(resp.label, float(resp.score),
                          {k: getattr(q, k) for k in ("accuracy", "consistency", "completeness", "validity",
                                                      "uniqueness", "total", "grade")},
                          T.reshape(4, 4) if T.size == 16 else None, reference_label=resp.reference_label,
                          box_match=resp.box_match, reason="" if resp.box_match == "" else resp.message)

    def register(self, points: np.ndarray, part_type: str, init: np.ndarray | None = None) -> Registered:
        # the fused cloud is in the part frame: refine from the fixture's nominal pose and from the
        # classifier's pose, onto the part type's CAD model (the inspection's one registration)
        seeds = [np.eye(4)] + ([np.asarray(init, dtype=np.float64)] if init is not None else [])
        req = RegisterCloud.Request(reference=part_type,
                                    initial_transforms=np.concatenate([T.reshape(-1) for T in seeds]).tolist())
        req.source = cv.xyz_to_pointcloud2(points, frame_id=self.node.p.part_frame)
        resp = self._call(self.reg_cli, req, "register", work=part_type)
        T = np.asarray(resp.transform, dtype=np.float64).reshape(4, 4)
        aligned = cv.pointcloud2_to_xyz(resp.aligned).astype(np.float64)
        return Registered(True, "", aligned, T, float(resp.fitness), float(resp.rmse))

    def detect(self, points: np.ndarray, part_type: str, part_id: str) -> Detected:
        req = DetectAnomalies.Request(part_type=part_type, part_id=part_id, registered=True)
        req.cloud = cv.xyz_to_pointcloud2(points, frame_id=self.node.p.part_frame)
        resp = self._call(self.det_cli, req, "detect", work=part_type)
        r = resp.result
        arr = cv.pointcloud2_to_array(r.scored_cloud)
        pts = cv.pointcloud2_to_xyz(r.scored_cloud, skip_nans=False).astype(np.float64)
        scores = np.asarray(arr["anomaly_score"], dtype=np.float64).reshape(-1)
        return Detected(outcome_from_msg(r), pts, scores)


class InspectionManager(GuardedCallbacks, Node):
    def __init__(self, **node_kwargs):
        super().__init__("inspection_manager", **node_kwargs)
        self.p = declare_parameters(self, PARAMS)
        self.part_pose = pose_list_to_matrix(self.p.part_pose[:3], self.p.part_pose[3:])
        self.client_group = ReentrantCallbackGroup()
        self.last_plan = None
        self.last_sensor_pose = None
        self.last_result: InspectionResult | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="cosarad_manager_")
        self.cell = ServiceCell(self)
        self.result_pub = self.create_publisher(InspectionResult, "/inspection/result", LATCHED_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, "/inspection/defect_markers", RELIABLE_QOS)
        self._busy = threading.Lock()
        self.inspections = 0
        self.error_count = 0
        self.last_error = ""
        self.action = ActionServer(self, InspectPart, "~/inspect", execute_callback=self._execute,
                                   goal_callback=self._on_goal, cancel_callback=lambda _g: CancelResponse.ACCEPT,
                                   callback_group=MutuallyExclusiveCallbackGroup())
        self.diagnostics = NodeDiagnostics(self, self._diagnostic_status, what="inspections")
        self.get_logger().info("inspection_manager ready: action ~/inspect")

    def envelope_mesh_path(self, envelope=None) -> str:
        """A mesh file for the planner: the fixture area seen from above (``envelope`` None: to
        locate a part of unknown type), or the box ``(lo (3,), hi (3,))`` a located part occupies
        (rounded out to 5 mm, so similar parts share the planner's cached plan).
        """
        from cosarad_ros.core.inspection.fusion import LOCATE_BOX, envelope_mesh

        if envelope is None:
            ax, ay = self.p.locate_area
            lo, hi = np.array([-ax / 2, -ay / 2, 0.0]), np.array([ax / 2, ay / 2, LOCATE_BOX[1][2]])
        else:
            lo, hi = (np.asarray(v, dtype=np.float64) for v in envelope)
            lo, hi = np.floor(lo / 0.005) * 0.005, np.ceil(hi / 0.005) * 0.005
        name = "envelope_" + "_".join(f"{v * 1000:.0f}" for v in (*lo, *hi)) + ".stl"
        path = os.path.join(self._tmp.name, name)
        if not os.path.exists(path):
            envelope_mesh((lo, hi)).export(path)
        return path

    def _diagnostic_status(self):
        from diagnostic_msgs.msg import DiagnosticStatus

        last = self.last_result
        values = {"busy": self._busy.locked(), "inspections": self.inspections, "errors": self.error_count,
                  "last_part": last.part_id if last else "", "last_verdict": last.verdict_text if last else "",
                  "last_error": self.last_error}
        if self.error_count:
            return DiagnosticStatus.WARN, f"{self.error_count} inspection(s) ended by an internal error", values
        state = "inspecting" if self._busy.locked() else "idle"
        return DiagnosticStatus.OK, state + (f"; last: {last.part_id} {last.verdict_text}" if last else ""), values

    def _on_goal(self, _goal):
        return GoalResponse.REJECT if self._busy.locked() else GoalResponse.ACCEPT

    def inspect(self, part_id: str, part_type: str, feedback=None) -> InspectionResult:
        """Run one inspection and publish its result; returns the published message."""
        with self._busy:
            run = run_inspection(self.cell, part_id=part_id, part_type=part_type,
                                 min_fitness=self.p.min_registration_fitness, min_points=self.p.min_points,
                                 progress=feedback)
            t0 = time.perf_counter()
            stamp = self.get_clock().now().to_msg()
            o = run.outcome
            records = list(run.clock.records)
            msg = result_msg(o, frame_id=self.p.part_frame, stamp=stamp, points=run.points,
                             scores=run.point_scores, records=records,
                             score_vmax=2.0 * o.threshold if np.isfinite(o.threshold) and o.threshold > 0 else None)
            markers = defect_markers(o.defects, frame_id=self.p.part_frame, stamp=stamp)
            msg.timings.extend(timing_msgs([StageRecord("publish", time.perf_counter() - t0)]))
            self.result_pub.publish(msg)
            self.marker_pub.publish(markers)
            self.last_result = msg
            self.inspections += 1
            text = f"part {part_id!r} ({o.part_type or '?'}): {o.verdict} {o.reason}"
            # rclpy fixes one severity per call site: one call per level
            if o.verdict == "PASS":
                self.get_logger().info(text)
            else:
                self.get_logger().warning(text)
            return msg

    def _execute(self, goal_handle):
        req = goal_handle.request

        def feedback(stage, fraction):
            if goal_handle.is_cancel_requested:
                raise InspectionCancelled(stage)
            fb = InspectPart.Feedback(stage=stage, progress=float(fraction))
            goal_handle.publish_feedback(fb)

        try:
            msg = self.inspect(req.part_id, req.part_type, feedback)
        except InspectionCancelled as exc:
            self.get_logger().info(f"inspection of {req.part_id!r} cancelled before stage {exc}")
            o = InspectionOutcome(part_id=req.part_id, part_type=req.part_type, verdict="INCONCLUSIVE",
                                  reason=f"cancelled before stage {exc}", object_score=float("nan"),
                                  threshold=float("nan"))
            goal_handle.canceled()
            return InspectPart.Result(result=result_msg(o, frame_id=self.p.part_frame,
                                                        stamp=self.get_clock().now().to_msg()))
        except Exception as exc:  # a bug must not leave the caller without a verdict
            self.error_count += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"inspection of {req.part_id!r} raised {type(exc).__name__}: {exc}")
            o = InspectionOutcome(part_id=req.part_id, part_type=req.part_type, verdict="INCONCLUSIVE",
                                  reason=f"internal error: {type(exc).__name__}: {exc}",
                                  object_score=float("nan"), threshold=float("nan"))
            msg = result_msg(o, frame_id=self.p.part_frame, stamp=self.get_clock().now().to_msg())
            self.result_pub.publish(msg)
        goal_handle.succeed()
        return InspectPart.Result(result=msg)


def main(args=None) -> int:
    return run_node(InspectionManager, args)
