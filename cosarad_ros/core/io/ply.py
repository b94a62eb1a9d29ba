"""PLY point clouds (Stanford polygon format, ascii and binary little/big endian): our own
header parser, reader of the vertex element and writer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import PointCloudFile, _finish, _savetxt_fast

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _parse_ply_header(raw: bytes, path):
    if not raw.startswith(b"ply"):
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic)")
    end = raw.find(b"end_header")
    if end < 0:
        raise ValueError(f"{path}: truncated PLY header (no end_header)")
    nl = raw.find(b"\n", end)
    body = nl + 1 if nl >= 0 else len(raw)
    fmt = None
    elements: list[dict] = []
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        try:
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
            elif tok[0] == "property":
                if not elements:
                    raise ValueError("property before element")
                if tok[1] == "list":
                    elements[-1]["props"].append((tok[4], "list", _PLY_TYPES[tok[2]], _PLY_TYPES[tok[3]]))
                else:
                    elements[-1]["props"].append((tok[2], _PLY_TYPES[tok[1]]))
        except (IndexError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: malformed PLY header line {line!r} ({exc})") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unknown PLY format {fmt!r}")
    return fmt, elements, body


def _read_ply_points(path: Path, raw: bytes, fmt: str, elements: list, body: int) -> PointCloudFile:
    if not elements or elements[0]["name"] != "vertex":
        raise ValueError(f"{path}: PLY point cloud must start with a vertex element")
    vert = elements[0]
    n = vert["count"]
    if n == 0:
        raise ValueError(f"{path}: the file holds no points (element vertex 0)")
    if any(len(p) != 2 for p in vert["props"]):
        raise ValueError(f"{path}: list properties in the PLY vertex element are not supported")
    names = [p[0] for p in vert["props"]]
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"{path}: PLY vertex element has no x y z (has {' '.join(names)})")
    if fmt == "ascii":
        lines = raw[body:].decode("ascii", errors="replace").splitlines()
        rows = [ln.split() for ln in lines[:n]]
        if len(rows) < n:
            raise ValueError(f"{path}: truncated ASCII PLY: {len(rows)} of {n} vertices")
        if len(elements) == 1 and any(ln.strip() for ln in lines[n:]):
            raise ValueError(f"{path}: the PLY header says {n} vertices but the data holds "
                             f"{n + sum(1 for ln in lines[n:] if ln.strip())}")
        try:
            table = np.array([r[:len(names)] for r in rows], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}: corrupt ASCII PLY data ({exc})") from None
        if table.shape != (n, len(names)):
            raise ValueError(f"{path}: corrupt ASCII PLY data (ragged rows)")
        get = {nm: (table[:, i].astype(np.float32) if t == "f4" else table[:, i])
               for i, (nm, t) in enumerate(vert["props"])}.__getitem__
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        dt = np.dtype([(nm, endian + t) for nm, t in vert["props"]])
        if len(raw) - body < dt.itemsize * n:
            raise ValueError(f"{path}: truncated binary PLY: need {dt.itemsize * n} bytes for "
                             f"{n} vertices, have {len(raw) - body}")
        if len(elements) == 1 and len(raw) - body >= dt.itemsize * (n + 1):
            raise ValueError(f"{path}: the PLY header says {n} vertices but the data holds "
                             f"{(len(raw) - body) // dt.itemsize}")
        arr = np.frombuffer(raw, dtype=dt, count=n, offset=body)
        get = arr.__getitem__
    pts = np.stack([np.asarray(get(k), dtype=np.float64) for k in ("x", "y", "z")], axis=1)
    normals = None
    if {"nx", "ny", "nz"} <= set(names):
        normals = np.stack([np.asarray(get(k), dtype=np.float64) for k in ("nx", "ny", "nz")], 1)
    colors = None
    if {"red", "green", "blue"} <= set(names):
        c = np.stack([np.asarray(get(k), dtype=np.float64) for k in ("red", "green", "blue")], 1)
        kind = dict(vert["props"])["red"]
        colors = c if kind.startswith("f") else c / 255.0
    return _finish(path, pts, normals, colors)


def _write_ply(path: Path, points, normals, colors, *, binary: bool, dtype) -> None:
    n = points.shape[0]
    tname = "float" if np.dtype(dtype) == np.float32 else "double"
    props = [("x", dtype), ("y", dtype), ("z", dtype)]
    if normals is not None:
        props += [("nx", dtype), ("ny", dtype), ("nz", dtype)]
    if colors is not None:
        props += [("red", np.uint8), ("green", np.uint8), ("blue", np.uint8)]
    lines = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
             "comment written by cosarad_ros", f"element vertex {n}"]
    for nm, t in props:
        lines.append(f"property {'uchar' if t is np.uint8 else tname} {nm}")
    lines.append("end_header")
    header = "\n".join(lines) + "\n"
    rec = np.empty(n, dtype=np.dtype([(nm, "<" + np.dtype(t).str[1:]) for nm, t in props]))
    for i, k in enumerate("xyz"):
        rec[k] = points[:, i]
    if normals is not None:
        for i, k in enumerate(("nx", "ny", "nz")):
            rec[k] = normals[:, i]
    if colors is not None:
        c = np.clip(np.round(colors * 255.0), 0, 255).astype(np.uint8)
        for i, k in enumerate(("red", "green", "blue")):
            rec[k] = c[:, i]
    if binary:
        with open(path, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(rec.tobytes())
    else:
        ffmt = "%.9g" if np.dtype(dtype) == np.float32 else "%.17g"
        fmts = [("%d" if t is np.uint8 else ffmt) for _, t in props]
        table = np.stack([rec[nm].astype(np.float64) for nm, _ in props], axis=1)
        _savetxt_fast(path, table, fmts, " ", header)
