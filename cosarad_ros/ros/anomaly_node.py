"""``anomaly_node``: COSARAD anomaly detection as a ROS 2 node.

* service ``~/detect`` (``cosarad_ros/srv/DetectAnomalies``): score a cloud of a given part type;
  returns an ``InspectionResult`` (used by the ``inspection_manager``);
* topic ``~/cloud_in`` (sensor-data QoS): stand-alone mode without a manager; clouds are scored
  as ``default_part_type`` and the verdict is published on ``/inspection/result``;
* every cloud is checked first (at least ``min_points`` finite points, a plausible size in metres)
  and cut to ``max_points`` points; part types are names (:mod:`cosarad_ros.core.names`), so a
  request can only reach templates inside ``template_dir`` and models of ``cad_library``;
* publishes the scored cloud (``x y z rgb anomaly_score``) on ``/inspection/scored_cloud`` and
  one box + label per defect on ``/inspection/defect_markers`` (reliable, so RViz's default
  subscription receives them).

All the work is done by :class:`cosarad_ros.core.inspection.detection.PartInspector`.
"""
from __future__ import annotations

import os
import threading
import time

from rcl_interfaces.msg import ParameterType
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from cosarad_ros.core.anomaly.deviation import DEFAULT_THRESHOLD, DEFAULT_TOLERANCE
from cosarad_ros.core.inspection.detection import PartInspector, make_inspector
from cosarad_ros.core.inspection.outcome import StageRecord
from cosarad_ros.core.inspection.templates import CELL_TEMPLATES, default_cache_dir
from cosarad_ros.core.names import check_name
from cosarad_ros.msg import InspectionResult
from cosarad_ros.ros.node_utils import (
    LATCHED_QOS,
    RELIABLE_QOS,
    SENSOR_QOS,
    GuardedCallbacks,
    Param,
    ParameterError,
    cloud_points,
    declare_parameters,
    non_negative,
    positive,
    run_node,
    unit_interval,
)
from cosarad_ros.ros.result_msgs import defect_markers, result_msg
from cosarad_ros.srv import DetectAnomalies


def _labels(v) -> bool:
    for e in v:
        if e not in ("", "all"):
            check_name(e, what="part type")
    return True


_labels.text = "must be CAD labels (letters, digits, '_', '-', '.') or 'all'"  # type: ignore[attr-defined]

PARAMS = (
    Param("method", "deviation", "Detector: location-specific deviation banks (deviation), learned COSARAD "
          "patches (cosarad), FPFH patches (fpfh), or one global bank (global-bank)",
          choices=("deviation", "cosarad", "fpfh", "global-bank")),
    Param("model_path", "", "COSARAD weights (.safetensors); empty: the model shipped with the package"),
    Param("template_dir", "", "Folder of good scans: <template_dir>/<part_type>/*.pcd|ply|xyz (metres)"),
    Param("cad_library", "", "CAD library folder; part types without template scans get simulated templates"),
    Param("n_templates", CELL_TEMPLATES, "Templates simulated per part type from CAD", check=positive),
    Param("cache_dir", "", "Cache folder of view plans, simulated templates and memory banks (`cosarad cad "
          "prepare` fills it ahead of the first part); empty: $ROS_HOME/cosarad_banks (~/.ros/cosarad_banks)"),
    # default [""] rather than []: an empty list default makes rclpy type the parameter as a byte array
    Param("prepare_part_types", [""], "Part types to prepare at start-up, in the background (memory banks fitted "
          "from the cached or newly simulated templates, hole allowances measured), so their first part is "
          "judged as fast as a repeat: CAD labels, or 'all' for every model of cad_library; empty: each type "
          "is prepared by its first part", check=_labels, type_=ParameterType.PARAMETER_STRING_ARRAY,
          read_only=True),
    Param("frame_id", "part", "Frame of the published scored cloud and markers (the template frame)"),
    Param("default_part_type", "", "Part type assumed for clouds arriving on ~/cloud_in"),
    Param("min_points", 200, "Scans with fewer points are refused", check=positive),
    Param("max_points", 200000, "Scans with more points are cut to a random subset of this many before scoring",
          check=positive),
    Param("deviation_threshold", DEFAULT_THRESHOLD, "method deviation: score (Cohen's d against the location's "
          "noise) above which a location is anomalous", check=positive),
    Param("deviation_tolerance", DEFAULT_TOLERANCE, "method deviation: smallest excess deviation from the good "
          "parts that can be a defect (what a drawing would allow) [m]", check=non_negative),
    Param("min_fitness", 0.5, "A scan with a smaller share of its points on the part's surface is INCONCLUSIVE",
          check=unit_interval),
    Param("min_coverage", 0.85, "A would-be PASS that measured a smaller share of the surface the planned views "
          "should see is INCONCLUSIVE", check=unit_interval),
    Param("min_quality", 0.0, "A would-be PASS with a lower ISO 25012 data-quality total is INCONCLUSIVE",
          check=unit_interval),
    Param("score_vmax", 0.0, "Score mapped to the top colour; 0: twice the threshold", check=non_negative),
)


def build_inspector(p) -> PartInspector:
    """The core object from the node's parameters (:func:`~cosarad_ros.core.inspection.detection.make_inspector`)."""
    detector = {}
    if p.method == "deviation":
        detector.update(threshold=float(p.deviation_threshold), tolerance=float(p.deviation_tolerance))
    if p.model_path:
        if not os.path.isfile(p.model_path):
            raise FileNotFoundError(f"parameter 'model_path': no such file {p.model_path}")
        detector["model"] = p.model_path
    cache = p.cache_dir or default_cache_dir()
    return make_inspector(method=p.method, cad_library=p.cad_library, template_dir=p.template_dir,
                          n_templates=p.n_templates, cache_dir=cache, detector=detector, min_points=p.min_points,
                          min_fitness=p.min_fitness, min_coverage=p.min_coverage, min_quality=p.min_quality)


class AnomalyNode(GuardedCallbacks, Node):
    def __init__(self, inspector: PartInspector | None = None, **node_kwargs):
        super().__init__("anomaly_node", **node_kwargs)
        self.p = declare_parameters(self, PARAMS)
        self.inspector = inspector if inspector is not None else build_inspector(self.p)
        self.error_count = 0
        group = MutuallyExclusiveCallbackGroup()  # one detection at a time (the model is not re-entrant)
        self.cloud_pub = self.create_publisher(PointCloud2, "/inspection/scored_cloud", RELIABLE_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, "/inspection/defect_markers", RELIABLE_QOS)
        self.result_pub = self.create_publisher(InspectionResult, "/inspection/result", LATCHED_QOS)
        self.create_service(DetectAnomalies, "~/detect", self._on_detect, callback_group=group)
        self.create_subscription(PointCloud2, "~/cloud_in", self._on_cloud, SENSOR_QOS, callback_group=group)
        from cosarad_ros.ros.node_utils import NodeDiagnostics

        self.diagnostics = NodeDiagnostics(self)   # /diagnostics: OK, WARN with the last failure after one
        self.prepared: list[str] = []
        self.preparation = self._start_preparation()
        self.get_logger().info(f"anomaly_node ready (method={self.p.method})")

    def _start_preparation(self) -> threading.Thread | None:
        """Prepare the part types of ``prepare_part_types`` in a background thread (None: none)."""
        wanted = [e for e in self.p.prepare_part_types if e]
        if not wanted:
            return None
        if "all" in wanted:
            if not self.p.cad_library:
                raise ParameterError("parameter 'prepare_part_types': 'all' needs parameter 'cad_library'")
            from cosarad_ros.core.cad import CadLibrary

            wanted = list(CadLibrary(self.p.cad_library).labels)
        th = threading.Thread(target=self._prepare, args=(wanted,), name="prepare_part_types", daemon=True)
        th.start()
        return th

    def _prepare(self, labels: list[str]) -> None:
        log = self.get_logger()
        for i, label in enumerate(labels, 1):
            t0 = time.perf_counter()
            log.info(f"preparing part type {label} ({i}/{len(labels)})")
            try:
                self.inspector.prepare(label)
            except Exception as exc:  # noqa: BLE001 - one type that cannot be prepared must not stop the others
                log.warning(f"part type {label} not prepared: {exc}")
                continue
            self.prepared.append(label)
            log.info(f"part type {label} ready in {time.perf_counter() - t0:.1f} s")

    def detect(self, points, part_type: str, part_id: str, *, registered: bool = False) -> InspectionResult:
        """Score ``(N, 3)`` points (already registered onto the part type's reference with
        ``registered``), publish the scored cloud and markers; return the result.
        """
        check_name(part_type, what="part type")
        t0 = time.perf_counter()
        rep = self.inspector.inspect(points, part_type, part_id=part_id, registered=registered)
        records = [StageRecord("detect", time.perf_counter() - t0)]
        vmax = self.p.score_vmax or 2.0 * rep.outcome.threshold or None
        msg = result_msg(rep.outcome, frame_id=self.p.frame_id, stamp=self.get_clock().now().to_msg(),
                         points=rep.points, scores=rep.point_scores, records=records, score_vmax=vmax)
        self.cloud_pub.publish(msg.scored_cloud)
        self.marker_pub.publish(defect_markers(rep.outcome.defects, frame_id=self.p.frame_id,
                                               stamp=msg.header.stamp))
        return msg

    def _points(self, msg: PointCloud2, name: str):
        return cloud_points(msg, name=name, min_points=self.p.min_points, max_points=self.p.max_points)

    def _on_detect(self, req, resp):
        resp.result = self.detect(self._points(req.cloud, "cloud"), req.part_type, req.part_id,
                                  registered=bool(req.registered))
        resp.success, resp.message = True, ""
        return resp

    def _on_cloud(self, msg: PointCloud2):
        if not self.p.default_part_type:
            raise ValueError("cloud received on ~/cloud_in but parameter 'default_part_type' is empty")
        points = self._points(msg, "cloud")  # a malformed cloud is refused here, with the reason logged
        self.result_pub.publish(self.detect(points, self.p.default_part_type, part_id=""))


def main(args=None) -> int:
    return run_node(AnomalyNode, args)
