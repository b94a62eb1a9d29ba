"""Text point files, one point per line (``.xyz``, ``.xyzn``, ``.xyzrgb``, ``.txt``, ``.pts``,
``.asc``, ``.csv``), and ``x y z label`` ground-truth files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..geometry import as_points
from .common import PointCloudFile, _check_file, _ext, _finish, _savetxt_fast

_TEXT_EXTENSIONS = (".xyz", ".xyzn", ".xyzrgb", ".txt", ".pts", ".asc", ".csv")


def _read_table(path: Path, min_cols: int) -> np.ndarray:
    text = path.read_text(encoding="utf-8", errors="replace")
    fast = _read_table_fast(text, min_cols)
    if fast is not None:
        return fast
    rows = []
    for ln in text.splitlines():
        s = ln.strip()
        if not s or s.startswith("#") or s.startswith("//"):
            continue
        rows.append(s.replace(",", " ").replace(";", " ").split())
    if not rows:
        raise ValueError(f"{path}: the file holds no points")
    # Skip a header line of column names (e.g. "x y z label").
    try:
        float(rows[0][0])
    except ValueError:
        rows = rows[1:]
        if not rows:
            raise ValueError(f"{path}: the file holds no points") from None
    ncol = min(len(r) for r in rows)
    if ncol < min_cols:
        bad = next(i for i, r in enumerate(rows) if len(r) < min_cols)
        raise ValueError(f"{path}: row {bad + 1} has {len(rows[bad])} values, need at least {min_cols}")
    try:
        return np.array([r[:ncol] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: corrupt text point data ({exc})") from None


def _read_table_fast(text: str, min_cols: int) -> np.ndarray | None:
    """Plain numeric tables (no comments, header or ragged rows) parsed in one go; ``None``
    sends anything else to the line-by-line parser, which also words the errors.
    """
    if "#" in text or "//" in text:
        return None
    first = text.lstrip().split("\n", 1)[0].replace(",", " ").replace(";", " ").split()
    ncol = len(first)
    if ncol < min_cols:
        return None
    try:
        flat = np.array(text.replace(",", " ").replace(";", " ").split(), dtype=np.float64)
    except ValueError:
        return None
    if flat.size == 0 or flat.size % ncol:
        return None
    lines = sum(1 for ln in text.splitlines() if ln.strip())
    if lines * ncol != flat.size:
        return None
    return flat.reshape(-1, ncol)


def _read_text(path: Path) -> PointCloudFile:
    ext = _ext(path)
    table = _read_table(path, 6 if ext in (".xyzn", ".xyzrgb") else 3)
    normals = table[:, 3:6] if ext == ".xyzn" else None
    colors = None
    if ext == ".xyzrgb":
        colors = table[:, 3:6]
        if colors.max(initial=0.0) > 1.0:
            colors = colors / 255.0
    return _finish(path, table[:, :3], normals, colors)


def _write_text(path: Path, points, normals, colors, *, dtype) -> None:
    fmt = "%.9g" if np.dtype(dtype) == np.float32 else "%.17g"
    ext = _ext(path)
    cols = [points.astype(dtype).astype(np.float64)]
    if ext == ".xyzn":
        if normals is None:
            raise ValueError(f"{path}: .xyzn needs normals")
        cols.append(normals.astype(dtype).astype(np.float64))
    elif ext == ".xyzrgb":
        if colors is None:
            raise ValueError(f"{path}: .xyzrgb needs colors")
        cols.append(colors)
    sep = "," if ext == ".csv" else " "
    table = np.concatenate(cols, axis=1)
    _savetxt_fast(path, table, [fmt] * table.shape[1], sep)


def read_labelled_points(path, *, delimiter: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a ground-truth file of ``x y z label`` rows (Real3D-AD: spaces; Anomaly-ShapeNet:
    commas). ``delimiter=None`` accepts spaces, tabs, commas or semicolons.

    Returns:
        ``points (N, 3)`` float64 and ``labels (N,)`` bool (label ``!= 0``).

    Raises:
        FileNotFoundError, ValueError (empty, fewer than 4 columns, non-numeric, non-finite).
    """
    p = _check_file(path)
    if delimiter is None:
        table = _read_table(p, 4)
    else:
        rows = [ln.split(delimiter) for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()
                if ln.strip()]
        if not rows:
            raise ValueError(f"{p}: the file holds no points")
        try:
            table = np.array([[float(v) for v in r[:4]] for r in rows], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{p}: corrupt ground-truth data ({exc})") from None
        if table.ndim != 2 or table.shape[1] < 4:
            raise ValueError(f"{p}: ground-truth rows need 4 values (x{delimiter}y{delimiter}z{delimiter}label)")
    if not np.isfinite(table[:, :4]).all():
        raise ValueError(f"{p}: ground truth contains non-finite values")
    return np.ascontiguousarray(table[:, :3]), table[:, 3] != 0


def write_labelled_points(path, points, labels, *, delimiter: str = " ", dtype="float32") -> Path:
    """Write ``x y z label`` rows (label 0/1). ``delimiter`` ``" "`` (Real3D-AD) or ``","``
    (Anomaly-ShapeNet). Coordinates use ``%.9g`` (float32) or ``%.17g`` (float64).
    """
    pts = as_points(points, name="points")
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != pts.shape[0]:
        raise ValueError(f"labels has {lab.shape[0]} entries, points has {pts.shape[0]}")
    dt = np.dtype(dtype)
    fmt = "%.9g" if dt == np.float32 else "%.17g"
    p = Path(os.fspath(path))
    p.parent.mkdir(parents=True, exist_ok=True)
    table = np.concatenate([pts.astype(dt).astype(np.float64), (lab != 0).astype(np.float64)[:, None]], 1)
    _savetxt_fast(p, table, [fmt, fmt, fmt, "%d"], delimiter)
    return p
