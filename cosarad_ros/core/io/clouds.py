"""Point clouds by file extension: :func:`read_point_cloud`, :func:`read_points`,
:func:`read_scan` and :func:`write_points` dispatch to the PCD, PLY and text formats and sample
meshes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..geometry import as_points
from .common import MESH_EXTENSIONS, POINT_EXTENSIONS, PointCloudFile, _check_file, _ext, _finish, _unreadable
from .meshes import read_mesh, sample_mesh
from .pcd import _read_pcd, _write_pcd
from .ply import _parse_ply_header, _read_ply_points, _write_ply
from .text import _TEXT_EXTENSIONS, _read_text, _write_text


def read_point_cloud(path, *, mesh_samples: int = 100_000, seed: int = 0) -> PointCloudFile:
    """Read a point cloud (or sample a mesh) from ``path``.

    Args:
        path: a ``.pcd``, ``.ply``, text (``.xyz`` ...) or mesh (``.stl``, ``.obj``, ``.off``,
            ``.ply`` with faces ...) file.
        mesh_samples: points drawn area-uniformly when the file is a mesh.
        seed: seed of that sampling.

    Returns:
        :class:`PointCloudFile` with ``points (N, 3)``, ``normals (N, 3) | None`` and
        ``colors (N, 3) | None``; non-finite points dropped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty, corrupt, truncated or unknown format.
    """
    p = _check_file(path)
    try:
        return _read_cloud(p, mesh_samples=mesh_samples, seed=seed)
    except OSError as exc:  # permission, I/O error, ... while reading
        raise _unreadable(p, exc) from None


def _read_cloud(p: Path, *, mesh_samples: int, seed: int) -> PointCloudFile:
    ext = _ext(p)
    if ext == ".pcd":
        return _read_pcd(p)
    if ext == ".ply":
        raw = p.read_bytes()
        fmt, elements, body = _parse_ply_header(raw, p)
        faces = [e for e in elements if e["name"] == "face"]
        if not faces or faces[0]["count"] == 0:
            return _read_ply_points(p, raw, fmt, elements, body)
    elif ext in _TEXT_EXTENSIONS:
        return _read_text(p)
    elif ext not in MESH_EXTENSIONS:
        raise ValueError(f"{p}: unknown point cloud format {ext!r} (supported: "
                         f"{', '.join(sorted(set(POINT_EXTENSIONS + MESH_EXTENSIONS)))})")
    mesh = read_mesh(p)
    pts, nrm = sample_mesh(mesh, mesh_samples, seed=seed)
    return _finish(p, pts, nrm, None, sampled=True)


def read_points(path, *, mesh_samples: int = 100_000, seed: int = 0) -> np.ndarray:
    """Read the points of a cloud file (meshes are sampled). Returns ``(N, 3)`` float64.

    See :func:`read_point_cloud` for formats and errors.
    """
    return read_point_cloud(path, mesh_samples=mesh_samples, seed=seed).points


def read_scan(path, *, scale: float = 1.0, max_points: int | None = None, seed: int = 0) -> np.ndarray:
    """Read a scan for inspection in metres: :func:`read_points`, times ``scale`` (file unit ->
    metres, 0.001 for millimetres), checked for a plausible size in metres (REP 103; the message
    says when it looks like millimetres) and cut to a seeded random subset of ``max_points``.

    Returns:
        ``(N, 3)`` float64 points, ``N <= max_points``.

    Raises:
        FileNotFoundError / ValueError: as :func:`read_points`, or not a size in metres.
    """
    from ..geometry import cap_points, check_metres

    pts = read_points(path)
    if max_points is not None:
        pts = cap_points(pts, max_points, seed=seed)
    return check_metres(as_points(pts * scale, name=str(path)), name=str(path))


def write_points(path, points, *, normals=None, colors=None, binary: bool = True,
                 dtype="float32") -> Path:
    """Write a point cloud; the format follows the extension (``.pcd``, ``.ply``, ``.xyz``,
    ``.xyzn``, ``.xyzrgb``, ``.txt``, ``.pts``, ``.csv``).

    Args:
        path: output file; its folder is created.
        points: ``(N, 3)`` finite, ``N >= 1``.
        normals: optional ``(N, 3)``.
        colors: optional ``(N, 3)`` in ``[0, 1]`` (stored as 8-bit RGB).
        binary: binary PCD/PLY (default) or ASCII. Text formats are always ASCII.
        dtype: ``"float32"`` (default; PCL / Real3D-AD convention) or ``"float64"``. Values
            representable in ``dtype`` read back bit-exactly, in every format.

    Returns:
        The path written.

    Raises:
        ValueError: bad shapes, non-finite values, or an unknown extension.
    """
    p = Path(os.fspath(path))
    pts = as_points(points, name="points")
    n = pts.shape[0]
    if normals is not None:
        normals = as_points(normals, name="normals")
        if normals.shape[0] != n:
            raise ValueError(f"normals has {normals.shape[0]} rows, points has {n}")
    if colors is not None:
        colors = np.asarray(colors, dtype=np.float64)
        if colors.shape != (n, 3) or not np.isfinite(colors).all():
            raise ValueError(f"colors must be finite with shape ({n}, 3), got {colors.shape}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    ext = _ext(p)
    if ext not in POINT_EXTENSIONS:
        raise ValueError(f"{p}: cannot write point clouds as {ext!r} (use one of "
                         f"{', '.join(POINT_EXTENSIONS)})")
    p.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".pcd":
        _write_pcd(p, pts, normals, colors, binary=binary, dtype=dt)
    elif ext == ".ply":
        _write_ply(p, pts, normals, colors, binary=binary, dtype=dt)
    else:
        _write_text(p, pts, normals, colors, dtype=dt)
    return p
