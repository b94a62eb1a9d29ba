"""Running the rules: the rule registry (:data:`RULES`), :class:`RuleBasedInspector` (rules in
order, then scratch merging and attribution to unmeasured holes), :func:`hole_allowances` and
:func:`detect_defects`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree

from cosarad_ros.core.cad.library import CadModel
from cosarad_ros.core.geometry import as_points, transform_points

from .blocks import surface_variation
from .context import InspectionContext, Rule, _elongation, _finding
from .dent import DentRule
from .hole import HoleRule
from .results import DefectFinding, DefectReport, HoleAllowance
from .scratch import ScratchRule

RULES = {"scratch": ScratchRule, "dent": DentRule, "hole": HoleRule}


class RuleBasedInspector:
    """Runs rules in order on a scan in the model frame.

    Args:
        rules: rule names (default ``("hole", "dent", "scratch")``: holes first so that hole
            points are not reported again as dents, dents before the curvature-based scratch rule
            so that the curved rim of a wide dent is not taken for a scratch), a mapping
            ``name -> options`` or :class:`Rule` instances.
        k: neighbours of the surface variation (paper: 50).
        merge_distance: scratch findings closer than this [m] that form one long, narrow groove
            together are reported as one (0 = never).
        max_points: random subset size (the labels of left-out points are -1).
        seed: seed of that subset.
    """

    def __init__(self, rules: Sequence | Mapping | None = None, *, k: int = 50, merge_distance: float = 0.005,
                 max_points: int = 200000, seed: int = 0):
        if rules is None:
            rules = ("hole", "dent", "scratch")
        items = list(rules.items()) if isinstance(rules, Mapping) else [(r, {}) for r in rules]
        self.rules: list[Rule] = []
        for name, opts in items:
            if isinstance(name, Rule):
                self.rules.append(name)
                continue
            if name not in RULES:
                raise ValueError(f"unknown defect rule {name!r}; choose from {sorted(RULES)}")
            try:
                self.rules.append(RULES[name](**dict(opts or {})))
            except TypeError as exc:
                raise ValueError(f"bad options for defect rule {name!r}: {exc}") from None
        if k < 3:
            raise ValueError(f"k must be >= 3, got {k}")
        self.k = int(k)
        self.merge_distance = float(merge_distance)
        self.max_points = int(max_points)
        self.seed = int(seed)

    def context(self, points: np.ndarray, model: CadModel) -> InspectionContext:
        tree = cKDTree(points)
        surface, normals = model.closest_points(points)
        diff = points - surface
        dev = np.linalg.norm(diff, axis=1) * np.where(np.einsum("ij,ij->i", diff, normals) < 0.0, -1.0, 1.0)
        curv = surface_variation(points, k=self.k, tree=tree)
        mad = float(np.median(np.abs(dev - np.median(dev))))
        sigma = max(1.4826 * mad, 1e-6)
        k = min(5, len(points))
        d, _ = tree.query(points, k=k)
        local = d[:, 1:].mean(axis=1) if k > 1 else np.zeros(len(points))
        spacing = float(np.median(d[:, 1])) if k > 1 else 0.0
        return InspectionContext(points, model, dev, curv, sigma, spacing, tree, np.zeros(len(points), bool),
                                 local, surface)

    @staticmethod
    def _attribute_to_holes(ctx: InspectionContext, findings: list[DefectFinding]) -> list[DefectFinding]:
        """A dent, bulge or scratch lying mostly in the column of a hole the hole rule could not measure
        (seen too obliquely) is that hole deviating from the CAD: report one ``hole`` finding at
        the hole's nominal centre instead.
        """
        unmeasured = [m.hole for m in ctx.hole_measurements if not m.observed]
        if not unmeasured:
            return findings
        out, per_hole = [], {}
        for f in findings:
            hole = None
            if f.type in ("dent", "bulge", "scratch"):
                for hs in unmeasured:
                    # most of the finding's points deviate from this hole's CAD surface: their
                    # closest CAD points lie on its wall, on the entry face around it or, when
                    # the depth is known, around its far end (the exit of a through hole, the
                    # floor of a blind one: a moved or resized hole deviates at both openings).
                    # A dent on another face that merely comes close stays a dent.
                    a = -hs.axis / np.linalg.norm(hs.axis)
                    rel = ctx.surface[f.indices] - hs.centre
                    h = rel @ a
                    rho = np.linalg.norm(rel - h[:, None] * a, axis=1)
                    depth = hs.depth or hs.diameter
                    r0 = 0.5 * hs.diameter
                    on_wall = (np.abs(rho - r0) < 0.0005) & (h > -depth - 0.0005) & (h < 0.0005)
                    on_entry = (np.abs(h) < 0.0005) & (rho < r0 + 0.003)
                    if hs.depth is not None:
                        on_entry |= (np.abs(h + hs.depth) < 0.0005) & (rho < r0 + 0.003)
                    if (on_wall | on_entry).mean() >= 0.7:
                        hole = hs
                        break
            if hole is None:
                out.append(f)
            else:
                per_hole.setdefault(hole.name, (hole, []))[1].append(f)
        for hole, fs in per_hole.values():
            # one finding per hole, at the hole (like the measured holes), with all its points
            idx = np.concatenate([f.indices for f in fs])
            details = {"hole": hole.name, "surface_types": sorted({f.type for f in fs}),
                       "nominal_centre": hole.centre.tolist(), "nominal_diameter": hole.diameter,
                       "depth": max(float(f.details.get("depth", f.score)) for f in fs)}
            out.append(DefectFinding("hole", hole.centre.copy(), np.ptp(ctx.points[idx], axis=0),
                                     max(f.score for f in fs), int(len(idx)), idx, details))
        return out

    def _merge_scratches(self, ctx: InspectionContext, findings: list[DefectFinding]) -> list[DefectFinding]:
        """Join scratch findings (from any rule) that continue each other: closer than
        ``merge_distance`` and still long and narrow together (a groove seen in pieces).
        """
        if self.merge_distance <= 0:
            return findings
        scratches = [f for f in findings if f.type == "scratch"]
        others = [f for f in findings if f.type != "scratch"]
        merged = True
        while merged and len(scratches) > 1:
            merged = False
            for i in range(len(scratches)):
                for j in range(i + 1, len(scratches)):
                    a, b = scratches[i], scratches[j]
                    gap, _ = cKDTree(ctx.points[a.indices]).query(ctx.points[b.indices], k=1)
                    if gap.min() > self.merge_distance:
                        continue
                    idx = np.concatenate([a.indices, b.indices])
                    length, width, elong = _elongation(ctx.surface[idx])
                    if elong < 3.0:
                        continue
                    dev = ctx.deviation[idx]
                    scratches[i] = _finding("scratch", ctx.points, idx, np.abs(dev).max(),
                                            {"depth": float(np.abs(dev).max()), "length": length, "width": width,
                                             "elongation": elong})
                    del scratches[j]
                    merged = True
                    break
                if merged:
                    break
        return others + scratches

    def inspect(self, scan, model: CadModel, *, transform=None, allowances: Mapping | None = None) -> DefectReport:
        """Apply the rules. ``transform`` ``(4, 4)`` maps the scan into the model frame;
        ``allowances`` maps hole names to :class:`HoleAllowance` (or ``(position, diameter)``
        [m]): the bias taken off that hole's measurement and the spread added to the hole rule's
        tolerances in this cell (``inf``: do not judge it), see :func:`hole_allowances`.
        """
        pts = as_points(scan, name="scan", min_points=10)
        if transform is not None:
            pts = transform_points(transform, pts)
        n_all = len(pts)
        sel = np.arange(n_all)
        if n_all > self.max_points:
            sel = np.sort(np.random.default_rng(self.seed).choice(n_all, self.max_points, replace=False))
        ctx = self.context(pts[sel], model)
        if allowances:
            ctx.allowances = {k: HoleAllowance(*v) for k, v in allowances.items()}
        findings: list[DefectFinding] = []
        for rule in self.rules:
            findings.extend(rule.find(ctx))
        holes = tuple(ctx.hole_measurements)
        findings = self._merge_scratches(ctx, findings)
        findings = self._attribute_to_holes(ctx, findings)
        findings.sort(key=lambda f: -f.score)
        # map back to the full scan's indices
        findings = [DefectFinding(f.type, f.centroid, f.extent, f.score, f.point_count, sel[f.indices], f.details)
                    for f in findings]
        labels = np.full(n_all, -1, dtype=np.int64)
        for i in range(len(findings) - 1, -1, -1):
            labels[findings[i].indices] = i
        dev = np.full(n_all, np.nan)
        dev[sel] = ctx.deviation
        curv = np.full(n_all, np.nan)
        curv[sel] = ctx.curvature
        return DefectReport(tuple(findings), holes, dev, curv, labels, ctx.noise_sigma, ctx.spacing)


def hole_allowances(inspector: "RuleBasedInspector", templates, model: CadModel, *,
                    margin: float = 2.5e-4) -> dict[str, HoleAllowance]:
    """How well a cell measures each hole of ``model``: the hole rule run on scans of good parts
    (``templates``, model frame, e.g. simulated through the cell's views). A measurement-system
    check in the spirit of a gauge study (AIAG, *Measurement Systems Analysis*, 4th ed., 2010):
    the mean error of the good scans is the cell's bias for that hole (a hole rim between sparse
    points reads systematically wide) and is taken off every later measurement; the tolerance a
    drawing gives is widened by the good scans' largest spread around that bias plus ``margin``.
    A hole that is not found in every good scan is not judged at all (``inf``).

    Returns:
        ``{hole name: HoleAllowance}`` [m].
    """
    seen: dict[str, list] = {h.name: [] for h in model.holes}
    hidden: set[str] = set()
    for t in templates:
        report = inspector.inspect(t, model)
        for m in report.holes:
            if not (m.observed and m.found):
                hidden.add(m.hole.name)
                continue
            seen[m.hole.name].append((np.asarray(m.centre, dtype=np.float64) - m.hole.centre, float(m.diameter_error)))
    out = {}
    for name, errs in seen.items():
        if name in hidden or not errs:
            out[name] = HoleAllowance(float("inf"), float("inf"))
            continue
        offsets = np.array([o for o, _ in errs])
        diams = np.array([d for _, d in errs])
        bias_c, bias_d = offsets.mean(0), float(diams.mean())
        out[name] = HoleAllowance(float(np.linalg.norm(offsets - bias_c, axis=1).max()) + margin,
                                  float(np.abs(diams - bias_d).max()) + margin, tuple(bias_c.tolist()), bias_d)
    return out


def detect_defects(scan, model: CadModel, *, transform=None, rules: Sequence | Mapping | None = None,
                   k: int = 50, max_points: int = 200000, seed: int = 0) -> DefectReport:
    """Rule-based defects of ``scan`` ``(N, 3)`` against ``model`` (see the module docstring).

    Args:
        scan: points [m], in the model frame unless ``transform`` is given.
        model: the :class:`CadModel` (its ``holes`` are checked by the hole rule).
        transform: optional ``(4, 4)`` scan -> model frame (e.g. ``ClassificationResult.transform``).
        rules: see :class:`RuleBasedInspector`; e.g.
            ``{"hole": {}, "scratch": {"depth_threshold": 0.0002}, "dent": {"min_points": 10}}``.
        k: neighbours of the surface variation.
        max_points, seed: random subset for very large scans.

    Returns:
        :class:`DefectReport`.
    """
    return RuleBasedInspector(rules, k=k, max_points=max_points, seed=seed).inspect(scan, model, transform=transform)
