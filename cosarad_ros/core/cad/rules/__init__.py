"""Rule-based defect checks of a scan against its CAD model (Kwon et al., Electronics 2025, sec. 3.7).

The scan must already be in the model frame (e.g. ``ClassificationResult.transform`` applied, or
any registration). Every scan point gets a signed deviation from the CAD surface (negative inside
the material) and a surface variation ``lambda3 / (lambda1 + lambda2 + lambda3)`` of its ``k``
nearest neighbours (Pauly et al., "Efficient simplification of point-sampled surfaces", IEEE Vis
2002). Three rules, each a small class chosen by name in :class:`RuleBasedInspector`:

* :class:`ScratchRule` - points deviating more than ``depth_threshold`` (paper: 2 mm) whose surface
  variation exceeds ``curvature_threshold`` (k = 50 in the paper), clustered with DBSCAN; beyond
  the paper a cluster must also be elongated (a scratch is long and narrow) to be called one.
* :class:`DentRule` - deviation normalised by the robust noise level (``|d| / sigma``, sigma from
  the median absolute deviation) above ``z_threshold`` and ``min_depth``, clustered with DBSCAN
  (Ester et al., KDD 1996; MinPts = 10 as in the paper); inward clusters are ``dent``, outward
  ones ``bulge``.
* :class:`HoleRule` - every nominal hole of the model's metadata: the points around the hole's
  entry face are projected onto the plane normal to its axis, the 2D alpha-shape boundary
  (Edelsbrunner et al., IEEE Trans. Inf. Theory 29(4), 1983) nearest the nominal centre is fitted
  with a circle (algebraic fit, Kasa, IEEE Trans. Instrum. Meas. 1976, refined by Gauss-Newton on
  the geometric distance), refined on the visible hole wall when there is one, and the hole is
  defective when its centre is off by more than ``position_tolerance`` (paper: 0.6 mm) or its
  diameter by more than ``diameter_tolerance`` (paper: 0.5 mm); a hole whose area is covered by
  material is ``missing``.

All thresholds are parameters in metres; the defaults are the paper's values.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from cosarad_ros.core.cad.library import CadModel, HoleSpec
from cosarad_ros.core.geometry import as_points, transform_points

__all__ = [
    "DefectFinding",
    "HoleMeasurement",
    "DefectReport",
    "InspectionContext",
    "Rule",
    "ScratchRule",
    "DentRule",
    "HoleRule",
    "RULES",
    "RuleBasedInspector",
    "detect_defects",
    "hole_allowances",
    "surface_variation",
    "dbscan",
    "fit_circle",
    "fit_circle_robust",
    "alpha_boundary",
    "HOLE_DEFECT_TYPES",
]

HOLE_DEFECT_TYPES = ("hole_position", "hole_diameter", "missing", "hole")


@dataclass(frozen=True)
class DefectFinding:
    """One defect (maps onto ``msg/Defect``).

    Attributes:
        type: ``scratch``, ``dent``, ``bulge``, ``hole_position``, ``hole_diameter``, ``missing``
            or ``hole`` (a surface finding in the column of a hole too obliquely seen to be measured).
        centroid: ``(3,)`` centre of its points [m] (model frame).
        extent: ``(3,)`` axis-aligned size of its points [m].
        score: largest absolute deviation [m] (surface defects) or the out-of-tolerance error [m]
            (holes).
        point_count: number of scan points.
        indices: ``(point_count,)`` indices into the scan.
        details: rule-specific values (depth, length, hole name, measured diameter...).
    """

    type: str
    centroid: np.ndarray
    extent: np.ndarray
    score: float
    point_count: int
    indices: np.ndarray = field(repr=False)
    details: Mapping = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"type": self.type, "centroid": [float(v) for v in self.centroid],
                "extent": [float(v) for v in self.extent], "score": float(self.score),
                "point_count": int(self.point_count), "details": _plain(self.details)}


@dataclass(frozen=True)
class HoleMeasurement:
    """Measurement of one nominal hole.

    Attributes:
        hole: the nominal :class:`HoleSpec`.
        observed: enough scan points around the hole to judge it.
        found: a circular opening was found near the nominal position.
        centre: ``(3,)`` measured centre on the entry plane [m] (NaN when not found).
        diameter: measured diameter [m] (NaN when not found).
        centre_error: distance of the measured centre from the nominal one [m].
        diameter_error: measured minus nominal diameter [m].
        ok: within both tolerances (``False`` when missing; ``True`` when not observed).
        method: ``"wall"`` or ``"boundary"`` (which points the final circle was fitted to), or
            ``"coverage"`` (missing hole, or a hole narrower than the alpha shape can open,
            measured where the material starts).
        fit_points: points of the final circle fit.
    """

    hole: HoleSpec
    observed: bool
    found: bool
    centre: np.ndarray
    diameter: float
    centre_error: float
    diameter_error: float
    ok: bool
    method: str = ""
    fit_points: int = 0

    def as_dict(self) -> dict:
        return {"name": self.hole.name, "nominal_centre": [float(v) for v in self.hole.centre],
                "nominal_diameter": float(self.hole.diameter), "observed": self.observed,
                "found": self.found, "centre": [float(v) for v in self.centre],
                "diameter": float(self.diameter), "centre_error": float(self.centre_error),
                "diameter_error": float(self.diameter_error), "ok": self.ok, "method": self.method,
                "fit_points": int(self.fit_points)}


@dataclass(frozen=True)
class DefectReport:
    """Result of :func:`detect_defects`.

    Attributes:
        defects: every finding, largest score first.
        holes: one measurement per nominal hole.
        deviation: ``(N,)`` signed point-to-CAD deviation [m] (negative inside the material).
        curvature: ``(N,)`` surface variation in [0, 1/3].
        labels: ``(N,)`` index into ``defects`` of each point, -1 for none.
        noise_sigma: robust standard deviation of the deviation [m].
        spacing: median nearest-neighbour spacing of the scan [m].
    """

    defects: tuple[DefectFinding, ...]
    holes: tuple[HoleMeasurement, ...]
    deviation: np.ndarray = field(repr=False)
    curvature: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    noise_sigma: float = 0.0
    spacing: float = 0.0

    @property
    def ok(self) -> bool:
        """No defect found."""
        return not self.defects

    def of_type(self, *types: str) -> tuple[DefectFinding, ...]:
        return tuple(d for d in self.defects if d.type in types)

    def point_mask(self, *types: str) -> np.ndarray:
        """``(N,)`` bool: points belonging to a defect (of the given types, or any)."""
        mask = self.labels >= 0
        if types:
            keep = np.array([d.type in types for d in self.defects] + [False])
            mask &= keep[self.labels]
        return mask

    def as_dict(self) -> dict:
        return {"defects": [d.as_dict() for d in self.defects], "holes": [h.as_dict() for h in self.holes],
                "noise_sigma": float(self.noise_sigma), "spacing": float(self.spacing)}


def _plain(obj):
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
def surface_variation(points, *, k: int = 50, tree: cKDTree | None = None) -> np.ndarray:
    """``lambda3 / (lambda1 + lambda2 + lambda3)`` of the ``k``-neighbour covariance, ``(N,)``.

    0 on a plane, up to 1/3 for isotropic neighbourhoods (Pauly et al. 2002).
    """
    pts = as_points(points)
    if k < 3:
        raise ValueError(f"surface_variation: k must be >= 3, got {k}")
    k = min(k, len(pts))
    if k < 3:
        return np.zeros(len(pts))
    tree = cKDTree(pts) if tree is None else tree
    _, idx = tree.query(pts, k=k)
    out = np.empty(len(pts))
    for s in range(0, len(pts), 20000):  # bounded memory
        nb = pts[idx[s:s + 20000]]
        d = nb - nb.mean(axis=1, keepdims=True)
        cov = np.einsum("nki,nkj->nij", d, d)
        ev = np.linalg.eigvalsh(cov)
        tot = ev.sum(axis=1)
        out[s:s + 20000] = np.where(tot > 0, ev[:, 0] / np.where(tot > 0, tot, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0 / 3.0)


def dbscan(points, *, eps: float, min_points: int) -> np.ndarray:
    """DBSCAN labels ``(N,)`` (-1 = noise) of ``(N, 3)`` points (Open3D's implementation)."""
    import open3d as o3d

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int64)
    if eps <= 0 or min_points < 1:
        raise ValueError(f"dbscan: eps must be > 0 and min_points >= 1, got {eps}, {min_points}")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    return np.asarray(pcd.cluster_dbscan(eps=float(eps), min_points=int(min_points)), dtype=np.int64)


def fit_circle(xy, *, iterations: int = 20) -> tuple[np.ndarray, float, float]:
    """Least-squares circle through 2D points ``(N, 2)``, ``N >= 3``.

    Algebraic fit (Kasa 1976) refined by Gauss-Newton on the geometric distance.

    Returns:
        ``(centre (2,), radius, rms residual)``.
    """
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        raise ValueError(f"fit_circle needs >= 3 points, got {len(p)}")
    A = np.column_stack([2 * p, np.ones(len(p))])
    b = (p ** 2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    c = sol[:2]
    r = float(np.sqrt(max(sol[2] + c @ c, 1e-18)))
    for _ in range(iterations):
        diff = p - c
        dist = np.linalg.norm(diff, axis=1)
        dist = np.where(dist < 1e-12, 1e-12, dist)
        res = dist - r
        J = np.column_stack([-diff / dist[:, None], -np.ones(len(p))])
        step, *_ = np.linalg.lstsq(J, -res, rcond=None)
        c = c + step[:2]
        r = float(r + step[2])
        if np.abs(step).max() < 1e-10:
            break
    rms = float(np.sqrt(np.mean((np.linalg.norm(p - c, axis=1) - r) ** 2)))
    return c, abs(r), rms


def fit_circle_robust(xy, *, min_points: int = 6, floor: float = 0.0, rounds: int = 4
                      ) -> tuple[np.ndarray, float, float, np.ndarray]:
    """:func:`fit_circle` with iterative rejection of points farther than
    ``max(3 x rms, floor)`` from the circle. Returns ``(centre, radius, rms, kept mask)``."""
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    keep = np.ones(len(p), dtype=bool)
    c, r, rms = fit_circle(p)
    for _ in range(rounds):
        new = np.abs(np.linalg.norm(p - c, axis=1) - r) <= max(3.0 * rms, floor)
        if new.sum() < min_points or np.array_equal(new, keep):
            break
        keep = new
        c, r, rms = fit_circle(p[keep])
    return c, r, rms, keep


def alpha_boundary(xy, *, alpha: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Boundary of the 2D alpha shape of ``xy`` ``(N, 2)``.

    Keeps the Delaunay triangles whose circumradius is below ``alpha``; boundary edges are the
    edges of exactly one kept triangle.

    Returns:
        ``(edges (E, 2) vertex indices, components)``: ``components`` lists the vertex indices of
        each connected chain of boundary edges.
    """
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(p) < 4:
        return np.zeros((0, 2), dtype=np.int64), []
    try:
        tri = Delaunay(p)
    except Exception:  # collinear / degenerate input
        return np.zeros((0, 2), dtype=np.int64), []
    s = tri.simplices
    a, b, c = p[s[:, 0]], p[s[:, 1]], p[s[:, 2]]
    la, lb, lc = (np.linalg.norm(b - c, axis=1), np.linalg.norm(a - c, axis=1), np.linalg.norm(a - b, axis=1))
    area = 0.5 * np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    R = la * lb * lc / np.maximum(4.0 * area, 1e-30)
    keep = s[R < alpha]
    if len(keep) == 0:
        return np.zeros((0, 2), dtype=np.int64), []
    edges = np.sort(np.vstack([keep[:, [0, 1]], keep[:, [1, 2]], keep[:, [0, 2]]]), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    bnd = uniq[counts == 1]
    # connected components of the boundary graph
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(bnd) == 0:
        return bnd, []
    verts = np.unique(bnd)
    remap = {int(v): i for i, v in enumerate(verts)}
    rows = np.array([remap[int(v)] for v in bnd[:, 0]])
    cols = np.array([remap[int(v)] for v in bnd[:, 1]])
    g = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(verts), len(verts)))
    n, lab = connected_components(g, directed=False)
    comps = [verts[lab == i] for i in range(n)]
    return bnd, comps


# ----------------------------------------------------------------------------------------------
# Context and rules
# ----------------------------------------------------------------------------------------------
@dataclass
class InspectionContext:
    """Per-scan quantities shared by the rules (computed once by :class:`RuleBasedInspector`)."""

    points: np.ndarray          # (N, 3) model frame
    model: CadModel
    deviation: np.ndarray       # (N,) signed
    curvature: np.ndarray       # (N,)
    noise_sigma: float
    spacing: float
    tree: cKDTree
    claimed: np.ndarray         # (N,) bool, points already given to a finding
    local_spacing: np.ndarray   # (N,) mean distance to the 4 nearest neighbours
    surface: np.ndarray         # (N, 3) closest points on the CAD surface (shapes of defects on it)
    hole_measurements: list = field(default_factory=list)  # filled by HoleRule
    allowances: Mapping = field(default_factory=dict)      # hole name -> (position, diameter) extra tolerance [m]

    def eps(self, eps: float | None, factor: float = 3.0, idx: np.ndarray | None = None) -> float:
        """DBSCAN radius: ``eps`` when given, else ``factor`` x the point spacing where the
        candidates ``idx`` lie (faces seen obliquely are sampled more sparsely)."""
        if eps is not None:
            return float(eps)
        sp = self.spacing
        if idx is not None and len(idx):
            sp = max(sp, float(np.percentile(self.local_spacing[idx], 75)))
        return max(factor * sp, 1e-6)


def _finding(kind: str, pts: np.ndarray, idx: np.ndarray, score: float, details: Mapping) -> DefectFinding:
    sub = pts[idx]
    return DefectFinding(type=kind, centroid=sub.mean(axis=0), extent=np.ptp(sub, axis=0), score=float(score),
                         point_count=int(len(idx)), indices=np.asarray(idx, dtype=np.int64), details=dict(details))


def _elongation(sub: np.ndarray) -> tuple[float, float, float]:
    """``(length, width, length / width)`` of a cluster from its two main principal extents."""
    if len(sub) < 3:
        return 0.0, 0.0, 1.0
    c = sub - sub.mean(axis=0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    proj = c @ vt[:2].T
    ext = np.ptp(proj, axis=0)
    length, width = float(ext[0]), float(ext[1])
    return length, width, length / max(width, 1e-9)


class Rule(ABC):
    """A defect rule: ``find(ctx) -> list of DefectFinding`` (hole rules also append their
    measurements to ``ctx.hole_measurements``)."""

    name = "rule"

    @abstractmethod
    def find(self, ctx: InspectionContext) -> list[DefectFinding]:
        """Findings in ``ctx``; a rule marks the points it used in ``ctx.claimed``."""


class ScratchRule(Rule):
    """Scratches: deep deviation on high surface variation, elongated clusters.

    Args:
        depth_threshold: least absolute deviation of a scratch point [m] (paper: 2 mm).
        curvature_threshold: least surface variation of a scratch point (k-neighbourhood of the
            inspector; a 0.3 mm deep groove gives about 0.007 at k = 50 and 0.3 mm point spacing,
            a plane with 20 um noise 0.0003, a smooth 10 mm dent 0.0005).
        eps: DBSCAN radius [m]; ``None``: 8 x the point spacing where the candidates lie (a
            narrow groove is seen only in pieces, so the clusters need a wide radius).
        min_points: DBSCAN MinPts and smallest scratch.
        min_elongation: least length / width of a scratch cluster (1 = no shape check).
        min_length: shortest scratch [m].
        max_surround: a cluster is no scratch when more than this many deviating points per
            cluster point lie around it (it is part of a wider defect); ``None`` disables the check.
    """

    name = "scratch"

    def __init__(self, *, depth_threshold: float = 0.002, curvature_threshold: float = 0.002,
                 eps: float | None = None, min_points: int = 5, min_elongation: float = 4.0,
                 min_length: float = 0.003, max_surround: float | None = 1.0):
        if depth_threshold <= 0 or not 0 <= curvature_threshold <= 1 / 3 or min_points < 1:
            raise ValueError("scratch rule: depth_threshold > 0, curvature_threshold in [0, 1/3], min_points >= 1")
        if eps is not None and eps <= 0:
            raise ValueError(f"scratch rule: eps must be > 0, got {eps}")
        self.depth_threshold = float(depth_threshold)
        self.curvature_threshold = float(curvature_threshold)
        self.eps = eps
        self.min_points = int(min_points)
        self.min_elongation = float(min_elongation)
        self.min_length = float(min_length)
        self.max_surround = None if max_surround is None else float(max_surround)

    def find(self, ctx: InspectionContext) -> list[DefectFinding]:
        cand = np.flatnonzero((np.abs(ctx.deviation) > self.depth_threshold)
                              & (ctx.curvature > self.curvature_threshold) & ~ctx.claimed)
        out = []
        if len(cand) < self.min_points:
            return out
        lab = dbscan(ctx.points[cand], eps=ctx.eps(self.eps, 8.0, cand), min_points=self.min_points)
        deviating = np.abs(ctx.deviation) > self.depth_threshold
        for c in range(lab.max() + 1 if len(lab) else 0):
            idx = cand[lab == c]
            length, width, elong = _elongation(ctx.surface[idx])
            if len(idx) < self.min_points or elong < self.min_elongation or length < self.min_length:
                continue
            if self.max_surround is not None:
                # a scratch is a narrow groove in nominal surface; a curved, elongated piece of a
                # larger deviating area (e.g. the rim of a wide dent) is left to the dent rule
                r = ctx.eps(self.eps, 3.0, idx)
                near = np.unique(np.concatenate(ctx.tree.query_ball_point(ctx.points[idx], r)))
                around = np.setdiff1d(near[deviating[near] & ~ctx.claimed[near]], idx)
                if len(around) > self.max_surround * len(idx):
                    continue
            dev = ctx.deviation[idx]
            out.append(_finding("scratch", ctx.points, idx, np.abs(dev).max(),
                                {"depth": float(np.abs(dev).max()), "length": length, "width": width,
                                 "elongation": elong, "mean_curvature": float(ctx.curvature[idx].mean())}))
            ctx.claimed[idx] = True
        return out


class DentRule(Rule):
    """Dents (inward) and bulges (outward): clusters of noise-normalised deviation.

    Args:
        z_threshold: least ``|d| / sigma`` of a dent point (sigma: robust noise of the deviation).
        min_depth: least absolute deviation [m].
        eps: DBSCAN radius [m]; ``None``: 3 x the point spacing where the candidates lie.
        min_points: DBSCAN MinPts (paper: 10) and smallest dent.
        min_size: smallest dent diameter [m] (largest extent of the cluster).
        report_bulges: also report outward clusters as ``bulge``.
        scratch_elongation: beyond the paper, an inward cluster at least this elongated
            (length / width) and at most ``scratch_max_width`` wide is reported as a ``scratch``
            (wide or shallow grooves have too little curvature for :class:`ScratchRule`);
            ``None`` disables it.
        scratch_max_width: widest such scratch [m].
        scratch_link: inward clusters closer than this [m] are joined when together they form
            such a groove.
    """

    name = "dent"

    def __init__(self, *, z_threshold: float = 4.0, min_depth: float = 0.0002, eps: float | None = None,
                 min_points: int = 10, min_size: float = 0.0, report_bulges: bool = True,
                 scratch_elongation: float | None = 2.5, scratch_max_width: float = 0.0025,
                 scratch_link: float = 0.005):
        if z_threshold <= 0 or min_depth < 0 or min_points < 1 or min_size < 0:
            raise ValueError("dent rule: z_threshold > 0, min_depth >= 0, min_points >= 1, min_size >= 0")
        if eps is not None and eps <= 0:
            raise ValueError(f"dent rule: eps must be > 0, got {eps}")
        self.z_threshold = float(z_threshold)
        self.min_depth = float(min_depth)
        self.eps = eps
        self.min_points = int(min_points)
        self.min_size = float(min_size)
        self.report_bulges = bool(report_bulges)
        self.scratch_elongation = None if scratch_elongation is None else float(scratch_elongation)
        self.scratch_max_width = float(scratch_max_width)
        self.scratch_link = float(scratch_link)

    def find(self, ctx: InspectionContext) -> list[DefectFinding]:
        z = np.abs(ctx.deviation) / max(ctx.noise_sigma, 1e-9)
        cand = np.flatnonzero((z > self.z_threshold) & (np.abs(ctx.deviation) > self.min_depth) & ~ctx.claimed)
        out = []
        if len(cand) < self.min_points:
            return out
        eps = ctx.eps(self.eps, 3.0, cand)
        lab = dbscan(ctx.points[cand], eps=eps, min_points=self.min_points)
        clusters = [cand[lab == c] for c in range(lab.max() + 1 if len(lab) else 0)]
        clusters = [c for c in clusters if len(c) >= self.min_points]
        if self.scratch_elongation is not None:
            clusters = self._link_grooves(ctx, clusters)
        for idx in clusters:
            size = float(np.ptp(ctx.points[idx], axis=0).max())
            if size < self.min_size:
                continue
            dev = ctx.deviation[idx]
            kind = "dent" if np.median(dev) < 0 else "bulge"
            details = {"depth": float(np.abs(dev).max()), "size": size, "max_z": float(z[idx].max())}
            if self.scratch_elongation is not None and kind == "dent" and self._groove(ctx, idx):
                # long and narrow: a scratch too wide or shallow for the curvature filter
                length, width, elong = _elongation(ctx.surface[idx])
                kind = "scratch"
                details.update(length=length, width=width, elongation=elong)
            if kind == "bulge" and not self.report_bulges:
                continue
            out.append(_finding(kind, ctx.points, idx, np.abs(dev).max(), details))
            ctx.claimed[idx] = True
        return out

    def _groove(self, ctx: InspectionContext, idx: np.ndarray) -> bool:
        # shape on the CAD surface: the depth of a deep narrow groove must not count as width
        _, width, elong = _elongation(ctx.surface[idx])
        return elong >= self.scratch_elongation and width <= self.scratch_max_width

    def _link_grooves(self, ctx: InspectionContext, clusters: list[np.ndarray]) -> list[np.ndarray]:
        """Join inward clusters within ``scratch_link`` of each other when their union is a groove
        (a narrow scratch is seen in pieces, and a short piece alone looks like a small dent)."""
        clusters = [c for c in clusters]
        inward = [bool(np.median(ctx.deviation[c]) < 0) for c in clusters]
        merged = True
        while merged:
            merged = False
            for i in range(len(clusters)):
                for j in range(i + 1, len(clusters)):
                    if not (inward[i] and inward[j]):
                        continue
                    if not (self._groove(ctx, clusters[i]) or self._groove(ctx, clusters[j])):
                        continue
                    gap, _ = cKDTree(ctx.points[clusters[i]]).query(ctx.points[clusters[j]], k=1)
                    if gap.min() > self.scratch_link:
                        continue
                    union = np.concatenate([clusters[i], clusters[j]])
                    if self._groove(ctx, union):
                        clusters[i] = union
                        del clusters[j], inward[j]
                        merged = True
                        break
                if merged:
                    break
        return clusters


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
        return np.flatnonzero((rho < radius) & (h > -depth - 2 * ctx.spacing) & (h < 2 * ctx.spacing + 3 * ctx.noise_sigma))

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
            if not m.observed or m.ok:
                continue
            idx = used if len(used) else np.zeros(0, dtype=np.int64)
            details = {"hole": hole.name, "nominal_centre": hole.centre.tolist(),
                       "nominal_diameter": hole.diameter, "measured_centre": m.centre.tolist(),
                       "measured_diameter": m.diameter, "centre_error": m.centre_error,
                       "diameter_error": m.diameter_error}
            kinds = []
            extra_pos, extra_dia = ctx.allowances.get(hole.name, (0.0, 0.0))
            if not m.found:
                if np.isfinite(extra_pos):
                    kinds.append(("missing", hole.diameter))
            else:
                if m.centre_error > self.position_tolerance + extra_pos:
                    kinds.append(("hole_position", m.centre_error))
                if abs(m.diameter_error) > self.diameter_tolerance + extra_dia:
                    kinds.append(("hole_diameter", abs(m.diameter_error)))
            centre = m.centre if m.found else hole.centre.copy()
            extent = np.ptp(ctx.points[idx], axis=0) if len(idx) else np.zeros(3)
            for kind, score in kinds:
                # the centroid of a hole finding is the measured (or, when missing, nominal) centre
                out.append(DefectFinding(kind, centre.copy(), extent, float(score), int(len(idx)),
                                         np.asarray(idx, dtype=np.int64), details))
            if len(idx):
                ctx.claimed[idx] = True
        return out


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
        the hole's nominal centre instead."""
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
        ``merge_distance`` and still long and narrow together (a groove seen in pieces)."""
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
        ``allowances`` maps hole names to ``(position, diameter)`` [m] added to the hole rule's
        tolerances (the measurement uncertainty of that hole in this cell; ``inf``: do not judge
        it, see :func:`hole_allowances`)."""
        pts = as_points(scan, name="scan", min_points=10)
        if transform is not None:
            pts = transform_points(transform, pts)
        n_all = len(pts)
        sel = np.arange(n_all)
        if n_all > self.max_points:
            sel = np.sort(np.random.default_rng(self.seed).choice(n_all, self.max_points, replace=False))
        ctx = self.context(pts[sel], model)
        if allowances:
            ctx.allowances = dict(allowances)
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
                    margin: float = 2.5e-4) -> dict[str, tuple[float, float]]:
    """How well a cell measures each hole of ``model``: the hole rule run on scans of good parts
    (``templates``, model frame, e.g. simulated through the cell's views) -- a hole is measured
    as far off as the worst of them, plus ``margin``, before it is judged defective; a hole that
    is not found in every good scan is not judged at all (``inf``). A measurement-system check in
    the spirit of a gauge study: the tolerance a drawing gives is widened by what the cell cannot
    resolve.

    Returns:
        ``{hole name: (position allowance, diameter allowance)}`` [m].
    """
    worst: dict[str, list] = {h.name: [0.0, 0.0, True] for h in model.holes}
    for t in templates:
        report = inspector.inspect(t, model)
        for m in report.holes:
            w = worst[m.hole.name]
            if not (m.observed and m.found):
                w[2] = False
                continue
            w[0] = max(w[0], float(m.centre_error))
            w[1] = max(w[1], abs(float(m.diameter_error)))
    return {name: ((p + margin, d + margin) if ok else (float("inf"), float("inf")))
            for name, (p, d, ok) in worst.items()}


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
