"""The hole rule: each nominal hole of the model measured from 2D projections (entry boundary
and wall circle fits) against its position and diameter tolerances.
"""
from __future__ import annotations

import numpy as np

from cosarad_ros.core.cad.library import HoleSpec

from .blocks import alpha_boundary, fit_circle, fit_circle_robust
from .context import InspectionContext, Rule
from .results import DefectFinding, HoleAllowance, HoleMeasurement


class HoleRule(Rule):
    """Circular holes of the model's metadata, measured from 2D projections.

    Args:
        position_tolerance: largest centre offset [m] (paper: 0.6 mm).
        diameter_tolerance: largest diameter deviation [m] (paper: 0.5 mm).
        alpha: alpha-shape circumradius limit [m]; ``None``: 2.5 x point spacing.
        slab: half thickness of the entry-face slab projected to 2D [m]; ``None``:
            max(0.3 mm, 4 x noise sigma).
        roi_margin: material ring around the nominal hole that is examined [m]; ``None``:
            the nominal radius, clipped to [2 mm, 5 mm].
        wall_depth: depth below the entry face of the wall points used to refine the circle [m];
            ``None``: min(nominal diameter, hole depth).
        min_points: fewest points around a hole to judge it.
        min_arc_deg: least angular coverage of the fitted points.
        max_spacing: when no wall is seen, the hole is judged from its 2D boundary only if the
            points around it are at most this far apart [m]; ``None``: ``diameter_tolerance``.
            Otherwise it is reported as not observed.
        min_wall_points: fewest wall points of a wall fit (which must also fit a circle to within
            4 x the noise sigma, at least 0.05 mm).
    """

    name = "hole"

    def __init__(self, *, position_tolerance: float = 0.0006, diameter_tolerance: float = 0.0005,
                 alpha: float | None = None, slab: float | None = None, roi_margin: float | None = None,
                 wall_depth: float | None = None, min_points: int = 30, min_arc_deg: float = 120.0,
                 max_spacing: float | None = None, min_wall_points: int = 20):
        if position_tolerance <= 0 or diameter_tolerance <= 0:
            raise ValueError("hole rule: position_tolerance and diameter_tolerance must be > 0")
        for n, v in (("alpha", alpha), ("slab", slab), ("roi_margin", roi_margin), ("wall_depth", wall_depth)):
            if v is not None and v <= 0:
                raise ValueError(f"hole rule: {n} must be > 0, got {v}")
        self.position_tolerance = float(position_tolerance)
        self.diameter_tolerance = float(diameter_tolerance)
        self.alpha = alpha
        self.slab = slab
        self.roi_margin = roi_margin
        self.wall_depth = wall_depth
        self.min_points = int(min_points)
        self.min_arc_deg = float(min_arc_deg)
        if max_spacing is not None and max_spacing <= 0:
            raise ValueError(f"hole rule: max_spacing must be > 0, got {max_spacing}")
        self.max_spacing = max_spacing
        if min_wall_points < 3:
            raise ValueError(f"hole rule: min_wall_points must be >= 3, got {min_wall_points}")
        self.min_wall_points = int(min_wall_points)

    @staticmethod
    def _basis(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = axis / np.linalg.norm(axis)
        ref = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        u = np.cross(a, ref)
        u /= np.linalg.norm(u)
        return u, np.cross(a, u)

    @staticmethod
    def _arc_deg(xy: np.ndarray, centre: np.ndarray) -> float:
        ang = np.sort(np.arctan2(xy[:, 1] - centre[1], xy[:, 0] - centre[0]))
        if len(ang) < 2:
            return 0.0
        gaps = np.diff(np.concatenate([ang, [ang[0] + 2 * np.pi]]))
        return float(np.degrees(2 * np.pi - gaps.max()))

    def measure(self, ctx: InspectionContext, hole: HoleSpec) -> tuple[HoleMeasurement, np.ndarray]:
        """Measure one hole; returns the measurement and the indices of the points used."""
        nan3 = np.full(3, np.nan)
        r0 = hole.diameter / 2.0
        a = -hole.axis / np.linalg.norm(hole.axis)   # out of the material: h < 0 inside the hole
        u, v = self._basis(a)
        margin = max(0.002, min(r0, 0.005)) if self.roi_margin is None else self.roi_margin
        slab = max(0.0003, 4.0 * ctx.noise_sigma) if self.slab is None else self.slab
        wall = min(hole.diameter, hole.depth or hole.diameter) if self.wall_depth is None else self.wall_depth
        rel = ctx.points - hole.centre
        h = rel @ a
        xy = np.column_stack([rel @ u, rel @ v])
        rho = np.linalg.norm(xy, axis=1)
        roi = np.flatnonzero((rho <= r0 + margin) & (np.abs(h) <= slab))
        unseen = HoleMeasurement(hole, False, False, nan3, float("nan"), float("nan"), float("nan"), True)
        if len(roi) < self.min_points:
            return unseen, roi
        q = xy[roi]
        spacing = ctx.spacing
        alpha = 2.5 * spacing if self.alpha is None else self.alpha
        _, comps = alpha_boundary(q, alpha=alpha)
        rim = r0 + margin - 2.0 * spacing
        best = None
        for comp in comps:
            comp = comp[np.linalg.norm(q[comp], axis=1) < rim]   # drop the ROI's own outer border
            if len(comp) < 6:
                continue
            c, r, _, kept = fit_circle_robust(q[comp], floor=max(spacing, 3.0 * ctx.noise_sigma))
            comp = comp[kept]
            if np.linalg.norm(c) > r0 + margin / 2 or not 0.3 * r0 < r < r0 + margin:
                continue
            if self._arc_deg(q[comp], c) < self.min_arc_deg:
                continue
            # the loop that looks most like the nominal hole (not e.g. the rim of a boss around it)
            cost = abs(r - r0) + float(np.linalg.norm(c))
            if best is None or cost < best[3]:
                best = (comp, c, r, cost)
        if hole.depth is not None:  # stay clear of the exit rim of a through hole
            wall = min(wall, hole.depth - 2.0 * slab)
        # the hole column below the entry face is void in the CAD, so points there are wall points,
        # except points of other CAD surfaces that reach into the (wider) column: those lie on the
        # nominal surface away from the nominal wall, and are left out
        dthr = max(4.0 * ctx.noise_sigma, 0.0001)
        column = np.flatnonzero((h < -0.5 * slab) & (h > -wall) & (rho < r0 + margin)
                                & ((np.abs(ctx.deviation) > dthr) | (np.abs(rho - r0) < dthr)))
        if best is None:
            # no usable entry boundary (entry face seen too obliquely): fit the wall alone
            wall_only = self._wall_only(ctx, xy, column, r0, margin)
            if wall_only is not None:
                cw, rw, wl = wall_only
                return self._result(hole, cw, rw, u, v, "wall", len(wl)), wl
        if best is None:
            # no opening: the hole is missing when material covers the nominal hole area
            inner = np.sum(np.linalg.norm(q, axis=1) < 0.5 * r0)
            expected = 0.25 * np.pi * r0 ** 2 / max(spacing ** 2, 1e-12)
            if inner >= 0.3 * expected:
                # every point inside the nominal hole column belongs to the finding
                used = np.flatnonzero((rho < r0 + ctx.spacing) & (h > -(hole.depth or hole.diameter)) & (h <= slab))
                return HoleMeasurement(hole, True, False, nan3, float("nan"), float("nan"), float("nan"),
                                       False, "coverage", int(len(used))), used
            # material all around inside the nominal opening: the hole is narrower than nominal
            # (too narrow for the alpha shape to open it); its radius is where material starts
            r_in = r0 - max(0.5 * self.diameter_tolerance, 3.0 * ctx.noise_sigma)
            rq = np.linalg.norm(q, axis=1)
            ring = np.flatnonzero(rq < r_in)
            if r_in > 0 and len(ring) >= 12 and self._arc_deg(q[ring], np.zeros(2)) >= 270.0:
                ang = np.arctan2(q[ring, 1], q[ring, 0])
                sectors = np.floor((ang + np.pi) / (2 * np.pi) * 12).astype(int) % 12
                mins = [rq[ring][sectors == k].min() for k in range(12) if np.any(sectors == k)]
                r_open = float(np.median(mins))
                m = self._result(hole, np.zeros(2), r_open, u, v, "coverage", len(ring))
                return m, roi[ring]
            return HoleMeasurement(hole, False, False, nan3, float("nan"), float("nan"), float("nan"), True), roi
        comp, c, r, _ = best
        method, n_fit, used = "boundary", len(comp), roi[comp]
        roi_spacing = float(np.median(ctx.local_spacing[roi]))
        # refine on the wall: points of the column at about the fitted radius
        wl = column
        if len(wl):
            dr = np.abs(np.linalg.norm(xy[wl] - c, axis=1) - r)
            wl = wl[dr < max(3.0 * spacing, 0.25 * r0)]
        if len(wl) >= 12:
            cw, rw, rms = fit_circle(xy[wl], iterations=30)
            for _ in range(3):  # drop points off the wall (chamfers, fillets, stray hits)
                keep = np.abs(np.linalg.norm(xy[wl] - cw, axis=1) - rw) < max(3.0 * rms, 3.0 * ctx.noise_sigma)
                if keep.all() or keep.sum() < 12:
                    break
                wl = wl[keep]
                cw, rw, rms = fit_circle(xy[wl], iterations=30)
            if np.linalg.norm(cw - c) < 0.5 * r0 and 0.5 * r < rw < 1.5 * r and \
                    self._arc_deg(xy[wl], cw) >= self.min_arc_deg / 2 and len(wl) >= self.min_wall_points \
                    and rms <= self._max_wall_rms(ctx):
                c, r, method, n_fit, used = cw, rw, "wall", len(wl), np.concatenate([used, wl])
        if method == "boundary":
            wall_only = self._wall_only(ctx, xy, column, r0, margin)
            if wall_only is not None:
                c, r, wl = wall_only
                method, n_fit, used = "wall", len(wl), np.concatenate([used, wl])
        max_sp = self.diameter_tolerance if self.max_spacing is None else self.max_spacing
        if method == "boundary" and roi_spacing > max_sp:
            # a boundary between points this sparse is off by about a point spacing: too coarse
            # to judge the tolerances (typically a face seen at a grazing angle)
            return HoleMeasurement(hole, False, True, nan3, float("nan"), float("nan"), float("nan"), True,
                                   "boundary", int(n_fit)), used
        return self._result(hole, c, r, u, v, method, n_fit), used

    def _wall_only(self, ctx: InspectionContext, xy: np.ndarray, column: np.ndarray, r0: float, margin: float):
        """Robust circle through the points in the hole column: ``(centre, radius, indices)`` or None."""
        if len(column) < self.min_wall_points:
            return None
        c, r, rms, kept = fit_circle_robust(xy[column], min_points=12, floor=max(3.0 * ctx.noise_sigma, 1e-5))
        wl = column[kept]
        if (len(wl) >= self.min_wall_points and np.linalg.norm(c) < r0 + margin / 2 and 0.3 * r0 < r < r0 + margin
                and self._arc_deg(xy[wl], c) >= self.min_arc_deg / 2 and rms <= self._max_wall_rms(ctx)):
            return c, r, wl
        return None

    @staticmethod
    def _max_wall_rms(ctx: InspectionContext) -> float:
        """A wall fit worse than this is no wall (stray points of edges or other surfaces)."""
        return max(4.0 * ctx.noise_sigma, 5e-5)

    def _result(self, hole: HoleSpec, c: np.ndarray, r: float, u: np.ndarray, v: np.ndarray, method: str,
                n_fit: int) -> HoleMeasurement:
        centre = hole.centre + c[0] * u + c[1] * v
        c_err = float(np.linalg.norm(c))
        d_err = float(2.0 * r - hole.diameter)
        ok = c_err <= self.position_tolerance and abs(d_err) <= self.diameter_tolerance
        return HoleMeasurement(hole, True, True, centre, 2.0 * r, c_err, d_err, ok, method, int(n_fit))

    def _column(self, ctx: InspectionContext, hole: HoleSpec, centre: np.ndarray, radius: float) -> np.ndarray:
        """Indices of the points in a hole's column (entry face down to its depth) of ``radius``."""
        a = -hole.axis / np.linalg.norm(hole.axis)
        rel = ctx.points - centre
        h = rel @ a
        rho = np.linalg.norm(rel - h[:, None] * a, axis=1)
        depth = hole.depth or hole.diameter
        return np.flatnonzero((rho < radius) & (h > -depth - 2 * ctx.spacing)
                              & (h < 2 * ctx.spacing + 3 * ctx.noise_sigma))

    def find(self, ctx: InspectionContext) -> list[DefectFinding]:
        out = []
        for hole in ctx.model.holes:
            m, used = self.measure(ctx, hole)
            ctx.hole_measurements.append(m)
            if m.observed:
                # the hole rule judges its hole: the surface rules do not report the hole's points
                # again (a moved hole leaves material where the nominal hole was: not a bulge)
                r = hole.diameter / 2 + 3 * ctx.spacing
                cols = [self._column(ctx, hole, hole.centre, r)]
                if m.found:
                    cols.append(self._column(ctx, hole, m.centre, max(r, m.diameter / 2 + 3 * ctx.spacing)))
                ctx.claimed[np.concatenate(cols)] = True
            allow = ctx.allowances.get(hole.name, HoleAllowance(0.0, 0.0))
            # the error judged is what is left after the cell's bias for this hole
            c_err, d_err = m.centre_error, m.diameter_error
            if m.found:
                c_err = float(np.linalg.norm(m.centre - hole.centre - np.asarray(allow.centre_bias)))
                d_err = m.diameter_error - allow.diameter_bias
            within = m.found and c_err <= self.position_tolerance and abs(d_err) <= self.diameter_tolerance
            if not m.observed or within:
                continue
            idx = used if len(used) else np.zeros(0, dtype=np.int64)
            details = {"hole": hole.name, "nominal_centre": hole.centre.tolist(),
                       "nominal_diameter": hole.diameter, "measured_centre": m.centre.tolist(),
                       "measured_diameter": m.diameter, "centre_error": c_err, "diameter_error": d_err}
            kinds = []
            if not m.found:
                if np.isfinite(allow.position):
                    kinds.append(("missing", hole.diameter))
            else:
                if c_err > self.position_tolerance + allow.position:
                    kinds.append(("hole_position", c_err))
                if abs(d_err) > self.diameter_tolerance + allow.diameter:
                    kinds.append(("hole_diameter", abs(d_err)))
            centre = m.centre if m.found else hole.centre.copy()
            extent = np.ptp(ctx.points[idx], axis=0) if len(idx) else np.zeros(3)
            for kind, score in kinds:
                # the centroid of a hole finding is the measured (or, when missing, nominal) centre
                out.append(DefectFinding(kind, centre.copy(), extent, float(score), int(len(idx)),
                                         np.asarray(idx, dtype=np.int64), details))
            if len(idx):
                ctx.claimed[idx] = True
        return out
