"""Location-specific banks of geometric deviation: a 1-D companion of COSARAD's patch features.

COSARAD (Tarvo, Wan, Chen) keeps one memory bank per patch location and scores a test patch by
Cohen's effect size against it. :class:`DeviationDetector` applies the same idea to the plainest
geometric feature there is, the distance from a scan point to the nearest point of the good
templates, so that the bank of each location learns how much deviation is normal *there*
(grazing edges, fixture contact, pockets the sensor sees badly) and a bump on a flat face stands
out even when it is smaller than the noise at an edge.

Fit (templates only, no defective example):

1. register every template onto the first (the reference) and thin the reference to
   locations on a grid of ``location_spacing``;
2. leave-one-out deviation of each template's points against the other templates: the distance
   along the nearest template point's normal, plus whatever of the straight-line distance exceeds
   the templates' point spacing (so the offset between two samplings of the same surface does not
   count, material beyond an edge does);
3. per location ``l`` and template ``g``: ``m_g(l)`` = mean deviation of template ``g``'s points
   near ``l`` (each point goes to its nearest location, up to ``assign_factor x location_radius``
   away so the floor of a sink still reaches the locations above it; ``l`` pools the points of
   every location within ``location_radius``); the bank of ``l`` is ``{m_g(l)}``, summarised by
   its mean ``mu(l)`` and standard deviation ``s(l)`` (floored by ``min_std``).

Score:

1. register the scan onto the reference (retries, lowest Chamfer; :func:`.template_align.align_to_reference`);
2. deviation of each scan point against all templates (as in fit, the smallest over templates);
   ``m_t(l)`` as above;
3. Cohen's d ``d(l) = (m_t(l) - mu(l)) / s(l)`` (Cohen, *Statistical Power Analysis for the
   Behavioral Sciences*, 1988) and the excess ``e(l) = m_t(l) - mu(l)`` in metres;
4. location score ``s(l) = min(d(l), threshold * e(l) / tolerance)``: above ``threshold`` only where
   the deviation is both unusual for that location and larger than the tolerance (what a drawing
   would allow), continuous otherwise so it ranks parts for ROC curves;
5. object score = the largest location score; per-point score = the score of the nearest
   scored location; defects = connected groups of points above ``threshold``.

The result is the same :class:`~.detector.AnomalyScore` as the learned detector's, so both plug
into :class:`~cosarad_ros.core.inspection.detection.PartInspector`, the CLI and the evaluation unchanged.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import as_points, transform_points
from .detector import MIN_SCAN_POINTS, AnomalyScore, PartRegistry, _check_slides, find_defect_regions
from .grooves import GrooveField, groove_scores
from .surfaces import TemplateSurfaces

__all__ = ["DeviationBank", "DeviationDetector", "LocationScale", "CAD_INLIER_DISTANCE", "DEFAULT_THRESHOLD",
           "DEFAULT_TOLERANCE"]

#: a scan point within this distance of the CAD surface counts as on it (registration fitness) [m]
CAD_INLIER_DISTANCE = 1e-3
#: defaults (measured on production runs of the cell; docs/anomaly.md)
DEFAULT_THRESHOLD = 6.0
DEFAULT_TOLERANCE = 1e-4
DEFAULT_MIN_STD = 1e-5
DEFAULT_SCALES = (1.0, 2.5)
#: pseudo-points of the part's typical point noise added to each location's own estimate
SHRINK_POINTS = 30.0
#: CAD banks pool a point into a location, and two locations into one sample, only when their
#: CAD face normals agree within this cosine: a dent on a narrow face is not averaged with the
#: faces beside it
NORMAL_AGREEMENT = 0.5
#: nearest locations searched for one whose normal agrees with a point's
ASSIGN_CANDIDATES = 8


@dataclass(frozen=True)
class DeviationBank:
    """What :class:`DeviationDetector` keeps per part type.

    Attributes:
        part_type: the label.
        reference: ``(M, 3)`` reference template (registration target), template frame [m].
        surfaces: the registered templates with their normals, k-d trees and tangential
            allowance (deviations are measured against them; the first is the reference).
        locations: ``(L, 3)`` bank locations.
        mean: ``(L,)`` mean leave-one-out deviation of the templates per location [m] (NaN: unseen).
        std: ``(L,)`` its standard deviation, floored by ``min_std`` [m].
        counts: ``(L,)`` mean number of template points per location.
        radius: location radius [m].
        threshold: object-score threshold (Cohen's d).
        tolerance: smallest excess deviation that can count as a defect [m].
        location_tree: k-d tree of ``locations``; neighbours: ``(L, L)``
            sparse 0/1 matrix of the locations within ``radius`` of each other (kept so scoring
            does not rebuild them).
        surface: the CAD model (:class:`~cosarad_ros.core.registration.mesh_reference.MeshReference`)
            when the banks were fitted against it, else None (template deviations).
        scales: CAD banks: one :class:`LocationScale` per neighbourhood size.
        n_templates: templates behind the banks.
        location_normals: CAD banks: ``(L, 3)`` outward CAD face normal at each location.
        groove: CAD banks: the templates' expected deviation and residual noise for the narrow
            groove test (:mod:`.grooves`).
    """

    part_type: str
    reference: np.ndarray
    surfaces: TemplateSurfaces
    locations: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    counts: np.ndarray
    radius: float
    threshold: float
    tolerance: float
    location_tree: cKDTree | None = None
    neighbours: object = None
    surface: object = None
    scales: tuple = ()
    n_templates: int = 0
    location_normals: np.ndarray | None = None
    groove: GrooveField | None = None


@dataclass(frozen=True)
class LocationScale:
    """The banks of one neighbourhood size (CAD banks keep several: a narrow scratch shows at a
    small radius, a wide shallow dent only when many points are averaged).

    Attributes:
        radius: points within this distance of a location form its sample [m].
        neighbours: ``(L, L)`` 0/1 matrix of the locations within ``radius`` of each other.
        mean: ``(L,)`` mean signed deviation of the templates [m] (NaN: seen by fewer than 2).
        within: ``(L,)`` standard deviation of one point's signed deviation [m].
        systematic: ``(L,)`` variation of the location mean between templates beyond what the
            point noise explains [m].
        counts: ``(L,)`` mean number of template points.
    """

    radius: float
    neighbours: object
    mean: np.ndarray
    within: np.ndarray
    systematic: np.ndarray
    counts: np.ndarray


def _neighbour_matrix(loc_tree: cKDTree, radius: float, normals: np.ndarray | None = None):
    """``(L, L)`` CSR matrix with 1 where two locations are within ``radius`` (diagonal included)
    and, with ``normals`` ``(L, 3)``, their normals agree (cosine at least :data:`NORMAL_AGREEMENT`).
    """
    A = loc_tree.sparse_distance_matrix(loc_tree, radius, output_type="coo_matrix")
    if normals is not None:
        keep = np.einsum("ij,ij->i", normals[A.row], normals[A.col]) >= NORMAL_AGREEMENT
        A = type(A)((np.ones(int(keep.sum())), (A.row[keep], A.col[keep])), shape=A.shape)
    A = A.tocsr()
    A.data[:] = 1.0
    A.setdiag(1.0)
    return A


class DeviationDetector(PartRegistry):
    """Deviation-from-template detector with location-specific banks (see module docstring).

    Args:
        location_spacing: grid step of the bank locations [m]; ``None``: ``location_rel`` x the
            reference's bounding-box diagonal.
        location_rel: see ``location_spacing`` (0.013: 2 mm on a 150 mm part).
        location_radius: points within this distance of a location form its sample [m];
            ``None``: 1.5 x ``location_spacing``.
        min_location_points: fewest points for a location to be scored (else NaN, unseen).
        assign_factor: a point counts for its nearest location up to ``assign_factor x`` the
            location radius away (reaches the floor of sinks and holes).
        min_location_fraction: a scan's location is scored only when it holds at least this share
            of the templates' mean point count there (COSARAD's ``|P|min`` rule for partial
            scans: the rim of a partial view, half seen, is skipped); 0: off.
        min_std: floor of each location's standard deviation [m].
        threshold: Cohen's d above which a location is anomalous (also the object threshold).
        tolerance: smallest excess deviation over the location's mean that can be a defect [m].
        registration_attempts: global registration hypotheses per registration.
        register: register scans and templates onto the reference (False: already aligned).
        max_template_points: templates are randomly thinned to this many points.
        min_region_points: smallest defect region reported.
        seed: randomness of thinning and registration.
        symmetry_check: test the poses a near-symmetric part allows against all templates after
            registration (and with a given ``transform``); see
            :class:`~.detector.AnomalyDetector`. An addition; needs 2 or more templates.
        symmetry_min_gain: see ``symmetry_check``.
        symmetry_slides: see :class:`~.detector.AnomalyDetector` (``0`` = off).
        scales: CAD banks: neighbourhood radii as factors of ``location_radius``; a location's
            score is the largest over them.
    """

    method = "deviation"

    def __init__(self, *, location_spacing: float | None = None, location_rel: float = 0.013,
                 location_radius: float | None = None, min_location_points: int = 3, assign_factor: float = 4.0,
                 min_location_fraction: float = 0.25, min_std: float = DEFAULT_MIN_STD,
                 threshold: float = DEFAULT_THRESHOLD, tolerance: float = DEFAULT_TOLERANCE,
                 registration_attempts: int = 3,
                 register: bool = True, max_template_points: int = 60_000, min_region_points: int = 10,
                 seed: int = 0, symmetry_check: bool = True, symmetry_min_gain: float = 0.03,
                 symmetry_slides: float = 0.9, scales: tuple[float, ...] = DEFAULT_SCALES):
        if not (np.isfinite(symmetry_min_gain) and 0 <= symmetry_min_gain < 1):
            raise ValueError(f"symmetry_min_gain must be in [0, 1), got {symmetry_min_gain}")
        scales = tuple(float(f) for f in scales)
        if not scales or not all(np.isfinite(f) and f > 0 for f in scales):
            raise ValueError(f"scales must be positive factors of the location radius, got {scales}")
        self.scales = scales
        self.symmetry_check = bool(symmetry_check)
        self.symmetry_min_gain = float(symmetry_min_gain)
        self.symmetry_slides = _check_slides(symmetry_slides)
        for name, v in (("location_spacing", location_spacing), ("location_radius", location_radius)):
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0 m, got {v}")
        if not 0 < location_rel < 1:
            raise ValueError(f"location_rel must be in (0, 1), got {location_rel}")
        if not (np.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a positive Cohen's d, got {threshold}")
        if not (np.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"tolerance must be >= 0 m, got {tolerance}")
        if min_std <= 0 or min_location_points < 1 or registration_attempts < 1:
            raise ValueError("min_std > 0, min_location_points >= 1 and registration_attempts >= 1 required")
        self.location_spacing = location_spacing
        self.location_rel = float(location_rel)
        self.location_radius = location_radius
        self.min_location_points = int(min_location_points)
        if not assign_factor >= 1:
            raise ValueError(f"assign_factor must be >= 1, got {assign_factor}")
        self.assign_factor = float(assign_factor)
        if not 0 <= min_location_fraction < 1:
            raise ValueError(f"min_location_fraction must be in [0, 1), got {min_location_fraction}")
        self.min_location_fraction = float(min_location_fraction)
        self.min_std = float(min_std)
        self.threshold = float(threshold)
        self.tolerance = float(tolerance)
        self.registration_attempts = int(registration_attempts)
        self.register = bool(register)
        self.max_template_points = int(max_template_points)
        self.min_region_points = int(min_region_points)
        self.seed = int(seed)
        self._parts: dict[str, DeviationBank] = {}

    # ------------------------------------------------------------------ bookkeeping
    @property
    def classes_seen(self) -> tuple[str, ...]:
        return ()

    def _location_means(self, points: np.ndarray, dev: np.ndarray, loc_tree: cKDTree, neighbours,
                        radius: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean of ``dev`` per location and the point counts behind it (NaN where fewer than
        ``min_location_points``).

        Every point goes to its nearest location (up to ``assign_factor x radius`` away, so the
        floor of a sink or a hole, below the template surface, still reaches the locations above
        it); a location's sample is the points of all locations within ``radius`` of it
        (``neighbours``: the ``(L, L)`` 0/1 matrix of :func:`_neighbour_matrix`).
        """
        out, cnt, _ = self._location_stats(points, dev, loc_tree, neighbours, radius)
        return out, cnt

    def _location_stats(self, points: np.ndarray, dev: np.ndarray, loc_tree: cKDTree, neighbours,
                        radius: float, normals: np.ndarray | None = None,
                        location_normals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_location_means` plus the variance of ``dev`` within each location. With
        ``normals`` ``(N, 3)`` (the CAD normal nearest each point) and ``location_normals``
        ``(L, 3)`` a point goes to its nearest location whose normal agrees with its own.
        """
        L = loc_tree.n
        if normals is None or location_normals is None:
            d, idx = loc_tree.query(points, k=1, distance_upper_bound=self.assign_factor * radius)
            ok = np.isfinite(d)
        else:
            d, cand = loc_tree.query(points, k=ASSIGN_CANDIDATES, distance_upper_bound=self.assign_factor * radius)
            agree = np.isfinite(d) & (np.einsum("nj,nkj->nk", normals,
                                                location_normals[np.minimum(cand, L - 1)]) >= NORMAL_AGREEMENT)
            first = agree.argmax(axis=1)
            ok = agree[np.arange(len(cand)), first]
            idx = cand[np.arange(len(cand)), first]
        sums = neighbours @ np.bincount(idx[ok], weights=dev[ok], minlength=L)
        sq = neighbours @ np.bincount(idx[ok], weights=dev[ok] ** 2, minlength=L)
        cnt = neighbours @ np.bincount(idx[ok], minlength=L).astype(np.float64)
        out = np.full(L, np.nan)
        var = np.full(L, np.nan)
        enough = cnt >= self.min_location_points
        out[enough] = sums[enough] / cnt[enough]
        var[enough] = np.maximum(sq[enough] / cnt[enough] - out[enough] ** 2, 0.0)
        return out, cnt, var

    # ------------------------------------------------------------------ fit / score
    def fit(self, part_type: str, templates, *, cache_dir: str | None = None, progress: bool = False,
            aligned: bool = False, mesh=None) -> DeviationBank:
        """Build the banks of ``part_type`` from good templates (``(N_g, 3)`` each, metres; the
        first is the reference). ``cache_dir`` and ``progress`` are accepted for interface
        compatibility with :class:`~.detector.AnomalyDetector` (fitting takes seconds).

        With ``mesh`` (the part type's CAD model, metres, part frame; templates near the part
        frame, as simulated by the cell) deviations are signed distances to the CAD surface: each
        template is registered onto the model the way a scan is, and the banks learn each
        location's mean signed deviation, its point noise and its variation between templates.
        Without, deviations are measured against the other templates (any pose; the first is the
        reference).

        Raises:
            ValueError: empty part type, fewer than 3 templates (or registered templates), bad points.
        """
        del cache_dir, progress
        if not isinstance(part_type, str) or not part_type:
            raise ValueError("part_type must be a non-empty string")
        if templates is None or len(templates) < 3:
            n = 0 if templates is None else len(templates)
            raise ValueError(f"part type '{part_type}' has {n} template(s); the deviation banks need at least 3")
        tmpl = [self._thin(as_points(t, name=f"template {i} of '{part_type}'", min_points=MIN_SCAN_POINTS), i)
                for i, t in enumerate(templates)]
        if mesh is not None:
            return self._fit_cad(part_type, tmpl, mesh)
        ref = tmpl[0]
        regs = [t for _, t in self._templates_on_reference(part_type, tmpl, aligned=aligned)]
        if len(regs) < 3:
            raise ValueError(f"only {len(regs)} template(s) of '{part_type}' registered onto the reference; need 3")
        diag = float(np.linalg.norm(ref.max(0) - ref.min(0)))
        spacing = self.location_spacing or self.location_rel * diag
        radius = self.location_radius or 1.5 * spacing
        _, first = np.unique(np.floor(ref / spacing).astype(np.int64), axis=0, return_index=True)
        locations = ref[np.sort(first)]
        # normals, k-d trees and the tangential allowance (1.5 x the typical point spacing)
        surf = TemplateSurfaces.build(regs)
        loc_tree = cKDTree(locations)
        neighbours = _neighbour_matrix(loc_tree, radius)
        M = np.full((len(regs), len(locations)), np.nan)
        C = np.zeros((len(regs), len(locations)))
        for g, (t, dev) in enumerate(zip(regs, surf.leave_one_out())):
            M[g], C[g] = self._location_means(t, dev, loc_tree, neighbours, radius)
        seen = np.isfinite(M).sum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.where(seen >= 2, np.nanmean(M, 0), np.nan)
            std = np.where(seen >= 2, np.nanstd(M, 0, ddof=1), np.nan)
        std = np.sqrt(np.nan_to_num(std, nan=0.0) ** 2 + self.min_std ** 2)
        counts = C.mean(0)
        bank = DeviationBank(part_type, regs[0], surf, locations, mean, std, counts, float(radius),
                             self.threshold, self.tolerance, loc_tree, neighbours)
        self._parts[part_type] = bank
        return bank

    def _fit_cad(self, part_type: str, tmpl: list, mesh) -> DeviationBank:
        from ..registration.mesh_reference import MeshReference

        surface = mesh if isinstance(mesh, MeshReference) else MeshReference(mesh)
        regs = []
        for t in tmpl:
            al = surface.align(t, inlier_distance=CAD_INLIER_DISTANCE, seed=self.seed)
            regs.append(transform_points(al.transform, t) if self.register else t)
        devs = [surface.signed_distance(t) for t in regs]
        nrms = [surface.closest(t)[1] for t in regs]
        allpts = np.concatenate(regs)
        diag = float(np.linalg.norm(allpts.max(0) - allpts.min(0)))
        spacing = self.location_spacing or self.location_rel * diag
        radius = self.location_radius or 1.5 * spacing
        _, first = np.unique(np.floor(allpts / spacing).astype(np.int64), axis=0, return_index=True)
        locations = allpts[np.sort(first)]
        loc_tree = cKDTree(locations)
        loc_normals = surface.closest(locations)[1]
        G, L = len(regs), len(locations)
        scales = []
        for factor in self.scales:
            r = factor * radius
            neighbours = _neighbour_matrix(loc_tree, r, loc_normals)
            M, C, V = np.full((G, L), np.nan), np.zeros((G, L)), np.full((G, L), np.nan)
            for g, (t, dev, nrm) in enumerate(zip(regs, devs, nrms)):
                M[g], C[g], V[g] = self._location_stats(t, dev, loc_tree, neighbours, r, nrm, loc_normals)
            seen = np.isfinite(M).sum(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.where(seen >= 2, np.nanmean(M, 0), np.nan)
                between = np.where(seen >= 2, np.nanvar(M, 0, ddof=1), np.nan)
                within = np.nan_to_num(np.sqrt(np.nanmean(V, 0)), nan=0.0)
            counts = C.mean(0)
            # a location's point noise is estimated from few template points: shrink it towards the
            # part's typical noise (empirical Bayes, SHRINK_POINTS pseudo-points), so a location
            # that happened to look quiet in the templates does not make ordinary noise a defect
            typical = float(np.median(within[counts * G >= 20])) if (counts * G >= 20).any() else float(within.max())
            k = counts * G
            within = np.sqrt((k * within ** 2 + SHRINK_POINTS * typical ** 2) / (k + SHRINK_POINTS))
            # the part of the between-template variance the point noise does not explain
            systematic = np.sqrt(np.maximum(np.nan_to_num(between, nan=0.0)
                                            - within ** 2 / np.maximum(counts, 1.0), 0.0))
            scales.append(LocationScale(float(r), neighbours, mean, within, systematic, counts))
        base = scales[0]
        bank = DeviationBank(part_type, regs[0], None, locations, base.mean, np.full(L, self.min_std), base.counts,
                             float(radius), self.threshold, self.tolerance, loc_tree, base.neighbours,
                             surface=surface, scales=tuple(scales), n_templates=G, location_normals=loc_normals,
                             groove=GrooveField.fit(regs, devs, location_tree=loc_tree, min_std=self.min_std))
        self._parts[part_type] = bank
        return bank

    def _cad_location_scores(self, b: DeviationBank, reg: np.ndarray):
        """Signed deviations of ``reg`` (model frame) -> ``(scores (L,), excess (L,), dev (N,),
        scored (L,), normals (N, 3) or None)``: per location the largest score over the scales, the
        excess of that scale, the points' signed deviations, whether any scale scored the location,
        and the CAD normal nearest each point.
        """
        dev = b.surface.signed_distance(reg)
        nrm = b.surface.closest(reg)[1] if b.location_normals is not None else None
        best = np.full(len(b.locations), np.nan)
        best_excess = np.full(len(b.locations), np.nan)
        any_scored = np.zeros(len(b.locations), dtype=bool)
        for sc in b.scales:
            m, n, _ = self._location_stats(reg, dev, b.location_tree, sc.neighbours, sc.radius, nrm,
                                           b.location_normals)
            scored = np.isfinite(m) & np.isfinite(sc.mean) & (n >= self.min_location_fraction * sc.counts)
            excess = m - sc.mean
            noise = np.sqrt(sc.within ** 2 / np.maximum(n, 1.0)
                            + sc.within ** 2 / np.maximum(sc.counts * b.n_templates, 1.0)
                            + sc.systematic ** 2 + self.min_std ** 2)
            z = np.abs(excess) / noise
            tol = (b.threshold * np.abs(excess) / b.tolerance) if b.tolerance > 0 else np.full_like(z, np.inf)
            score = np.where(scored, np.minimum(z, tol), np.nan)
            better = scored & ~(score <= best)  # NaN-safe: True where best is NaN or lower
            best = np.where(better, score, best)
            best_excess = np.where(better, excess, best_excess)
            any_scored |= scored
        return best, best_excess, dev, any_scored, nrm

    def score(self, scan, part_type: str, *, register: bool | None = None, transform=None) -> AnomalyScore:
        """Score a scan of ``part_type`` (``(N, 3)`` metres, any pose).

        Returns:
            :class:`~.detector.AnomalyScore`; ``patch_centres`` / ``patch_scores`` hold the bank
            locations and their scores (NaN: not seen by the scan).

        Raises:
            ValueError: empty / non-finite / too small scan, unknown part type, or a scan that
                overlaps none of the bank locations.
        """
        t0 = time.perf_counter()
        timings = {}
        pts = as_points(scan, name="scan", min_points=MIN_SCAN_POINTS)
        b = self.part_bank(part_type)
        do_reg = self.register if register is None else bool(register)
        if b.surface is not None:
            return self._score_cad(b, pts, do_reg, transform, t0)
        ref_tree = b.surfaces.trees[0]  # the reference is the first template
        if transform is not None:
            from ..geometry import as_transform

            T, reg_ok = as_transform(transform), True
        elif do_reg:
            res = self._align(pts, b.reference, symmetry=not (self.symmetry_check and len(b.surfaces.templates) >= 2))
            T, reg_ok = np.asarray(res.transform), bool(res.ok)
            if not reg_ok:
                warnings.warn(f"scan of '{part_type}' did not register well ({res.reason}); scores are unreliable")
        else:
            T, reg_ok = np.eye(4), True
        if self.symmetry_check and (transform is not None or do_reg) and len(b.surfaces.templates) >= 2:
            T = self._check_symmetry(b.reference, lambda: b.surfaces, pts, T, min_gain=self.symmetry_min_gain,
                                     slides=self.symmetry_slides)
        reg = transform_points(T, pts)
        chamfer = float(ref_tree.query(reg, k=1)[0].mean())
        timings["register"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        dev = b.surfaces.deviation(reg)
        m, n = self._location_means(reg, dev, b.location_tree, b.neighbours, b.radius)
        scored = np.isfinite(m) & np.isfinite(b.mean) & (n >= self.min_location_fraction * b.counts)
        if not scored.any():
            raise ValueError(f"the scan overlaps none of the {len(b.locations)} deviation locations of "
                             f"'{part_type}' (registration chamfer {chamfer:.4g} m); is it the right part type?")
        excess = m - b.mean
        d = excess / b.std
        tol_term = (b.threshold * excess / b.tolerance) if b.tolerance > 0 else np.full_like(d, np.inf)
        loc_scores = np.where(scored, np.minimum(d, tol_term), np.nan)
        obj = float(np.nanmax(loc_scores))
        # each point takes the score of the nearest scored location (rim points of a partial view
        # take their neighbours'); points far from every scored location take the lowest score
        idx = np.flatnonzero(scored)
        near_d, near = cKDTree(b.locations[idx]).query(reg, k=1)
        point_scores = loc_scores[idx][near]
        point_scores[near_d > 2 * b.radius] = float(np.nanmin(loc_scores))
        defects = find_defect_regions(reg, point_scores, b.threshold, link_distance=b.radius,
                                      min_points=self.min_region_points)
        if obj > b.threshold and not defects:
            # a FAIL always names where: the strongest region, however few points it has (the
            # floor of a small hole is often a handful of points)
            defects = find_defect_regions(reg, point_scores, b.threshold, link_distance=b.radius, min_points=1)[:1]
        timings["scoring"] = time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        return AnomalyScore(point_scores=point_scores, object_score=obj, threshold=float(b.threshold),
                            is_anomalous=bool(obj > b.threshold), transform=T, chamfer=chamfer,
                            patch_centres=b.locations.copy(), patch_scores=loc_scores, defects=defects,
                            point_threshold=float(b.threshold), registration_ok=reg_ok, timings=timings,
                            coverage=float(scored.mean()))

    def _score_cad(self, b: DeviationBank, pts: np.ndarray, do_reg: bool, transform, t0: float) -> AnomalyScore:
        """:meth:`score` for banks fitted against the CAD model."""
        timings = {}
        reg_ok = True
        if transform is not None:
            from ..geometry import as_transform

            T = as_transform(transform)
        elif do_reg:
            al = b.surface.align(pts, inlier_distance=CAD_INLIER_DISTANCE, seed=self.seed)
            T = al.transform
        else:
            T = np.eye(4)
        reg = transform_points(T, pts)
        timings["register"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        loc_scores, excess, dev, scored, nrm = self._cad_location_scores(b, reg)
        chamfer = float(np.abs(dev).mean())
        if not scored.any():
            raise ValueError(f"the scan overlaps none of the {len(b.locations)} deviation locations of "
                             f"'{b.part_type}' (mean distance to the CAD surface {chamfer:.4g} m); "
                             "is it the right part type?")
        idx = np.flatnonzero(scored)
        near_d, near = cKDTree(b.locations[idx]).query(reg, k=1)
        point_scores = loc_scores[idx][near]
        point_excess = excess[idx][near]
        point_scores[near_d > 2 * b.radius] = float(np.nanmin(loc_scores))
        groove = np.zeros(len(reg), dtype=bool)
        if b.groove is not None and nrm is not None:
            g = groove_scores(b.groove, reg, dev, nrm, b.location_tree.query(reg, k=1)[1],
                              threshold=b.threshold, tolerance=b.tolerance).point_scores(len(reg))
            groove = g > point_scores
            point_scores = np.where(groove, g, point_scores)
        obj = float(max(np.nanmax(loc_scores), np.nanmax(point_scores)))
        defects = find_defect_regions(reg, point_scores, b.threshold, link_distance=b.radius,
                                      min_points=self.min_region_points)
        if obj > b.threshold and not defects:
            defects = find_defect_regions(reg, point_scores, b.threshold, link_distance=b.radius, min_points=1)[:1]
        from dataclasses import replace as _replace

        def kind(d):
            top = d.indices[np.argmax(point_scores[d.indices])]
            if groove[top]:
                return "scratch"
            return "bulge" if float(np.mean(point_excess[d.indices])) > 0 else "sink"

        defects = tuple(_replace(d, kind=kind(d)) for d in defects)
        timings["scoring"] = time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        return AnomalyScore(point_scores=point_scores, object_score=obj, threshold=float(b.threshold),
                            is_anomalous=bool(obj > b.threshold), transform=T, chamfer=chamfer,
                            patch_centres=b.locations.copy(), patch_scores=loc_scores, defects=defects,
                            point_threshold=float(b.threshold), registration_ok=reg_ok, timings=timings,
                            coverage=float(scored.sum() / max(1, int(np.isfinite(b.mean).sum()))))
