"""``register``: global alignment + ICP refinement + checks, in one call.

Pipeline (scan to scan or scan to CAD, any initial pose):

1. Validation and size-relative defaults: the voxel size is the target's bounding-box diagonal / 50
   unless given, and every other distance is a multiple of it, so parts from 30 to 300 mm need no
   tuning.
2. Source clean-up: statistical outlier removal (Kwon et al., Electronics 2025).
3. Voxel down-sampling, normals and FPFH features of both clouds.
4. ``attempts`` global hypotheses (FPFH + RANSAC by default, a different seed each), each refined
   coarsely with point-to-plane ICP on the down-sampled clouds; then the best one is also tried
   turned half a turn about each principal axis of the target, which catches near-symmetric parts
   whose distinguishing feature is small.
5. The best few distinct coarse poses are refined on the full-resolution source with the chosen
   method (point-to-plane, generalized ICP, ..., or 7-dof similarity ICP when ``allow_scale``), and
   the one with the lowest one-sided Chamfer distance from the source to the target is kept, as in
   COSARAD.
6. Checks: inlier fitness, Chamfer distance, and the scale range. A registration that fails any of
   them comes back with ``ok=False`` and a reason; its transform is still the best found, but
   callers must not use it as a pose.

The settings of each step are grouped in :class:`~.options.RegisterOptions`; ``register`` itself
takes only what changes from call to call (``init``, ``attempts``, ``allow_scale``, ``seed``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

import numpy as np
from tqdm.auto import tqdm

from ..geometry import as_transform, rotation_angle_deg
from .cloud import Cloud, as_cloud_array, readonly_memo
from .global_registration import compute_features, make_global_aligner
from .metrics import constraint_strength, scale_information, score_alignment
from .options import MIN_POINTS, PreprocessOptions, RegisterOptions
from .preprocess import (
    estimate_noise,
    estimate_normals,
    part_size,
    point_spacing,
    remove_statistical_outliers,
    voxel_down_sample,
)
from .refine import PointToPlaneICP, SimilarityICP, make_refiner
from .symmetry import symmetry_hypotheses

__all__ = ["RegistrationResult", "RegisterOptions", "register", "MIN_POINTS"]


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of :func:`register`.

    Attributes:
        transform: ``(4, 4)`` maps source points onto the target (``s R p + t``; includes the
            scale when ``allow_scale``).
        scale: the scale factor ``s`` (``1.0`` for rigid registration).
        fitness: fraction of source points within ``inlier_distance`` of the target.
        rmse: RMS distance of those inliers.
        chamfer: one-sided Chamfer distance, mean nearest-neighbour distance source -> target.
        attempts: number of hypotheses refined (global attempts + symmetry probes).
        ok: the registration passed every check.
        reason: why it failed (``""`` when ``ok``).
        voxel_size: the voxel size used (all default thresholds are multiples of it).
        inlier_distance: the distance used for ``fitness`` / ``rmse``.
        max_chamfer: the Chamfer threshold applied.
        runner_up_chamfer: Chamfer of the best pose that differs from the chosen one (``inf`` when
            there is none); close to ``chamfer`` for symmetric parts, where the pose is ambiguous.
        time_s: wall time.
    """

    transform: np.ndarray
    scale: float
    fitness: float
    rmse: float
    chamfer: float
    attempts: int
    ok: bool
    reason: str
    voxel_size: float = 0.0
    inlier_distance: float = 0.0
    max_chamfer: float = 0.0
    runner_up_chamfer: float = float("inf")
    time_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-friendly dict (``transform`` as a nested list)."""
        return {
            "transform": np.asarray(self.transform).tolist(),
            "scale": float(self.scale),
            "fitness": float(self.fitness),
            "rmse": float(self.rmse) if np.isfinite(self.rmse) else None,
            "chamfer": float(self.chamfer),
            "ok": bool(self.ok),
            "reason": self.reason,
            "attempts": int(self.attempts),
            "voxel_size": float(self.voxel_size),
            "inlier_distance": float(self.inlier_distance),
            "max_chamfer": float(self.max_chamfer),
            "runner_up_chamfer": float(self.runner_up_chamfer) if np.isfinite(self.runner_up_chamfer) else None,
            "time_s": float(self.time_s),
        }


def _pose_distance(A: np.ndarray, B: np.ndarray, extent: float) -> float:
    """Largest displacement (approx.) between two poses over an object of size ``extent``."""
    ang = np.deg2rad(rotation_angle_deg(A[:3, :3] / np.cbrt(np.linalg.det(A[:3, :3])),
                                        B[:3, :3] / np.cbrt(np.linalg.det(B[:3, :3]))))
    return float(np.linalg.norm(A[:3, 3] - B[:3, 3]) + ang * extent)


def _turns(T: np.ndarray, source_points: np.ndarray, angles_deg, shifts=()) -> list[np.ndarray]:
    """``F @ T`` for turns ``F`` of +-angle about each principal axis of the moved source, through
    its centroid, and for shifts of +-``shifts`` along those axes.
    """
    moved = source_points @ T[:3, :3].T + T[:3, 3]
    c = moved.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov((moved - c).T))
    out = []
    for k in range(3):
        a = vecs[:, k]
        K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        for deg in angles_deg:
            for ang in (np.deg2rad(deg), -np.deg2rad(deg)):
                R = np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K
                F = np.eye(4)
                F[:3, :3] = R
                F[:3, 3] = c - R @ c
                out.append(F @ T)
        for d in shifts:
            for sign in (1.0, -1.0):
                F = np.eye(4)
                F[:3, 3] = sign * d * a
                out.append(F @ T)
    return out


def _scale_of(T: np.ndarray) -> float:
    return float(np.cbrt(np.linalg.det(T[:3, :3])))


class _Target:
    """A target cloud's preprocessing: spacing, noise, and per working voxel its down-sampled and
    full-resolution :class:`Cloud` (normals, k-d tree) and FPFH features. Kept for a read-only
    target array (:func:`_prepared_target`), so registering many scans onto one reference
    prepares the reference once.
    """

    def __init__(self, target):
        self.points, self.normals = as_cloud_array(target, name="target")
        if not self.points.flags.writeable:  # Open3D's vectors refuse read-only buffers
            self.points = self.points.copy()
        self._levels: dict = {}
        self._features: dict = {}

    @cached_property
    def size(self) -> float:
        return part_size(self.points)

    @cached_property
    def spacing(self) -> float:
        return point_spacing(self.points)

    @cached_property
    def noise(self) -> float:
        return float(estimate_noise(self.points))

    def level(self, v: float) -> tuple[Cloud, Cloud]:
        """``(down-sampled, full-resolution)`` clouds for working voxel ``v``."""
        if v not in self._levels:
            r = 2.0 * v
            down, _ = voxel_down_sample(self.points, v)
            if len(down) < MIN_POINTS:
                raise ValueError(f"target has only {len(down)} points after {v:.4g} voxel down-sampling; "
                                 f"give a smaller voxel_size or a denser cloud")
            self._levels[v] = (Cloud(down, estimate_normals(down, radius=r), normal_radius=r),
                               Cloud(self.points, self.normals, normal_radius=r))
        return self._levels[v]

    def features(self, v: float, scale: float):
        key = (v, scale)
        if key not in self._features:
            fv = scale * v
            if scale == 1.0:
                c = self.level(v)[0]
                self._features[key] = compute_features(c.points, c.normals, voxel_size=fv)
            else:
                pts, _ = voxel_down_sample(self.points, fv)
                if len(pts) < MIN_POINTS:
                    raise ValueError(f"too few points at feature voxel {fv:.4g}")
                self._features[key] = compute_features(pts, estimate_normals(pts, radius=2.0 * fv), voxel_size=fv)
        return self._features[key]


def _prepared_target(target) -> _Target:
    """The :class:`_Target` of ``target``; kept with a read-only numpy array
    (:func:`.cloud.readonly_memo`), prepared afresh for anything else.
    """
    memo = readonly_memo(target)
    prep = memo.get("registration_target") if memo is not None else None
    if prep is None:
        prep = _Target(target)
        if memo is not None:
            memo["registration_target"] = prep
    return prep


class _Problem:
    """The clouds of one registration at the working resolution, with the ICP stages."""

    def __init__(self, src_pts, src_n, target: _Target, *, v: float, inlier_distance: float, coarse_refiner,
                 refiner):
        self.v = v
        # a scale degree of freedom needs a wider first step: the scale error moves points far away
        self.fine_schedule = (2.0 * v, v, 0.5 * v) if refiner.estimates_scale else (v, 0.5 * v)
        self.inlier_distance = inlier_distance
        self.coarse_refiner = coarse_refiner
        self.refiner = refiner
        r = 2.0 * v
        src_down, _ = voxel_down_sample(src_pts, v)
        if len(src_down) < MIN_POINTS:
            raise ValueError(f"source has only {len(src_down)} points after {v:.4g} voxel down-sampling; "
                             f"give a smaller voxel_size or a denser cloud")
        self.target = target
        self.tgt_c, self.tgt_full = target.level(v)
        self.src_c = Cloud(src_down, estimate_normals(src_down, radius=r), normal_radius=r)
        self.src_full = Cloud(src_pts, src_n, normal_radius=r)
        self.extent = part_size(src_pts)

    def features(self, scale: float):
        """FPFH features of both clouds at voxel ``scale * v``."""
        fv = scale * self.v
        if scale == 1.0:
            src = compute_features(self.src_c.points, self.src_c.normals, voxel_size=fv)
        else:
            pts, _ = voxel_down_sample(self.src_full.points, fv)
            if len(pts) < MIN_POINTS:
                raise ValueError(f"too few points at feature voxel {fv:.4g}")
            src = compute_features(pts, estimate_normals(pts, radius=2.0 * fv), voxel_size=fv)
        return src, self.target.features(self.v, scale)

    def coarse(self, T0: np.ndarray) -> tuple[np.ndarray, float]:
        """Coarse-to-fine ICP on the down-sampled clouds; returns ``(T, chamfer of the down-sampled source)``."""
        T = T0
        try:
            for dist in (2.0 * self.v, self.v):
                T = self.coarse_refiner.refine(self.src_c, self.tgt_c, T, max_distance=dist)
        except ValueError:
            T = T0  # too few correspondences for the similarity step: keep the hypothesis as is
        return T, self.score(self.src_c.points, T).chamfer

    def fine(self, T: np.ndarray):
        """Full-resolution refinement; ``None`` when the refiner finds too few correspondences."""
        try:
            for dist in self.fine_schedule:
                T = self.refiner.refine(self.src_full, self.tgt_full, T, max_distance=dist)
        except ValueError:
            return None
        return T, self.score(self.src_full.points, T)

    def score(self, points, T):
        return score_alignment(points, self.tgt_full.tree, T, inlier_distance=self.inlier_distance)


@dataclass(frozen=True)
class _Limits:
    """The working voxel and the thresholds of one registration, in the clouds' units."""

    v: float
    inlier_distance: float
    max_chamfer: float
    spacing: float
    noise: float


def _as_options(options) -> RegisterOptions:
    if options is None:
        return RegisterOptions()
    if isinstance(options, RegisterOptions):
        return options
    if isinstance(options, Mapping):
        return RegisterOptions.from_options(options)
    raise ValueError(f"options must be a RegisterOptions, a dict of flat options or None, got {type(options).__name__}")


def _limits(src_pts: np.ndarray, prepared: _Target, opts: RegisterOptions) -> _Limits:
    """The working voxel (default: target diagonal / 50) and the distances derived from it."""
    size = prepared.size
    voxel_size = size / 50.0 if opts.preprocess.voxel_size is None else opts.preprocess.voxel_size
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number, got {voxel_size}")
    v = float(voxel_size)
    acc = opts.acceptance
    inlier_distance = v if acc.inlier_distance is None else float(acc.inlier_distance)
    spacing = prepared.spacing
    noise = float(np.hypot(estimate_noise(src_pts), prepared.noise))
    max_chamfer = spacing + 0.05 * v + noise if acc.max_chamfer is None else float(acc.max_chamfer)
    if not inlier_distance > 0 or not max_chamfer > 0:
        raise ValueError("inlier_distance and max_chamfer must be > 0")
    return _Limits(v=v, inlier_distance=inlier_distance, max_chamfer=max_chamfer, spacing=spacing, noise=noise)


def _fine_refiner(opts: RegisterOptions, allow_scale: bool):
    """The full-resolution refiner: ``refine_method``, or similarity ICP when a scale is estimated."""
    refiner = make_refiner(opts.refine.refine_method)
    if allow_scale and not refiner.estimates_scale:
        refiner = SimilarityICP(max_iterations=max(refiner.max_iterations, 60), scale_bounds=opts.scale.scale_range)
    return refiner


def _clean_source(src_pts: np.ndarray, src_n, pre: PreprocessOptions, seed: int):
    """Statistical outlier removal, then a random subset of at most ``max_refine_points``."""
    if pre.outlier_std is not None and len(src_pts) > 20:
        keep = remove_statistical_outliers(src_pts, std_ratio=pre.outlier_std)
        src_pts = src_pts[keep]
        src_n = None if src_n is None else src_n[keep]
    if len(src_pts) > pre.max_refine_points:
        sel = np.random.default_rng(seed).choice(len(src_pts), size=pre.max_refine_points, replace=False)
        src_pts = src_pts[sel]
        src_n = None if src_n is None else src_n[sel]
    return src_pts, src_n


class _Search:
    """The hypotheses of one registration: coarse ICP, symmetry probes, local search and the
    full-resolution refinement; ``finals`` holds the refined ``(T, AlignmentScore)`` pairs, best
    (lowest Chamfer distance) first.
    """

    def __init__(self, prob: _Problem, opts: RegisterOptions, *, max_chamfer: float, allow_scale: bool):
        self.prob = prob
        self.opts = opts
        self.max_chamfer = max_chamfer
        self.allow_scale = allow_scale
        self.n_tried = 0
        self.finals: list = []
        self.refined_from: list[np.ndarray] = []

    def failures(self, T: np.ndarray, sc) -> list[str]:
        """Why the pose ``T`` with score ``sc`` is not ok (empty when it passes every check)."""
        prob, min_fitness = self.prob, self.opts.acceptance.min_fitness
        lo_s, hi_s = self.opts.scale.scale_range
        out = []
        if sc.fitness < min_fitness:
            out.append(f"fitness {sc.fitness:.3f} < {min_fitness:.3f} (inliers within {prob.inlier_distance:.4g})")
        if sc.chamfer > self.max_chamfer:
            out.append(f"chamfer {sc.chamfer:.4g} > {self.max_chamfer:.4g}")
        if self.allow_scale and not lo_s < _scale_of(T) < hi_s:
            out.append(f"scale {_scale_of(T):.4f} not inside ({lo_s:g}, {hi_s:g})")
        if self.allow_scale and not out:
            info = scale_information(prob.src_full.points, prob.tgt_full.tree, prob.tgt_full.normals, T,
                                     max_distance=prob.v)
            if info < self.opts.scale.min_scale_information:
                out.append(f"scale poorly constrained by this view (information {info:.3f} < "
                           f"{self.opts.scale.min_scale_information:g}; it shows mostly planes): scan more of the part")
        return out

    def passed(self) -> bool:
        return not self.failures(*self.finals[0])

    def coarse(self, hypotheses) -> list[tuple[np.ndarray, float]]:
        """``(T, coarse Chamfer)`` of each hypothesis after coarse ICP."""
        out = [self.prob.coarse(T) for T in hypotheses]
        self.n_tried += len(out)
        return out

    def finish(self, candidates) -> None:
        """Refine the best distinct coarse poses at full resolution; keep ``finals`` sorted.

        A pose whose coarse Chamfer distance exceeds ``max_chamfer`` by more than a voxel is beyond
        what a fine ICP (correspondences within one voxel) can repair: it is scored, not refined.
        """
        prob, v = self.prob, self.prob.v
        ranked = sorted(candidates, key=lambda c: c[1])
        distinct: list[tuple[np.ndarray, float]] = []
        for T, c in ranked:
            if all(_pose_distance(T, D, prob.extent) > v for D in [d for d, _ in distinct] + self.refined_from):
                distinct.append((T, c))
            if len(distinct) >= max(1, self.opts.refine.refine_top):
                break
        self.refined_from.extend(T for T, _ in distinct)
        for T, c in distinct:
            res = prob.fine(T) if c <= self.max_chamfer + v else None
            self.finals.append(res if res is not None else (T, prob.score(prob.src_full.points, T)))
        self.finals.sort(key=lambda f: f[1].chamfer)

    def probe_symmetries(self, candidates: list) -> None:
        """Half turns of the best pose about the target's axes; again from a new best, since a
        near-symmetric part's true pose may be a half turn away from the best probe.
        """
        probed: list[np.ndarray] = []
        for _ in range(2):
            best_T = min(candidates, key=lambda c: c[1])[0]
            if any(_pose_distance(best_T, D, self.prob.extent) <= self.prob.v for D in probed):
                break
            probed.append(best_T)
            candidates += self.coarse(symmetry_hypotheses(best_T, self.prob.tgt_c.points))

    def local_search(self, candidates: list) -> bool:
        """Turn / shift the best pose a little, only for a near miss (most of the source already on
        the target); escapes the sliding minima of partial views of surfaces of revolution and
        extrusions. Returns whether a round improved the best coarse Chamfer distance by 2 %.
        """
        g = self.opts.global_search
        searched = False
        rounds = g.local_search_rounds if g.local_search_deg and self.finals[0][1].fitness >= g.local_search_fitness \
            else 0
        for _ in range(rounds):
            best_T, best_c = min(candidates, key=lambda c: c[1])
            probes = self.coarse(_turns(best_T, self.prob.src_c.points, g.local_search_deg, (3.0 * self.prob.v,)))
            candidates += probes
            if min(c for _, c in probes) > 0.98 * best_c:
                break
            searched = True
        return searched

    def run(self, hypotheses, *, probe_symmetry: bool) -> bool:
        """One round from global ``hypotheses``; returns whether the best pose passes the checks.
        Gross misses are left to the next feature scale.
        """
        candidates = self.coarse(hypotheses)
        if probe_symmetry:
            self.probe_symmetries(candidates)
        self.finish(candidates)
        if self.passed():
            return True
        if self.local_search(candidates):
            self.finish(candidates)
            return self.passed()
        return False

    def add_guess(self, T0: np.ndarray) -> None:
        """The initial guess itself competes: refinement must not leave a guess that was better."""
        self.finals.append((T0, self.prob.score(self.prob.src_full.points, T0)))
        self.finals.sort(key=lambda f: f[1].chamfer)


def register(source, target, options: RegisterOptions | Mapping | None = None, *, init=None, attempts: int = 5,
             allow_scale: bool = False, seed: int = 0, progress: bool = False) -> RegistrationResult:
    """Register ``source`` onto ``target`` without an initial guess (or from ``init``).

    ``source`` is normally the test scan (possibly a partial view) and ``target`` the reference
    (a full scan, or points sampled from the *visible* surface of the CAD model): ``fitness`` and
    ``chamfer`` measure how well the *source* lies on the target, so a partial source on a complete
    target scores well, while a source that is bigger than the target does not. Distances are in
    the clouds' units (metres in this project).

    Args:
        source: ``(N, 3)`` array or ``open3d.geometry.PointCloud`` (normals used when present).
        target: ``(M, 3)`` array or ``open3d.geometry.PointCloud``; a read-only array keeps its
            preparation (normals, features, k-d trees) for the next call.
        options: :class:`~.options.RegisterOptions` (resolution and clean-up, global search,
            refinement, scale, acceptance checks; each option is documented in its group), or a
            dict of flat options (``{"min_fitness": 0.8}``, see
            :meth:`~.options.RegisterOptions.from_options`); ``None``: the defaults.
        init: optional ``(4, 4)`` initial guess (source -> target); skips the global search.
        attempts: distinct global hypotheses refined per feature scale (ignored with ``init``); >= 1.
        allow_scale: estimate a scale factor too (7-dof similarity refinement, within
            ``options.scale``).
        seed: seed of RANSAC and of the thinning to ``max_refine_points``.
        progress: show a tqdm bar over the feature scales.

    Returns:
        :class:`RegistrationResult`; ``ok=False`` with a ``reason`` when a check fails.

    Raises:
        ValueError: empty / non-finite / wrongly shaped clouds, fewer than :data:`MIN_POINTS`
            points, or invalid parameters.
    """
    t_start = time.perf_counter()
    opts = _as_options(options)
    src_pts, src_n = as_cloud_array(source, name="source")
    prepared = _prepared_target(target)
    for name, pts in (("source", src_pts), ("target", prepared.points)):
        if len(pts) < MIN_POINTS:
            raise ValueError(f"{name} has {len(pts)} points; need at least {MIN_POINTS} to register")
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    lim = _limits(src_pts, prepared, opts)
    refiner = _fine_refiner(opts, allow_scale)
    aligner = make_global_aligner("identity" if init is not None else opts.global_search.global_method)
    src_pts, src_n = _clean_source(src_pts, src_n, opts.preprocess, seed)
    # rigid coarse steps keep the scale of the (similarity) hypothesis; a free scale on a coarse pose
    # tends to shrink the source towards a point
    prob = _Problem(src_pts, src_n, prepared, v=lim.v, inlier_distance=lim.inlier_distance,
                    coarse_refiner=PointToPlaneICP(max_iterations=30), refiner=refiner)
    search = _Search(prob, opts, max_chamfer=lim.max_chamfer, allow_scale=allow_scale)

    feature_scales = opts.global_search.feature_scales
    scales = feature_scales if init is None else (1.0,)
    for k, fscale in enumerate(tqdm(scales, desc="register", disable=not progress, leave=False)):
        if init is not None:
            hypotheses = [as_transform(init, name="init")]
        else:
            try:
                src_f, tgt_f = prob.features(fscale)
            except ValueError:
                continue  # this feature scale is too coarse for the cloud
            hypotheses = aligner.propose(src_f, tgt_f, count=attempts, seed=seed + 1000 * k,
                                         with_scale=allow_scale)
        if search.run(hypotheses, probe_symmetry=opts.global_search.symmetry_probes and init is None):
            break

    if init is not None:
        search.add_guess(as_transform(init, name="init"))
    if not search.finals:  # no feature scale had enough points: nothing was tried
        raise ValueError(f"source or target too sparse for features at voxel {lim.v:.4g} "
                         f"(scales {feature_scales}); give a smaller voxel_size or denser clouds")
    return _result(search, lim, allow_scale=allow_scale, global_name=aligner.name, refine_name=refiner.name,
                   t_start=t_start)


def _result(search: _Search, lim: _Limits, *, allow_scale: bool, global_name: str, refine_name: str,
            t_start: float) -> RegistrationResult:
    """The best refined pose, its checks and the runner-up as a :class:`RegistrationResult`."""
    prob = search.prob
    T_best, sc = search.finals[0]
    runner_up = float("inf")
    for T, s_ in search.finals[1:]:
        if _pose_distance(T, T_best, prob.extent) > lim.v:
            runner_up = min(runner_up, s_.chamfer)
    reasons = search.failures(T_best, sc)
    strength = constraint_strength(prob.src_full.points, prob.tgt_full.tree, prob.tgt_full.normals, T_best,
                                   max_distance=lim.v, with_scale=allow_scale)
    return RegistrationResult(
        transform=T_best, scale=_scale_of(T_best) if allow_scale else 1.0, fitness=sc.fitness, rmse=sc.rmse,
        chamfer=sc.chamfer, attempts=search.n_tried, ok=not reasons, reason="; ".join(reasons), voxel_size=lim.v,
        inlier_distance=lim.inlier_distance, max_chamfer=lim.max_chamfer, runner_up_chamfer=runner_up,
        time_s=time.perf_counter() - t_start,
        extra={"median_distance": sc.median, "target_spacing": lim.spacing, "noise": lim.noise,
               "min_constraint": float(strength[0]), "global_method": global_name,
               "refine_method": refine_name},
    )
