"""COSARAD: contrastive patch features and location-aware memory banks for geometric defect detection.

Tarvo, Wan, Chen, "Contrastive Learning on 3D Point Clouds for Robotic Geometric Defect Detection"
(ICRA 2026). Public API::

    from cosarad_ros.core.anomaly import AnomalyDetector, AnomalyScore, DefectRegion
    det = AnomalyDetector.from_config({"method": "cosarad", "model": None})
    det.fit("bracket", templates, cache_dir="/tmp/banks")
    s = det.score(scan, "bracket")

Layout (anomalib-style split): :mod:`.model` and :mod:`.pointnet2` (network, forward only),
:mod:`.training` with :mod:`.augment` and :mod:`.miner` (training loop), :mod:`.patches`,
:mod:`.memory_bank`, :mod:`.scoring`, :mod:`.detector` (inference object), :mod:`.baselines`
(FPFH and global-bank ablations), :mod:`.evaluation` (metrics and benchmark protocol).
Heavy modules (torch) are imported lazily by the objects that need them.
"""
from .detector import (METHODS, AnomalyDetector, AnomalyScore, DefectRegion, PartBank, calibrate_threshold,
                       find_defect_regions)
from .scoring import aggregate, cohens_d, local_effect_sizes, point_scores_from_patches

__all__ = [
    "AnomalyDetector", "AnomalyScore", "DefectRegion", "PartBank", "METHODS", "calibrate_threshold",
    "find_defect_regions", "aggregate", "cohens_d", "local_effect_sizes", "point_scores_from_patches",
]
