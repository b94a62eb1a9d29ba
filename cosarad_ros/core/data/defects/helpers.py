"""Small geometry helpers of the defect models: distances to triangle meshes (Open3D ray
casting), tangent frames, smooth weights, rotations, and :func:`refine_mesh_near`, the local
conforming refinement that gives a coarse mesh small triangles where a defect will act.
"""
from __future__ import annotations

import math

import numpy as np


def _o3d_scene(V, F):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(V, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(F, dtype=np.uint32)))
    return scene


def _signed_distance(V, F, x) -> np.ndarray:
    """Signed distance of ``x (N, 3)`` to the closed mesh (V, F); negative inside."""
    import open3d as o3d

    if len(x) == 0:
        return np.zeros(0)
    scene = _o3d_scene(V, F)
    q = o3d.core.Tensor(np.asarray(x, dtype=np.float32))
    return scene.compute_signed_distance(q).numpy().astype(np.float64)


def _distance(V, F, x) -> np.ndarray:
    """Unsigned distance of ``x (N, 3)`` to the triangles (V, F)."""
    import open3d as o3d

    if len(x) == 0:
        return np.zeros(0)
    scene = _o3d_scene(V, F)
    return scene.compute_distance(o3d.core.Tensor(np.asarray(x, dtype=np.float32))).numpy().astype(np.float64)


def _tangent_frame(n, rng) -> tuple[np.ndarray, np.ndarray]:
    """Random unit tangent ``t`` and ``b = n x t``."""
    n = np.asarray(n, dtype=np.float64)
    helper = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(n, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    a = rng.uniform(0, 2 * math.pi)
    t = math.cos(a) * e1 + math.sin(a) * e2
    return t, np.cross(n, t)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _normal_weight(normals, n0, lo_deg: float = 80.0, hi_deg: float = 50.0) -> np.ndarray:
    """1 where the surface normal is within ``hi_deg`` of ``n0``, 0 beyond ``lo_deg``, smooth in
    between (keeps a defect on the face it was put on, off back faces).
    """
    c = np.asarray(normals) @ np.asarray(n0)
    lo, hi = math.cos(math.radians(lo_deg)), math.cos(math.radians(hi_deg))
    return _smoothstep((c - lo) / (hi - lo))


def _rotation_about(axis, angle) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _rotate_batch(x, axis, angles) -> np.ndarray:
    """Rotate rows of ``x`` about the unit ``axis`` (through the origin) by per-row ``angles``
    (Rodrigues' formula).
    """
    a = np.asarray(axis, dtype=np.float64)
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    return x * c + np.cross(a, x) * s + a * (x @ a)[:, None] * (1 - c)


def _bisect_once(V, F, need):
    """One pass of conforming longest-edge bisection (Rivara, "Mesh refinement processes based on
    the generalized bisection of simplices", SIAM J. Numer. Anal. 21(3), 1984).

    ``need (F,)`` marks faces that must be split. Every split face is cut at the midpoint of its
    longest edge; a face that has any split edge also splits its longest edge (so the mesh stays
    conforming: no T-junctions), and each face is then cut into 2, 3 or 4 triangles.
    """
    tri = V[F]
    # local edge k joins vertex k and k+1; lengths (F, 3)
    elen = np.stack([np.linalg.norm(tri[:, (k + 1) % 3] - tri[:, k], axis=1) for k in range(3)], 1)
    longest = np.argmax(elen, axis=1)
    pairs = np.sort(np.stack([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]], axis=1).reshape(-1, 2), axis=1)
    ukey, inv = np.unique(pairs[:, 0] * np.int64(len(V)) + pairs[:, 1], return_inverse=True)
    uniq = np.stack([ukey // len(V), ukey % len(V)], axis=1)
    fe = inv.reshape(-1, 3)  # (F, 3) edge ids
    rows = np.arange(len(F))
    marked = np.zeros(len(uniq), dtype=bool)
    marked[fe[rows[need], longest[need]]] = True
    while True:  # propagate: a face with a marked edge must also split its longest edge
        has = marked[fe].any(axis=1)
        lid = fe[rows, longest]
        add = has & ~marked[lid]
        if not add.any():
            break
        marked[lid[add]] = True
    ids = np.nonzero(marked)[0]
    mid_index = np.full(len(uniq), -1, dtype=np.int64)
    mid_index[ids] = len(V) + np.arange(len(ids))
    Vn = np.concatenate([V, 0.5 * (V[uniq[ids, 0]] + V[uniq[ids, 1]])], axis=0)
    split = marked[fe].any(axis=1)
    out = [F[~split]]
    fs = np.nonzero(split)[0]
    if fs.size:
        L = longest[fs]
        # rotate so the longest edge is local edge 0: (a, b) with apex c
        a = F[fs, L]
        b = F[fs, (L + 1) % 3]
        c = F[fs, (L + 2) % 3]
        m = mid_index[fe[fs, L]]
        n = mid_index[fe[fs, (L + 1) % 3]]  # on edge b-c
        q = mid_index[fe[fs, (L + 2) % 3]]  # on edge c-a
        hn, hq = n >= 0, q >= 0
        # half 1: (a, m, c), split by q when edge c-a is marked
        out.append(np.stack([a[~hq], m[~hq], c[~hq]], 1))
        out.append(np.stack([a[hq], m[hq], q[hq]], 1))
        out.append(np.stack([q[hq], m[hq], c[hq]], 1))
        # half 2: (m, b, c), split by n when edge b-c is marked
        out.append(np.stack([m[~hn], b[~hn], c[~hn]], 1))
        out.append(np.stack([m[hn], b[hn], n[hn]], 1))
        out.append(np.stack([m[hn], n[hn], c[hn]], 1))
    return Vn, np.concatenate(out, axis=0)


def refine_mesh_near(vertices, faces, distance_fn, *, radius: float, max_edge: float,
                     max_faces: int = 1_500_000):
    """Refine a triangle mesh near a region until faces there have edges <= ``max_edge``.

    Conforming longest-edge bisection: only faces that may lie within ``radius`` of the region
    (and their neighbours, to stay conforming) are split, so a watertight mesh stays watertight
    and a coarse CAD mesh gets small triangles only where a defect will act.

    Args:
        vertices: ``(V, 3)``.
        faces: ``(F, 3)`` int.
        distance_fn: ``x (N, 3) -> (N,)`` lower bound of the distance from ``x`` to the region.
        radius: refine faces that may come within this distance of the region.
        max_edge: target longest edge there (> 0).
        max_faces: refuse (ValueError) to grow the mesh beyond this.

    Returns:
        ``(vertices (V', 3), faces (F', 3))``; the first ``V`` vertices are the input ones.
    """
    V = np.asarray(vertices, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    if not max_edge > 0:
        raise ValueError(f"max_edge must be > 0, got {max_edge}")
    for _ in range(200):
        tri = V[F]
        longest = np.max(np.stack([np.linalg.norm(tri[:, (k + 1) % 3] - tri[:, k], axis=1)
                                   for k in range(3)], 1), axis=1)
        cand = np.nonzero(longest > max_edge)[0]
        if cand.size == 0:
            break
        cen = tri[cand].mean(axis=1)
        rad = np.linalg.norm(tri[cand] - cen[:, None, :], axis=2).max(axis=1)
        sel = cand[distance_fn(cen) - rad <= radius]
        if sel.size == 0:
            break
        need = np.zeros(len(F), dtype=bool)
        need[sel] = True
        V, F = _bisect_once(V, F, need)
        if len(F) > max_faces:
            raise ValueError(f"refining to {max_edge * 1e3:.3f} mm edges needs more than {max_faces} faces")
    return V, F
