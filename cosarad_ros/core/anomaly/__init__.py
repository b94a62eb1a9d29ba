"""COSARAD: contrastive patch features and location-aware memory banks for geometric defect detection.

Tarvo, Wan, Chen, "Contrastive Learning on 3D Point Clouds for Robotic Geometric Defect Detection"
(ICRA 2026). Public API::

    from cosarad_ros.core.anomaly import AnomalyDetector, AnomalyScore, DefectRegion
    det = AnomalyDetector.from_config({"method": "cosarad", "model": None})
    det.fit("bracket", templates, cache_dir="/tmp/banks")
    s = det.score(scan, "bracket")

Layout (anomalib-style split): :mod:`.model` and :mod:`.pointnet2` (network, forward only),
:mod:`.training` with :mod:`.augment` and :mod:`.miner` (training loop), :mod:`.patches`,
:mod:`.memory_bank`, :mod:`.scoring`, :mod:`.detector` (inference object; its grouped settings in
:mod:`.config`, its result and registry types in :mod:`.parts`, bank fitting and caching in
:mod:`.bank_fitting`, view-matched banks in :mod:`.view_matching`), :mod:`.baselines`
(FPFH and global-bank ablations), :mod:`.evaluation` (metrics and benchmark protocol).
Heavy modules (torch) are imported lazily by the objects that need them.
"""
from .config import (
    BankConfig,
    CalibrationConfig,
    DetectorConfig,
    PatchConfig,
    RegionConfig,
    RegistrationConfig,
    ScoringConfig,
)
from .detector import (
    METHODS,
    AnomalyDetector,
    AnomalyScore,
    DefectRegion,
    PartBank,
    calibrate_threshold,
    find_defect_regions,
)
from .deviation import DeviationBank, DeviationDetector
from .scoring import aggregate, cohens_d, local_effect_sizes, point_scores_from_patches

#: every detector method: the patch-feature ones of :class:`AnomalyDetector` and ``deviation``
DETECTOR_METHODS = (*METHODS, "deviation")

#: keys that only concern the learned network; dropped for ``deviation`` so one config dict
#: (CLI, node, benchmark) serves every method
_NETWORK_KEYS = ("model", "num_threads", "device", "batch_size")


def make_detector(config: dict | None = None):
    """The detector named by ``config["method"]`` (default ``cosarad``), built from the config's
    other keys (flat option names, see :meth:`AnomalyDetector.from_config` and
    :class:`DeviationDetector`; unknown keys are refused).

    Returns:
        :class:`AnomalyDetector` (``cosarad``, ``fpfh``, ``global-bank``) or
        :class:`DeviationDetector` (``deviation``); both offer ``fit`` / ``has_part`` / ``score``.

    Raises:
        ValueError: unknown method or keys.
    """
    cfg = dict(config or {})
    method = cfg.get("method", "cosarad")
    if method not in DETECTOR_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(DETECTOR_METHODS)}")
    if method == "deviation":
        for k in _NETWORK_KEYS:
            cfg.pop(k, None)
        return DeviationDetector.from_config(cfg)
    return AnomalyDetector.from_config(cfg)


__all__ = [
    "AnomalyDetector", "AnomalyScore", "DefectRegion", "PartBank", "METHODS", "calibrate_threshold",
    "find_defect_regions", "aggregate", "cohens_d", "local_effect_sizes", "point_scores_from_patches",
    "DeviationBank", "DeviationDetector", "DETECTOR_METHODS", "make_detector", "DetectorConfig", "PatchConfig",
    "BankConfig", "ScoringConfig", "CalibrationConfig", "RegionConfig", "RegistrationConfig",
]
