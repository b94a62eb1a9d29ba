"""Building blocks of the rules: surface variation, DBSCAN clustering, circle fits and the 2D
alpha-shape boundary.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from cosarad_ros.core.geometry import as_points


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
    ``max(3 x rms, floor)`` from the circle. Returns ``(centre, radius, rms, kept mask)``.
    """
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
