"""Triangle meshes: reading and writing with trimesh, and area-uniform sampling."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .common import MESH_EXTENSIONS, _check_file, _ext, _unreadable


def read_mesh(path):
    """Load a triangle mesh (STL, OBJ, OFF, PLY, GLB/GLTF) with trimesh.

    Multi-part scenes are concatenated into one mesh.

    Returns:
        ``trimesh.Trimesh`` with at least one face and finite vertices.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty, corrupt, or not a mesh (e.g. a point-only PLY).
    """
    import trimesh

    p = _check_file(path)
    ext = _ext(p)
    if ext not in MESH_EXTENSIONS:
        raise ValueError(f"{p}: unknown mesh format {ext!r} (supported: {', '.join(MESH_EXTENSIONS)})")
    try:
        loaded = trimesh.load(str(p), force="mesh", process=False)
    except OSError as exc:
        raise _unreadable(p, exc) from None
    except Exception as exc:  # trimesh raises many types on corrupt input
        raise ValueError(f"{p}: cannot read mesh ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        if not geoms:
            raise ValueError(f"{p}: the file holds no triangle mesh")
        loaded = trimesh.util.concatenate(geoms)
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ValueError(f"{p}: the file holds no triangles")
    if not np.isfinite(loaded.vertices).all():
        raise ValueError(f"{p}: mesh has non-finite vertices")
    if float(loaded.area) <= 0.0:
        raise ValueError(f"{p}: mesh has zero surface area")
    return loaded


def write_mesh(path, mesh) -> Path:
    """Write a ``trimesh.Trimesh`` (format from the extension: STL binary, OBJ, OFF, PLY binary)."""
    p = Path(os.fspath(path))
    if _ext(p) not in (".stl", ".obj", ".off", ".ply", ".glb"):
        raise ValueError(f"{p}: cannot write meshes as {_ext(p)!r}")
    if len(getattr(mesh, "faces", [])) == 0:
        raise ValueError("mesh has no faces")
    p.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(str(p))
    return p


def sample_mesh(mesh, n: int, *, seed: int = 0, return_faces: bool = False):
    """Sample ``n`` points uniformly by area on a triangle mesh.

    Triangle ``i`` is chosen with probability ``area_i / sum(area)``; inside it, barycentric
    coordinates ``(1 - sqrt(r1), sqrt(r1) (1 - r2), sqrt(r1) r2)`` give a uniform point
    (Osada et al., "Shape distributions", ACM TOG 2002, eq. 1).

    Args:
        mesh: ``trimesh.Trimesh`` (or anything with ``vertices (V, 3)`` and ``faces (F, 3)``).
        n: number of points, ``>= 1``.
        seed: random seed (same seed, same mesh -> same points).
        return_faces: also return the ``(n,)`` index of the face each point lies on.

    Returns:
        ``points (n, 3)`` float64 and unit ``normals (n, 3)`` (the face normals), plus
        ``faces (n,)`` int64 when ``return_faces``.

    Raises:
        ValueError: ``n < 1``, no faces, or zero total area.
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    V = np.asarray(mesh.vertices, dtype=np.float64)
    F = np.asarray(mesh.faces, dtype=np.int64)
    if F.ndim != 2 or F.shape[0] == 0 or F.shape[1] != 3:
        raise ValueError("mesh has no triangles")
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    cross = np.cross(b - a, c - a)
    dbl_area = np.linalg.norm(cross, axis=1)
    total = dbl_area.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has zero (or non-finite) surface area")
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(dbl_area)
    face = np.searchsorted(cdf, rng.random(int(n)) * cdf[-1], side="right")
    face = np.minimum(face, F.shape[0] - 1)
    r1 = np.sqrt(rng.random(int(n)))[:, None]
    r2 = rng.random(int(n))[:, None]
    pts = (1 - r1) * a[face] + r1 * (1 - r2) * b[face] + r1 * r2 * c[face]
    nrm = cross[face] / np.maximum(dbl_area[face], 1e-300)[:, None]
    if return_faces:
        return pts, nrm, face
    return pts, nrm
