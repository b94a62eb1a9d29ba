"""Typed, grouped settings of :func:`~.pipeline.register`.

A :class:`RegisterOptions` holds one frozen group per stage of the registration: the working
resolution and source clean-up (:class:`PreprocessOptions`), the global search
(:class:`GlobalOptions`), the fine refinement (:class:`RefineOptions`), the scale estimate
(:class:`ScaleOptions`, used with ``allow_scale`` only) and the acceptance checks
(:class:`AcceptanceOptions`). Every default is the measured default of ``docs/registration.md``.
Each group checks its values when built and raises a ``ValueError`` naming the bad field.

What changes from call to call stays an argument of :func:`~.pipeline.register` (``init``,
``attempts``, ``allow_scale``, ``seed``, ``progress``).

Flat options (``{"min_fitness": 0.8, "voxel_size": 0.002}``, the former keyword arguments of
``register``) go to the group that has a field of that name: :meth:`RegisterOptions.from_options`
and :meth:`RegisterOptions.with_options`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import numpy as np

from ..settings import GroupedSettings
from ..settings import finite as _finite
from ..settings import set_field as _set
from .global_registration import make_global_aligner
from .refine import make_refiner

__all__ = ["PreprocessOptions", "GlobalOptions", "RefineOptions", "ScaleOptions", "AcceptanceOptions",
           "RegisterOptions", "MIN_POINTS"]

#: the fewest points a cloud must have to be registered (also the least ``max_refine_points``).
MIN_POINTS = 10




def _positive_or_none(obj, name: str) -> None:
    value = getattr(obj, name)
    if value is not None:
        v = _finite(value, name)
        if v <= 0:
            raise ValueError(f"{name} must be a positive number or None, got {value}")
        _set(obj, name, v)


def _int_at_least(obj, name: str, least: int) -> None:
    value = getattr(obj, name)
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= least
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    _set(obj, name, int(value))


def _positive_tuple(obj, name: str, *, allow_empty: bool) -> None:
    value = getattr(obj, name)
    try:
        vals = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of positive numbers, got {value!r}") from None
    if (not vals and not allow_empty) or any(not (np.isfinite(x) and x > 0) for x in vals):
        raise ValueError(f"{name} must be {'' if allow_empty else 'a non-empty sequence of '}positive numbers, "
                         f"got {value!r}")
    _set(obj, name, vals)


def _method(obj, name: str, make) -> None:
    value = getattr(obj, name)
    if isinstance(value, Mapping):
        value = dict(value)
        _set(obj, name, value)
    make(value)  # built once here so that an unknown name or a bad constructor argument raises now


@dataclass(frozen=True)
class PreprocessOptions:
    """Working resolution and source clean-up (steps 1-3 of :func:`~.pipeline.register`).

    Attributes:
        voxel_size: working voxel edge of the features and the coarse ICP, in the clouds' units
            (metres); ``None``: the target's bounding-box diagonal / 50. Every other default
            distance is a multiple of it, so parts from 30 to 300 mm need no tuning; > 0.
        outlier_std: statistical outlier removal on the source, ``mu + outlier_std * sigma`` of
            the mean neighbour distance (:func:`.preprocess.remove_statistical_outliers`);
            ``None`` disables it; > 0.
        max_refine_points: the full-resolution source is randomly thinned to this many points
            for the final ICP and the metrics (keeps time bounded on 1M-point scans); >= 10.
    """

    voxel_size: float | None = None
    outlier_std: float | None = 2.0
    max_refine_points: int = 40_000

    def __post_init__(self):
        if self.voxel_size is not None:
            v = _finite(self.voxel_size, "voxel_size")
            if not v > 0:
                raise ValueError(f"voxel_size must be a positive number, got {self.voxel_size}")
            _set(self, "voxel_size", v)
        _positive_or_none(self, "outlier_std")
        _int_at_least(self, "max_refine_points", MIN_POINTS)


@dataclass(frozen=True)
class GlobalOptions:
    """Global search: hypotheses from any initial pose (steps 4 and 6; skipped with ``init``).

    Attributes:
        global_method: ``"fpfh_ransac"`` (default), ``"o3d_ransac"``, ``"fgr"``, ``"identity"``,
            a dict ``{"method": ..., **constructor kwargs}`` or a
            :class:`.global_registration.GlobalAligner` (see :mod:`.global_registration`).
        feature_scales: feature voxel sizes, as multiples of ``voxel_size``, tried in turn until
            a registration passes the checks; FPFH matching that fails at one scale often works
            at another; non-empty, each > 0.
        symmetry_probes: also try half turns of the best coarse pose about the target's
            principal axes (twice: again from a new best), which catches near-symmetric parts
            whose distinguishing feature is small.
        local_search_deg: turn angles [deg] of the local search around the best coarse pose,
            about the moved source's principal axes through its centroid (each angle both
            ways); shifts of 3 voxels along those axes are tried too; ``()`` disables it;
            each > 0.
        local_search_rounds: rounds of local search (stops early when a round improves the best
            coarse Chamfer distance by less than 2 %); >= 0.
        local_search_fitness: the local search runs only when the best refined pose already
            has this inlier fitness (a near miss; gross misses go to the next feature scale);
            in ``[0, 1]``.
    """

    global_method: str | dict = "fpfh_ransac"
    feature_scales: tuple[float, ...] = (1.0, 1.4, 0.7)
    symmetry_probes: bool = True
    local_search_deg: tuple[float, ...] = (10.0, 25.0)
    local_search_rounds: int = 2
    local_search_fitness: float = 0.85

    def __post_init__(self):
        _method(self, "global_method", make_global_aligner)
        _positive_tuple(self, "feature_scales", allow_empty=False)
        _set(self, "symmetry_probes", bool(self.symmetry_probes))
        _positive_tuple(self, "local_search_deg", allow_empty=True)
        _int_at_least(self, "local_search_rounds", 0)
        fit = _finite(self.local_search_fitness, "local_search_fitness")
        if not 0.0 <= fit <= 1.0:
            raise ValueError(f"local_search_fitness must be in [0, 1], got {self.local_search_fitness}")
        _set(self, "local_search_fitness", fit)


@dataclass(frozen=True)
class RefineOptions:
    """Full-resolution refinement of the best coarse poses (step 5).

    Attributes:
        refine_method: ``"point_to_plane"`` (default), ``"generalized"``, ``"point_to_point"``,
            ``"symmetric"``, ``"similarity"``, a dict ``{"method": ..., **constructor kwargs}`` or
            a :class:`.refine.Refiner`; replaced by a 7-dof similarity ICP (clamped to
            ``scale_range``) when ``allow_scale`` unless the refiner estimates a scale itself.
        refine_top: how many distinct coarse poses (more than one voxel apart) get the
            full-resolution refinement per round; the one with the lowest one-sided Chamfer
            distance is kept; >= 1.
    """

    refine_method: str | dict = "point_to_plane"
    refine_top: int = 2

    def __post_init__(self):
        _method(self, "refine_method", make_refiner)
        _int_at_least(self, "refine_top", 1)


@dataclass(frozen=True)
class ScaleOptions:
    """The scale estimate; used only with ``allow_scale``.

    Attributes:
        scale_range: accepted ``(min, max)`` scale, exclusive, with ``0 < min <= 1 <= max``; the
            similarity refinement is clamped to it, so a scale at a bound means the search ran
            into it and the result is not ok.
        min_scale_information: least normalised information on the scale
            (:func:`.metrics.scale_information`); below it the view cannot fix the scale (mostly
            planes) and the result is not ok. Calibrated on trials: views under 0.09 gave scale
            errors of 0.27-16 %, views above it under 0.15 %; >= 0.
    """

    scale_range: tuple[float, float] = (0.8, 1.25)
    min_scale_information: float = 0.09

    def __post_init__(self):
        try:
            lo, hi = (float(x) for x in self.scale_range)
        except (TypeError, ValueError):
            raise ValueError(f"scale_range must be a pair (min, max), got {self.scale_range!r}") from None
        if not 0 < lo <= 1.0 <= hi:
            raise ValueError(f"scale_range must satisfy 0 < min <= 1 <= max, got {self.scale_range}")
        _set(self, "scale_range", (lo, hi))
        info = _finite(self.min_scale_information, "min_scale_information")
        if info < 0:
            raise ValueError(f"min_scale_information must be >= 0, got {self.min_scale_information}")
        _set(self, "min_scale_information", info)


@dataclass(frozen=True)
class AcceptanceOptions:
    """The checks a registration must pass to come back ``ok`` (step 6).

    Attributes:
        inlier_distance: a source point within this distance of the target (in the clouds'
            units) is an inlier of ``fitness`` / ``rmse``; ``None``: ``voxel_size``; > 0.
        min_fitness: least inlier fraction of the source; in ``[0, 1]``.
        max_chamfer: largest one-sided Chamfer distance source -> target (clouds' units);
            ``None``: the target's point spacing (median nearest-neighbour distance, the Chamfer
            floor of a perfect fit) plus ``0.05 * voxel_size`` plus the clouds' combined surface
            noise (:func:`.preprocess.estimate_noise`); > 0.
    """

    inlier_distance: float | None = None
    min_fitness: float = 0.9
    max_chamfer: float | None = None

    def __post_init__(self):
        _positive_or_none(self, "inlier_distance")
        fit = _finite(self.min_fitness, "min_fitness")
        if not 0.0 <= fit <= 1.0:
            raise ValueError(f"min_fitness must be in [0, 1], got {self.min_fitness}")
        _set(self, "min_fitness", fit)
        _positive_or_none(self, "max_chamfer")


#: group attribute of :class:`RegisterOptions` -> its class
GROUPS = {"preprocess": PreprocessOptions, "global_search": GlobalOptions, "refine": RefineOptions,
          "scale": ScaleOptions, "acceptance": AcceptanceOptions}


@dataclass(frozen=True)
class RegisterOptions(GroupedSettings):
    """Every setting of :func:`~.pipeline.register` that stays fixed across calls, by stage.
    Groups may be given as their classes or as dicts of their fields.

    Attributes:
        preprocess: :class:`PreprocessOptions`.
        global_search: :class:`GlobalOptions`.
        refine: :class:`RefineOptions`.
        scale: :class:`ScaleOptions`.
        acceptance: :class:`AcceptanceOptions`.
    """

    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    global_search: GlobalOptions = field(default_factory=GlobalOptions)
    refine: RefineOptions = field(default_factory=RefineOptions)
    scale: ScaleOptions = field(default_factory=ScaleOptions)
    acceptance: AcceptanceOptions = field(default_factory=AcceptanceOptions)

    GROUPS: ClassVar[dict] = GROUPS
    KIND: ClassVar[str] = "registration"
    HINT: ClassVar[str] = " (init, attempts, allow_scale, seed and progress are arguments of register())"
