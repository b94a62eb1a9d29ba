"""Build the inspection output messages from core results: ``InspectionResult``, the scored
cloud (``x y z rgb anomaly_score``) and the defect ``MarkerArray``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from cosarad_ros.core.inspection.outcome import VERDICTS, DefectSummary, InspectionOutcome, StageRecord
from cosarad_ros.core.visualize import scores_to_rgb
from cosarad_ros.msg import Defect, InspectionResult, QualityReport, StageTiming
from cosarad_ros.ros.conversions import xyz_to_pointcloud2

__all__ = ["scored_cloud_msg", "defect_msgs", "quality_msg", "timing_msgs", "result_msg", "defect_markers",
           "outcome_from_msg"]


def scored_cloud_msg(points, scores, *, frame_id: str, stamp=None, vmax: float | None = None):
    """Cloud with packed ``rgb`` (for RViz's RGB8 transformer) and raw float32 ``anomaly_score``
    (for its Intensity transformer).
    """
    scores = np.asarray(scores, dtype=np.float32)
    rgb = scores_to_rgb(scores, vmin=0.0 if vmax is not None else None, vmax=vmax)
    return xyz_to_pointcloud2(np.asarray(points, np.float32), frame_id=frame_id, stamp=stamp,
                              rgb=rgb, scores=scores)


def defect_msgs(defects: Iterable[DefectSummary]) -> list[Defect]:
    out = []
    for d in defects:
        c, e = d.centroid, d.extent
        out.append(Defect(type=d.type, centroid=Point(x=float(c[0]), y=float(c[1]), z=float(c[2])),
                          extent=Vector3(x=float(e[0]), y=float(e[1]), z=float(e[2])),
                          score=float(d.score), point_count=int(d.point_count)))
    return out


def quality_msg(q) -> QualityReport:
    """From a dict or an object with the ISO 25012 attributes (missing ones stay 0)."""
    if q is None:
        return QualityReport()
    get = (lambda k, d=0.0: q.get(k, d)) if isinstance(q, dict) else (lambda k, d=0.0: getattr(q, k, d))
    return QualityReport(accuracy=float(get("accuracy")), consistency=float(get("consistency")),
                         completeness=float(get("completeness")), validity=float(get("validity")),
                         uniqueness=float(get("uniqueness")), total=float(get("total")),
                         grade=str(get("grade", "")))


def timing_msgs(records: Sequence[StageRecord]) -> list[StageTiming]:
    return [StageTiming(stage=r.stage, seconds=float(r.seconds), ok=bool(r.ok), message=r.message)
            for r in records]


def result_msg(outcome: InspectionOutcome, *, frame_id: str, stamp=None, points=None, scores=None,
               records: Sequence[StageRecord] = (), quality=None, score_vmax: float | None = None) -> InspectionResult:
    msg = InspectionResult()
    msg.header = Header(frame_id=frame_id)
    if stamp is not None:
        msg.header.stamp = stamp
    msg.part_id, msg.part_type = outcome.part_id, outcome.part_type
    msg.verdict = VERDICTS.index(outcome.verdict)
    msg.verdict_text, msg.reason = outcome.verdict, outcome.reason
    msg.object_score = float(np.nan_to_num(outcome.object_score, nan=0.0))
    msg.threshold = float(np.nan_to_num(outcome.threshold, nan=0.0))
    if points is not None and scores is not None and len(points):
        msg.scored_cloud = scored_cloud_msg(points, scores, frame_id=frame_id, stamp=msg.header.stamp,
                                            vmax=score_vmax)
    msg.defects = defect_msgs(outcome.defects)
    msg.quality = quality_msg(quality if quality is not None else outcome.quality or None)
    msg.registration_fitness = float(np.nan_to_num(outcome.registration_fitness, nan=0.0))
    msg.registration_rmse = float(np.nan_to_num(outcome.registration_rmse, nan=0.0))
    msg.coverage = float(np.nan_to_num(outcome.coverage, nan=0.0))
    msg.timings = timing_msgs(records)
    return msg


def outcome_from_msg(msg: InspectionResult) -> InspectionOutcome:
    """Back from the message (used by the demo and tests to summarise what was published)."""
    seconds: dict[str, float] = {}
    for t in msg.timings:
        seconds[t.stage] = seconds.get(t.stage, 0.0) + t.seconds
    q = msg.quality
    return InspectionOutcome(
        part_id=msg.part_id, part_type=msg.part_type, verdict=msg.verdict_text or VERDICTS[msg.verdict],
        reason=msg.reason, object_score=float(msg.object_score), threshold=float(msg.threshold),
        defects=tuple(DefectSummary(d.type, (d.centroid.x, d.centroid.y, d.centroid.z),
                                    (d.extent.x, d.extent.y, d.extent.z), float(d.score), int(d.point_count))
                      for d in msg.defects),
        stage_seconds=seconds, registration_fitness=float(msg.registration_fitness),
        registration_rmse=float(msg.registration_rmse), coverage=float(msg.coverage),
        quality={k: getattr(q, k) for k in ("accuracy", "consistency", "completeness", "validity",
                                            "uniqueness", "total", "grade")})


def defect_markers(defects: Sequence[DefectSummary], *, frame_id: str, stamp=None,
                   ns: str = "defects") -> MarkerArray:
    """One translucent red box and one text label per defect; a DELETEALL first clears the
    previous part's markers.
    """
    arr = MarkerArray()
    clear = Marker(action=Marker.DELETEALL, ns=ns)
    clear.header.frame_id = frame_id
    arr.markers.append(clear)
    for i, d in enumerate(defects):
        header = Header(frame_id=frame_id)
        if stamp is not None:
            header.stamp = stamp
        c = np.asarray(d.centroid, float)
        e = np.maximum(np.asarray(d.extent, float), 0.002)
        box = Marker(header=header, ns=ns, id=2 * i, type=Marker.CUBE, action=Marker.ADD)
        box.pose.position = Point(x=c[0], y=c[1], z=c[2])
        box.pose.orientation.w = 1.0
        box.scale = Vector3(x=e[0] * 1.2, y=e[1] * 1.2, z=e[2] * 1.2)
        box.color = ColorRGBA(r=1.0, g=0.1, b=0.1, a=0.45)
        text = Marker(header=header, ns=ns, id=2 * i + 1, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.pose.position = Point(x=c[0], y=c[1], z=c[2] + e[2] * 0.6 + 0.01)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.01
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = f"{d.type} {d.score:.2f}"
        arr.markers.extend([box, text])
    return arr
