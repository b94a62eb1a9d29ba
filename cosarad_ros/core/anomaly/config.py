"""Typed, grouped settings of :class:`~.detector.AnomalyDetector`.

A :class:`DetectorConfig` holds one frozen group per stage of the pipeline (patches, banks,
scoring, calibration, defect regions, registration); every field's default is the best measured
setting (see ``docs/anomaly.md`` and ``CHANGELOG.md``). Each group checks its values when built
and raises a ``ValueError`` naming the bad field.

Flat options (the keys of a config dict, CLI ``--config`` JSON or benchmark config, e.g.
``{"num_patches": 64, "threshold": 5.0}``) go to the group that has a field of that name:
:meth:`DetectorConfig.from_options` and :meth:`DetectorConfig.with_options`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..settings import GroupedSettings
from ..settings import finite as _finite
from ..settings import set_field as _set
from .parts import _check_slides
from .scoring import AGGREGATORS

__all__ = ["PatchConfig", "BankConfig", "ScoringConfig", "CalibrationConfig", "RegionConfig", "RegistrationConfig",
           "DetectorConfig", "REMOVED_OPTIONS"]

#: options that were measured worse and removed -> what remains instead (named in the error a
#: config that still sets them gets)
REMOVED_OPTIONS = {
    "template_crop": "templates are always cut to the scan's support (the former default 'support')",
    "bank_views": "banks hold the full templates only (the former default with the support crop)",
    "full_coverage": "it only applied to the removed template_crop='views'",
    "view_points": "it only applied to the removed template_crop='views'",
    "resample": "patches are always drawn at random (the former default 'random')",
}




@dataclass(frozen=True)
class PatchConfig:
    """How scans and templates are cut into patches (steps 2-3 of the pipeline).

    Attributes:
        patch_radius: ``R`` in metres; ``None``: ``patch_radius_rel`` x the reference template's
            bounding-box diagonal. Clouds are scaled by ``2 / R`` internally (``R = 2``).
        patch_radius_rel: see ``patch_radius``; in ``(0, 1)``.
        num_patches: patch centres (farthest point sampling on the reference template); >= 2.
        patch_points: points per resampled patch (512, the paper); >= 16. Each point carries a
            fixed random key and a patch keeps its lowest-key points.
        partial_scans: scans are partial views: skip test patches with fewer than
            ``min_patch_fraction`` x the mean patch size (``|P|min``), and calibrate on
            simulated partial views; False: full scans (``|P|min = 0``).
        min_patch_fraction: see ``partial_scans`` (0.5 in the paper); in ``[0, 1)``.
    """

    patch_radius: float | None = None
    patch_radius_rel: float = 0.06
    num_patches: int = 256
    patch_points: int = 512
    partial_scans: bool = True
    min_patch_fraction: float = 0.5

    def __post_init__(self):
        if self.patch_radius is not None:
            r = _finite(self.patch_radius, "patch_radius")
            if r <= 0:
                raise ValueError(f"patch_radius must be a positive number of metres or None, got {self.patch_radius}")
            _set(self, "patch_radius", r)
        rel = _finite(self.patch_radius_rel, "patch_radius_rel")
        if not 0 < rel < 1:
            raise ValueError(f"patch_radius_rel must be in (0, 1), got {self.patch_radius_rel}")
        _set(self, "patch_radius_rel", rel)
        if int(self.num_patches) < 2:
            raise ValueError(f"num_patches must be >= 2, got {self.num_patches}")
        if int(self.patch_points) < 16:
            raise ValueError(f"patch_points must be >= 16, got {self.patch_points}")
        _set(self, "num_patches", int(self.num_patches))
        _set(self, "patch_points", int(self.patch_points))
        _set(self, "partial_scans", bool(self.partial_scans))
        frac = _finite(self.min_patch_fraction, "min_patch_fraction")
        if not 0 <= frac < 1:
            raise ValueError(f"min_patch_fraction must be in [0, 1), got {self.min_patch_fraction}")
        _set(self, "min_patch_fraction", frac)


@dataclass(frozen=True)
class BankConfig:
    """What the memory banks hold and how they are cut to a scan (step 4; an addition to the paper).

    Attributes:
        view_matching: cut the templates to what a partial scan shows before comparing: each
            full template keeps its points within ``support_tolerance x R`` of a scan point,
            and the bank of a location holds those ``G`` cut template patches (a template patch
            the cut leaves whole keeps its fitted feature). Material a defect moved by less
            than the tolerance stays in the templates. False: compare with the full templates.
        support_tolerance: see ``view_matching``, in patch radii; > 0.
        max_template_points: templates are randomly thinned to this many points; >= 1.
    """

    view_matching: bool = True
    support_tolerance: float = 0.25
    max_template_points: int = 60_000

    def __post_init__(self):
        _set(self, "view_matching", bool(self.view_matching))
        tol = _finite(self.support_tolerance, "support_tolerance")
        if tol <= 0:
            raise ValueError(f"support_tolerance must be > 0, got {self.support_tolerance}")
        _set(self, "support_tolerance", tol)
        if int(self.max_template_points) < 1:
            raise ValueError(f"max_template_points must be >= 1, got {self.max_template_points}")
        _set(self, "max_template_points", int(self.max_template_points))


@dataclass(frozen=True)
class ScoringConfig:
    """Patch, object and point scores (steps 6-8).

    Attributes:
        aggregator: object score from the patch scores: ``"max"``, ``"topk_sum"`` or ``"topk_mean"``.
        top_k: ``k`` of the top-k aggregators; >= 1.
        min_std: floor of the pooled standard deviation of Cohen's d (feature-distance units); >= 0.
        std_prior_weight: shrink each location's pooled variance toward the median over all
            locations with this many pseudo degrees of freedom (an addition to the paper;
            :func:`.scoring.local_effect_sizes`); 0: the paper's per-location value.
        point_deviation_weight: per-point scores add this many score units per
            ``deviation_tolerance`` of the point's own deviation from the templates
            (:func:`.scoring.add_point_deviation`; an addition to the paper); 0: the paper's
            Gaussian-weighted patch score alone. Object scores and thresholds are unchanged.
        deviation_tolerance: see ``point_deviation_weight`` [m]; > 0.
    """

    aggregator: str = "max"
    top_k: int = 3
    min_std: float = 0.02
    std_prior_weight: float = 32.0
    point_deviation_weight: float = 1.0
    deviation_tolerance: float = 0.25e-3

    def __post_init__(self):
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {self.aggregator!r}; choose from {AGGREGATORS}")
        if int(self.top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        _set(self, "top_k", int(self.top_k))
        for name in ("min_std", "std_prior_weight", "point_deviation_weight"):
            v = _finite(getattr(self, name), name)
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
            _set(self, name, v)
        tol = _finite(self.deviation_tolerance, "deviation_tolerance")
        if tol <= 0:
            raise ValueError(f"deviation_tolerance must be > 0, got {self.deviation_tolerance}")
        _set(self, "deviation_tolerance", tol)


@dataclass(frozen=True)
class CalibrationConfig:
    """The object threshold (see the :mod:`.detector` module docstring).

    Attributes:
        false_alarm_rate: target false-alarm rate of the calibrated object threshold; in ``(0, 1)``.
        threshold: fixed object threshold (overrides calibration); ``None``: calibrated.
        calibration_views: simulated partial views per template for threshold calibration
            (``partial_scans`` only; 0: calibrate on full templates' leave-one-out scores); >= 0.
    """

    false_alarm_rate: float = 0.01
    threshold: float | None = None
    calibration_views: int = 2

    def __post_init__(self):
        far = _finite(self.false_alarm_rate, "false_alarm_rate")
        if not 0 < far < 1:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {self.false_alarm_rate}")
        _set(self, "false_alarm_rate", far)
        if self.threshold is not None:
            _set(self, "threshold", _finite(self.threshold, "threshold"))
        if int(self.calibration_views) < 0:
            raise ValueError(f"calibration_views must be >= 0, got {self.calibration_views}")
        _set(self, "calibration_views", int(self.calibration_views))


@dataclass(frozen=True)
class RegionConfig:
    """Defect regions (connected groups of points above the per-point threshold).

    Attributes:
        min_region_points: smallest defect region reported; >= 1.
    """

    min_region_points: int = 10

    def __post_init__(self):
        if int(self.min_region_points) < 1:
            raise ValueError(f"min_region_points must be >= 1, got {self.min_region_points}")
        _set(self, "min_region_points", int(self.min_region_points))


@dataclass(frozen=True)
class RegistrationConfig:
    """Scan (and template) registration onto the reference template (steps 1-2).

    Attributes:
        register: register scans and templates onto the reference (False: they are already in
            its frame).
        registration_attempts: global registration hypotheses per registration; >= 1.
        symmetry_check: after registration (or with a given ``transform``), test the other poses
            a near-symmetric part allows that fit the reference template about as well
            (:func:`.template_align.symmetry_candidates`) against *all* good templates, and keep
            the one whose points lie closest to them (mean deviation, :mod:`.surfaces`, capped at
            twice the templates' point spacing) when it is lower by more than
            ``symmetry_min_gain`` (relative). The reference alone cannot tell a block's true pose
            from its half-turn when the view sees little of what breaks the symmetry; the
            templates together can. An addition to the paper; needs 2 or more templates.
        symmetry_min_gain: see ``symmetry_check``; in ``[0, 1)``.
        symmetry_slides: with ``symmetry_check``, also test the placements that slide a small
            view against either end of the part on each principal axis where it is shorter than
            ``symmetry_slides`` x the part (a view of one corner of a block fits every corner);
            ``0`` turns them off; in ``[0, 1]``. An addition to the paper.
    """

    register: bool = True
    registration_attempts: int = 3
    symmetry_check: bool = True
    symmetry_min_gain: float = 0.03
    symmetry_slides: float = 0.9

    def __post_init__(self):
        _set(self, "register", bool(self.register))
        if int(self.registration_attempts) < 1:
            raise ValueError(f"registration_attempts must be >= 1, got {self.registration_attempts}")
        _set(self, "registration_attempts", int(self.registration_attempts))
        _set(self, "symmetry_check", bool(self.symmetry_check))
        gain = float(self.symmetry_min_gain)
        if not (np.isfinite(gain) and 0 <= gain < 1):
            raise ValueError(f"symmetry_min_gain must be in [0, 1), got {self.symmetry_min_gain}")
        _set(self, "symmetry_min_gain", gain)
        _set(self, "symmetry_slides", _check_slides(self.symmetry_slides))


#: group attribute of :class:`DetectorConfig` -> its class
GROUPS = {"patches": PatchConfig, "banks": BankConfig, "scoring": ScoringConfig, "calibration": CalibrationConfig,
          "regions": RegionConfig, "registration": RegistrationConfig}


@dataclass(frozen=True)
class DetectorConfig(GroupedSettings):
    """Every setting of :class:`~.detector.AnomalyDetector` that shapes its banks and scores,
    by stage. Groups may be given as their classes or as dicts of their fields.

    Attributes:
        patches: :class:`PatchConfig`.
        banks: :class:`BankConfig`.
        scoring: :class:`ScoringConfig`.
        calibration: :class:`CalibrationConfig`.
        regions: :class:`RegionConfig`.
        registration: :class:`RegistrationConfig`.
    """

    patches: PatchConfig = field(default_factory=PatchConfig)
    banks: BankConfig = field(default_factory=BankConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)

    GROUPS: ClassVar[dict] = GROUPS
    KIND: ClassVar[str] = "detector"
    REMOVED: ClassVar[dict] = REMOVED_OPTIONS
