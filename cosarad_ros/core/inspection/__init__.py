"""The inspection application: one part through the cell, from views to verdict.

* :mod:`.outcome` -- stage timing, the verdict rule, ``results.json`` and the summary table;
* :mod:`.pipeline` -- the inspection sequence over a :class:`~.pipeline.Cell`;
* :mod:`.fusion` -- views -> one clean cloud in the part frame;
* :mod:`.detection` -- part-level detector: banks fitted from template scans or CAD;
* :mod:`.templates` -- good templates simulated from CAD through the cell's own views and sensor;
* :mod:`.production` -- deterministic production runs of good and defective parts.

The verdict vocabulary is re-exported here (``from cosarad_ros.core.inspection import PASS``).
"""
from .outcome import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    VERDICTS,
    DefectSummary,
    InspectionOutcome,
    StageClock,
    StageFailed,
    StageRecord,
    decide_verdict,
    summary_table,
    write_results_json,
)

__all__ = ["PASS", "FAIL", "INCONCLUSIVE", "VERDICTS", "StageRecord", "StageFailed", "StageClock",
           "DefectSummary", "InspectionOutcome", "decide_verdict", "summary_table", "write_results_json"]
