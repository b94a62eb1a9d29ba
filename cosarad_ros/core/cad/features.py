"""Pose normalisation and bounding-box shape features (Kwon et al., Electronics 2025, sec. 3.5).

The classifier of Kwon et al. describes a part by the width, height and length of its bounding box
after pose normalisation, plus its volume, and compares two such feature vectors with the mean of a
cosine similarity and a Euclidean similarity ``1 - |v1 - v2| / (|v1| + |v2|)``.

Here the pose normalisation is a minimum-volume oriented bounding box (O'Rourke, "Finding minimal
enclosing boxes", Int. J. Comput. Inf. Sci. 14(3), 1985, through ``trimesh.bounds.oriented_bounds``)
and by the frame of the scan's largest plane (its normal plus the minimum-area rectangle of the
points projected onto it, for machined parts whose flat faces fix the box), each refined by a
local search on a *robust* box volume, so that sensor noise and stray points neither tilt the box
nor inflate it. PCA (the paper's choice) is available as ``method="pca"``.

Extents are sorted ascending, so ``dimensions = (width, height, length)`` with
``width <= height <= length`` and two boxes are compared axis by axis whatever the part's pose.
All lengths are in metres.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.spatial import cKDTree

from cosarad_ros.core.geometry import as_points

__all__ = [
    "BoxFeatures",
    "POSE_METHODS",
    "VOLUME_MODES",
    "box_features",
    "box_hypotheses",
    "mesh_box_features",
    "smooth_points",
    "feature_similarity",
    "cosine_similarity",
    "euclidean_similarity",
]

POSE_METHODS = ("obb", "pca")
VOLUME_MODES = ("box", "hull")


@dataclass(frozen=True)
class BoxFeatures:
    """Bounding-box description of a part or scan.

    Attributes:
        dimensions: ``(3,)`` box extents sorted ascending ``(width, height, length)`` [m].
        volume: box volume ``w * h * l`` or convex-hull volume (see ``volume_mode``) [m^3].
        frame: ``(4, 4)`` transform from the normalised box frame (origin at the box centre, axes
            along ``dimensions``) into the input frame. ``inv(frame)`` pose-normalises the input.
        volume_mode: ``"box"`` or ``"hull"``.
    """

    dimensions: np.ndarray
    volume: float
    frame: np.ndarray = field(repr=False)
    volume_mode: str = "box"

    def vector(self) -> np.ndarray:
        """Feature vector ``(4,)``: ``(w, h, l, cbrt(volume))`` [m].

        The volume enters through its cube root so that every component is a length and no
        component dominates the cosine / Euclidean similarity only because of its unit.
        """
        return np.concatenate([self.dimensions, [np.cbrt(max(self.volume, 0.0))]])

    @property
    def diagonal(self) -> float:
        """Length of the box diagonal [m]."""
        return float(np.linalg.norm(self.dimensions))


def _check_method(method: str) -> None:
    if method not in POSE_METHODS:
        raise ValueError(f"unknown pose normalisation method {method!r}; choose one of {POSE_METHODS}")


def smooth_points(points, *, k: int = 16) -> np.ndarray:
    """Project every point onto the least-squares plane of its ``k`` nearest neighbours.

    Reduces Gaussian sensor noise on flat and gently curved surfaces by about ``sqrt(k)`` (a
    one-step moving-least-squares projection, Alexa et al., "Computing and rendering point set
    surfaces", IEEE TVCG 2003), which keeps the noise from inflating the box extents.

    Args:
        points: ``(N, 3)``.
        k: neighbourhood size (>= 4); ``N < k`` returns the points unchanged.

    Returns:
        ``(N, 3)`` float64.
    """
    pts = as_points(points)
    if k < 4:
        raise ValueError(f"smooth_points: k must be >= 4, got {k}")
    if len(pts) < k:
        return pts.copy()
    _, idx = cKDTree(pts).query(pts, k=k)
    nb = pts[idx]                                    # (N, k, 3)
    mu = nb.mean(axis=1)
    d = nb - mu[:, None, :]
    cov = np.einsum("nki,nkj->nij", d, d) / k
    _, vecs = np.linalg.eigh(cov)
    normal = vecs[:, :, 0]                           # smallest eigenvalue
    off = np.einsum("ni,ni->n", pts - mu, normal)
    return pts - off[:, None] * normal


def _robust_extent(local: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis order statistics that leave ``floor(quantile * (N - 1))`` points outside each side."""
    if quantile <= 0.0:
        return local.min(axis=0), local.max(axis=0)
    n = len(local)
    k = int(quantile * (n - 1))
    if k == 0:
        return local.min(axis=0), local.max(axis=0)
    part = np.partition(local, [k, n - 1 - k], axis=0)
    return part[k], part[n - 1 - k]


def _largest_plane(pts: np.ndarray, threshold: float, *, hypotheses: int = 200, max_points: int = 1500,
                   seed: int = 0) -> tuple[np.ndarray | None, int]:
    """RANSAC plane (Fischler and Bolles, CACM 1981) of ``(N, 3)`` points: unit normal ``(3,)``
    refined by PCA of its inliers, and the inlier count among ``max_points`` points (deterministic).
    """
    rng = np.random.default_rng(seed)
    P = pts if len(pts) <= max_points else pts[rng.choice(len(pts), max_points, replace=False)]
    tri = P[rng.integers(0, len(P), size=(hypotheses, 3))]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-12
    if not ok.any():
        return None, 0
    n = n[ok] / norm[ok, None]
    dist = np.abs((P[None, :, :] - tri[ok, 0][:, None, :]) @ n[:, :, None])[..., 0]   # (H, N)
    counts = (dist <= threshold).sum(axis=1)
    best = int(np.argmax(counts))
    inl = P[dist[best] <= threshold]
    if len(inl) < 3:
        return None, 0
    _, vecs = np.linalg.eigh(np.cov((inl - inl.mean(axis=0)).T))
    return vecs[:, 0], int(counts[best])


def _plane_frame(pts: np.ndarray) -> np.ndarray | None:
    """Box axes from the largest plane of the scan: its normal, and the minimum-area rectangle
    of the points projected onto it (machined parts rest on / show a large flat face).
    """
    import trimesh

    diag = float(np.linalg.norm(np.ptp(pts, axis=0)))
    n, count = _largest_plane(pts, max(0.005 * diag, 1e-5))
    if n is None or count < 0.05 * min(len(pts), 1500):
        return None
    ref = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(n, ref)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    xy = pts @ np.column_stack([e1, e2])
    try:
        T2, _ = trimesh.bounds.oriented_bounds_2D(xy)
    except Exception:  # degenerate projection
        return None
    R2 = np.asarray(T2)[:2, :2]
    a1 = R2[0, 0] * e1 + R2[0, 1] * e2
    a2 = R2[1, 0] * e1 + R2[1, 1] * e2
    R = np.vstack([a1, a2, n])
    if np.linalg.det(R) < 0:
        R[2] *= -1
    return R


def _initial_rotations(pts: np.ndarray, method: str, max_hull_points: int = 1500) -> list[tuple[str, np.ndarray]]:
    """Candidate rotations ``R`` (rows = box axes in the input frame), named ``"obb"``, ``"pca"``
    or ``"plane"``.
    """
    centred = pts - pts.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    pca = vecs[:, ::-1].T.copy()
    if np.linalg.det(pca) < 0:
        pca[2] *= -1
    if method == "pca":
        return [("pca", pca)]
    import trimesh  # local: only the OBB path needs it

    rots = [("pca", pca)]
    hull_pts = pts
    if len(pts) > max_hull_points:  # the box only depends on the hull; a random subset keeps qhull fast
        hull_pts = pts[np.random.default_rng(0).choice(len(pts), max_hull_points, replace=False)]
    try:
        to_origin, _ = trimesh.bounds.oriented_bounds(hull_pts, angle_digits=3)
        rots.insert(0, ("obb", np.asarray(to_origin)[:3, :3]))
    except Exception:  # qhull fails on degenerate (flat, collinear) inputs; PCA still works
        pass
    plane = _plane_frame(hull_pts)
    if plane is not None:
        rots.append(("plane", plane))
    return rots


def box_features(points, *, method: str = "obb", quantile: float = 0.0005, refine: bool = True,
                 smooth_k: int = 0, volume_mode: str = "box", max_points: int = 20000,
                 seed: int = 0, min_trim: int = 10) -> BoxFeatures:
    """Pose-normalised bounding box of a scan.

    Args:
        points: ``(N, 3)`` scan points [m], ``N >= 10``.
        method: ``"obb"`` (minimum-volume oriented box, refined) or ``"pca"`` (principal axes, the
            paper's pose normalisation).
        quantile: share of points allowed outside the box at each side (robust extents; 0 = exact
            min / max). The default (10 of 20000 points) keeps isolated outliers from inflating
            the box while moving a face of a box-like part, or the rim of a round one, by far less
            than the 1 mm tolerance (measured: extents within 0.3 mm on 4-view scans of the
            procedural catalogue with 0.03 and 0.1 mm noise).
        refine: refine the orientation by minimising the robust box volume (Nelder-Mead over a
            rotation vector) from each initial rotation.
        smooth_k: neighbours of the plane projection that removes noise first (0 = off; it helps
            on flat faces with strong noise but shrinks rounded edges).
        volume_mode: ``"box"`` (``w * h * l``, the paper) or ``"hull"`` (convex-hull volume of the
            points, which also tells a box from a cylinder with the same extents).
        max_points: random subset size for speed (the quantile keeps the estimate stable).
        seed: seed of that subset.
        min_trim: at least this many points per side may lie outside the box (when
            ``quantile > 0``), at most 2 % of the points: the number of stray points (sensor
            points of the fixture or table just above the crop, mixed pixels) does not shrink
            with the density of the scan, so a sparse scan (a fused survey of 1 500 points, where
            ``quantile`` alone allows less than one point) is trimmed as much as a dense one
            (10 of 20 000 points, as the default quantile; dense scans are not affected). The
            price: where an extent ends on a sparsely sampled edge, a sparse scan's extent
            shrinks (measured on the cell's fused scans of 1 300-6 500 points: up to 1.8 mm, a
            shortfall that ``max_shortfall`` admits). 0: ``quantile`` alone.

    Returns:
        :class:`BoxFeatures`.
    """
    pts = as_points(points, name="scan", min_points=10)
    return _box(pts, method=method, quantile=quantile, refine=refine, smooth_k=smooth_k,
                volume_mode=volume_mode, max_points=max_points, seed=seed, min_trim=min_trim)[0]


def box_hypotheses(points, *, max_volume_ratio: float = 1.25, method: str = "obb", quantile: float = 0.0005,
                   smooth_k: int = 0, volume_mode: str = "box", max_points: int = 20000, seed: int = 0,
                   min_trim: int = 10) -> list[BoxFeatures]:
    """Every distinct locally smallest box of a scan whose volume is within ``max_volume_ratio``
    of the smallest, smallest first (the first is :func:`box_features`).

    A partial scan of an L- or T-shaped part (a bracket seen from above, one face of the upright
    hidden) can have a tilted box that is smaller than the box along the part's faces; the
    classifier tries the runners-up as well. Arguments as :func:`box_features`.

    Returns:
        ``[BoxFeatures, ...]`` (at least one).
    """
    if max_volume_ratio < 1.0:
        raise ValueError(f"max_volume_ratio must be >= 1, got {max_volume_ratio}")
    pts = as_points(points, name="scan", min_points=10)
    boxes = _box(pts, method=method, quantile=quantile, refine=True, smooth_k=smooth_k, volume_mode=volume_mode,
                 max_points=max_points, seed=seed, min_trim=min_trim)
    out: list[BoxFeatures] = []
    for b in boxes:
        if b.volume > max_volume_ratio * boxes[0].volume and volume_mode == "box":
            continue
        # the same box up to a relabelling of its axes: every axis parallel to one of a kept box
        if any(np.all(np.abs(b.frame[:3, :3].T @ o.frame[:3, :3]).max(axis=1) > np.cos(np.radians(3.0)))
               for o in out):
            continue
        out.append(b)
    return out


MAX_TRIM_SHARE = 0.02  # min_trim never trims more than this share of the points per side


def _box(pts: np.ndarray, *, method: str, quantile: float, refine: bool, smooth_k: int,
         volume_mode: str, max_points: int, seed: int, min_trim: int = 0) -> list[BoxFeatures]:
    """The refined box of every initial rotation, smallest robust volume first."""
    _check_method(method)
    if volume_mode not in VOLUME_MODES:
        raise ValueError(f"unknown volume_mode {volume_mode!r}; choose one of {VOLUME_MODES}")
    if not 0.0 <= quantile < 0.25:
        raise ValueError(f"quantile must be in [0, 0.25), got {quantile}")
    if min_trim < 0:
        raise ValueError(f"min_trim must be >= 0, got {min_trim}")
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(seed).choice(len(pts), max_points, replace=False)]
    if quantile > 0.0 and min_trim > 0:
        quantile = max(quantile, min(min_trim / len(pts), MAX_TRIM_SHARE))
    if smooth_k:
        pts = smooth_points(pts, k=smooth_k)
    if np.ptp(pts, axis=0).max() <= 0.0:
        raise ValueError("scan has no spatial extent (all points coincide)")

    centre0 = pts.mean(axis=0)
    c = pts - centre0

    def volume_of(R: np.ndarray) -> float:
        lo, hi = _robust_extent(c @ R.T, quantile)
        return float(np.prod(np.maximum(hi - lo, 1e-12)))

    exact = quantile <= 0.0  # an exact box (a mesh) needs every point; a robust one does not
    found = []
    named = _initial_rotations(pts, method, max_hull_points=len(pts) if exact else 500)
    if not exact:
        plane = [R for name, R in named if name == "plane"]
        if plane:
            # the frame of the largest plane as it is: a partial scan of a thin L-shaped part
            # (a flat bracket seen from above) has a tilted smallest box; its base plane does not tilt
            found.append((volume_of(plane[0]), plane[0]))
    inits = [R for _, R in named]
    if not exact:  # initial frames that nearly agree (axes within 3 degrees) are refined once
        inits = [R for k, R in enumerate(inits)
                 if not any(np.all(np.abs(R @ Q.T).max(axis=1) > np.cos(np.radians(3.0))) for Q in inits[:k])]
    v_init = [volume_of(R0) for R0 in inits]
    for k, R0 in enumerate(inits):
        R, v = R0, v_init[k]
        # a robust box refines the initial boxes that are nearly the smallest only (the others
        # rarely become the smallest, and each refinement costs about a hundred evaluations)
        if refine and method == "obb" and (exact or v <= 1.15 * min(v_init)):
            # the refinement only turns the axes: a 1 200-point subset has the same robust box
            sub = c if len(c) <= 1200 or exact else c[np.random.default_rng(seed).choice(len(c), 1200, replace=False)]

            from cosarad_ros.core.registration.similarity import _rodrigues

            def f(rv, R0=R0, sub=sub):
                lo, hi = _robust_extent(sub @ (_rodrigues(rv) @ R0).T, quantile)
                return float(np.prod(np.maximum(hi - lo, 1e-12)))

            res = minimize(f, np.zeros(3), method="Nelder-Mead",
                           options={"initial_simplex": np.vstack([np.zeros(3), 0.03 * np.eye(3)]),
                                    "xatol": 5e-4, "fatol": 1e-15, "maxiter": 100, "maxfev": 120})
            Rr = _rodrigues(res.x) @ R0
            vr = volume_of(Rr)
            if vr < v:
                R, v = Rr, vr
        found.append((v, R))
    found.sort(key=lambda t: t[0])
    hull = _hull_volume(pts) if volume_mode == "hull" else 0.0
    out = []
    for _, R in found:
        lo, hi = _robust_extent(c @ R.T, quantile)
        ext = hi - lo
        order = np.argsort(ext)
        R = R[order]
        if np.linalg.det(R) < 0:
            R[0] *= -1
        ext = ext[order]
        lo2, hi2 = _robust_extent(c @ R.T, quantile)
        centre = centre0 + ((lo2 + hi2) / 2.0) @ R
        frame = np.eye(4)
        frame[:3, :3] = R.T
        frame[:3, 3] = centre
        vol = float(np.prod(ext)) if volume_mode == "box" else hull
        out.append(BoxFeatures(dimensions=ext, volume=vol, frame=frame, volume_mode=volume_mode))
    return out


def _hull_volume(pts: np.ndarray) -> float:
    from scipy.spatial import ConvexHull

    try:
        return float(ConvexHull(pts).volume)
    except Exception:  # flat / degenerate input
        return 0.0


def mesh_box_features(mesh, *, method: str = "obb", volume_mode: str = "box") -> BoxFeatures:
    """Exact pose-normalised bounding box of a CAD mesh (``trimesh.Trimesh``, metres).

    The box is computed from the mesh vertices without trimming or smoothing (a CAD model has no
    noise); ``volume_mode="hull"`` uses the convex-hull volume of the mesh.
    """
    _check_method(method)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    if len(verts) < 4:
        raise ValueError("mesh has fewer than 4 vertices")
    try:  # the exact box only depends on the convex hull's vertices
        hull = np.asarray(mesh.convex_hull.vertices, dtype=np.float64)
        if len(hull) >= 4:
            verts = hull
    except Exception:  # degenerate (flat) mesh: every vertex
        pass
    box = _box(verts, method=method, quantile=0.0, refine=(method == "obb"), smooth_k=0,
               volume_mode="box", max_points=len(verts), seed=0)[0]
    if volume_mode == "hull":
        vol = float(mesh.convex_hull.volume)
        box = BoxFeatures(dimensions=box.dimensions, volume=vol, frame=box.frame, volume_mode="hull")
    return box


def cosine_similarity(a, b) -> float:
    """Cosine similarity of two vectors (0 when either is zero)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def euclidean_similarity(a, b) -> float:
    """``1 - |a - b| / (|a| + |b|)`` in [0, 1] (Kwon et al. 2025, eq. for the Euclidean term)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    den = np.linalg.norm(a) + np.linalg.norm(b)
    if den == 0.0:
        return 1.0
    return float(1.0 - np.linalg.norm(a - b) / den)


def feature_similarity(a, b, *, cosine_weight: float = 0.5) -> float:
    """Paper score: ``cosine_weight * cos + (1 - cosine_weight) * euclid`` in [0, 1]."""
    if not 0.0 <= cosine_weight <= 1.0:
        raise ValueError(f"cosine_weight must be in [0, 1], got {cosine_weight}")
    return cosine_weight * cosine_similarity(a, b) + (1.0 - cosine_weight) * euclidean_similarity(a, b)
