"""What the point cloud and mesh readers and writers share: the supported extensions, the
:class:`PointCloudFile` a reader returns, file checks, the common finish of every reader
(non-finite points dropped), packed-RGB conversion and a fast ``savetxt``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POINT_EXTENSIONS = (".pcd", ".ply", ".xyz", ".xyzn", ".xyzrgb", ".txt", ".pts", ".asc", ".csv")
MESH_EXTENSIONS = (".stl", ".obj", ".off", ".ply", ".glb", ".gltf")


@dataclass(frozen=True)
class PointCloudFile:
    """A point cloud read from a file.

    Attributes:
        points: ``(N, 3)`` float64, finite.
        normals: ``(N, 3)`` float64 or ``None`` when the file has none.
        colors: ``(N, 3)`` float64 in ``[0, 1]`` or ``None``.
        path: the file it came from.
        sampled_from_mesh: ``True`` when the file was a mesh and ``points`` are samples of it.
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    path: str = ""
    sampled_from_mesh: bool = False

    def __len__(self) -> int:
        return int(self.points.shape[0])


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _check_file(path) -> Path:
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if p.is_dir():
        raise ValueError(f"{p} is a directory, not a file")
    if not p.is_file():
        raise ValueError(f"{p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{p}: permission denied (the file is not readable)")
    if p.stat().st_size == 0:
        raise ValueError(f"{p} is empty (0 bytes)")
    return p


def _unreadable(p: Path, exc: OSError) -> ValueError:
    return ValueError(f"{p}: cannot read the file ({exc.strerror or type(exc).__name__})")


def _ext(path) -> str:
    return Path(os.fspath(path)).suffix.lower()


def _finish(path, points, normals=None, colors=None, *, sampled=False) -> PointCloudFile:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    keep = np.isfinite(points).all(axis=1)
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    if colors is not None:
        colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if not keep.all():
        points = points[keep]
        normals = None if normals is None else normals[keep]
        colors = None if colors is None else colors[keep]
    if points.shape[0] == 0:
        raise ValueError(f"{path}: the file holds no (finite) points")
    return PointCloudFile(points=np.ascontiguousarray(points),
                          normals=None if normals is None else np.ascontiguousarray(normals),
                          colors=None if colors is None else np.ascontiguousarray(colors),
                          path=str(path), sampled_from_mesh=sampled)


def _unpack_rgb(values: np.ndarray) -> np.ndarray:
    """Packed PCL ``rgb`` (float32 or uint32 bits ``0x00RRGGBB``) -> ``(N, 3)`` floats in [0, 1]."""
    v = np.ascontiguousarray(values)
    if v.dtype.kind == "f":
        bits = v.astype(np.float32).view(np.uint32)
    else:
        bits = v.astype(np.uint32)
    r = (bits >> 16) & 0xFF
    g = (bits >> 8) & 0xFF
    b = bits & 0xFF
    return np.stack([r, g, b], axis=1).astype(np.float64) / 255.0


def _pack_rgb(colors: np.ndarray) -> np.ndarray:
    c = np.clip(np.round(np.asarray(colors, dtype=np.float64) * 255.0), 0, 255).astype(np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def _savetxt_fast(path, table: np.ndarray, fmts, delimiter: str = " ", header: str = "") -> None:
    """``np.savetxt`` equivalent that formats all rows with one C-level ``%`` operation
    (several times faster for large tables).
    """
    row = delimiter.join(fmts) + "\n"
    values = table.tolist()
    body = "".join(row % tuple(r) for r in values) if len(values) < 64 else \
        (row * len(values)) % tuple(v for r in values for v in r)
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        fh.write(header)
        fh.write(body)
