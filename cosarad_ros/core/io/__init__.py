"""Reading and writing point clouds and meshes.

Formats (chosen by file extension, case-insensitive):

* ``.pcd`` -- Point Cloud Library format v0.7 (Rusu & Cousins, "3D is here: Point Cloud Library
  (PCL)", ICRA 2011). Our own parser and writer: ``DATA ascii``, ``binary`` and
  ``binary_compressed`` (LZF) are read; ``ascii`` and ``binary`` are written. Fields ``x y z``,
  optionally ``normal_x normal_y normal_z`` and packed ``rgb`` / ``rgba``; other fields are
  skipped. Values written as float32 (default, what PCL and Real3D-AD use) or float64 read back
  bit-exactly.
* ``.ply`` -- Stanford polygon format (Turk, 1994). A PLY whose ``face`` element is empty or
  absent is a point cloud, read by our own parser (ascii, binary little/big endian); a PLY with
  faces is a mesh and is area-sampled when a cloud is asked for.
* ``.xyz``, ``.txt``, ``.pts``, ``.asc``, ``.csv`` -- one point per line, whitespace- or
  comma-separated; the first three columns are ``x y z``, further columns are ignored
  (use :func:`read_labelled_points` for ``x y z label`` ground-truth files). ``.xyzn`` has
  normals in columns 4-6, ``.xyzrgb`` colours (0-1 or 0-255) in columns 4-6.
* ``.stl``, ``.obj``, ``.off``, ``.glb``, ``.gltf`` (and ``.ply`` with faces) -- meshes,
  loaded with trimesh; :func:`read_points` / :func:`read_point_cloud` sample them area-uniformly
  (``mesh_samples`` points, fixed seed, so the result is deterministic).

Errors: a missing file raises ``FileNotFoundError``; an empty, truncated, corrupt or
unknown-format file raises ``ValueError`` naming the file and the problem. Non-finite points
(organised PCD clouds mark missing returns with NaN) are dropped by the readers; a file left
with no finite point is an error.

Units are whatever the file holds: nothing here rescales.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geometry import as_points

__all__ = [
    "PointCloudFile",
    "POINT_EXTENSIONS",
    "MESH_EXTENSIONS",
    "read_points",
    "read_point_cloud",
    "read_scan",
    "write_points",
    "read_labelled_points",
    "write_labelled_points",
    "read_mesh",
    "write_mesh",
    "sample_mesh",
    "lzf_decompress",
    "load_yaml",
    "YAML_MAX_BYTES",
    "YAML_MAX_NODES",
]

POINT_EXTENSIONS = (".pcd", ".ply", ".xyz", ".xyzn", ".xyzrgb", ".txt", ".pts", ".asc", ".csv")
MESH_EXTENSIONS = (".stl", ".obj", ".off", ".ply", ".glb", ".gltf")

_TEXT_EXTENSIONS = (".xyz", ".xyzn", ".xyzrgb", ".txt", ".pts", ".asc", ".csv")


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


#: LZF's largest expansion: a 3-byte back reference copies at most 264 bytes (88x)
LZF_MAX_RATIO = 88


def lzf_decompress(data: bytes, expected_size: int) -> bytes:
    """Decompress an LZF block (Lehmann's liblzf format, used by PCD ``binary_compressed``).

    Args:
        data: the compressed bytes.
        expected_size: the uncompressed size stored in the PCD file.

    Raises:
        ValueError: the stream is corrupt or does not decompress to ``expected_size`` bytes, or
            ``expected_size`` is more than LZF can expand ``data`` to (checked before allocating).
    """
    if expected_size < 0 or expected_size > LZF_MAX_RATIO * len(data) + 64:
        raise ValueError(f"LZF block of {len(data)} bytes cannot hold {expected_size} bytes (LZF expands at most "
                         f"{LZF_MAX_RATIO}x): the size in the header is wrong")
    out = bytearray(expected_size)
    ip, op, n = 0, 0, len(data)
    while ip < n:
        ctrl = data[ip]
        ip += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            length = ctrl + 1
            if ip + length > n or op + length > expected_size:
                raise ValueError("corrupt LZF stream (literal run past the end)")
            out[op:op + length] = data[ip:ip + length]
            ip += length
            op += length
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                if ip >= n:
                    raise ValueError("corrupt LZF stream (truncated length)")
                length += data[ip]
                ip += 1
            if ip >= n:
                raise ValueError("corrupt LZF stream (truncated offset)")
            ref = op - ((ctrl & 0x1F) << 8) - 1 - data[ip]
            ip += 1
            length += 2
            if ref < 0 or op + length > expected_size:
                raise ValueError("corrupt LZF stream (bad back reference)")
            if ref + length <= op:
                out[op:op + length] = out[ref:ref + length]
                op += length
            else:  # overlapping copy, byte by byte
                for _ in range(length):
                    out[op] = out[ref]
                    op += 1
                    ref += 1
    if op != expected_size:
        raise ValueError(f"corrupt LZF stream: got {op} bytes, header says {expected_size}")
    return bytes(out)


# --------------------------------------------------------------------------------------------
# PCD
# --------------------------------------------------------------------------------------------
_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4",
              ("I", 8): "i8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}


def _parse_pcd_header(raw: bytes, path) -> tuple[dict, int]:
    header: dict = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise ValueError(f"{path}: truncated PCD header (no DATA line)")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        key = key.upper()
        header[key] = rest.split()
        if key == "DATA":
            break
        if len(header) > 32:
            raise ValueError(f"{path}: not a PCD file (header has no DATA line)")
    for key in ("FIELDS", "DATA"):
        if key not in header:
            raise ValueError(f"{path}: PCD header lacks {key}")
    fields = header["FIELDS"]
    nf = len(fields)
    try:
        sizes = [int(s) for s in header.get("SIZE", ["4"] * nf)]
        types = [t.upper() for t in header.get("TYPE", ["F"] * nf)]
        counts = [int(c) for c in header.get("COUNT", ["1"] * nf)]
        width = int(header.get("WIDTH", ["0"])[0])
        height = int(header.get("HEIGHT", ["1"])[0])
        npts = int(header["POINTS"][0]) if "POINTS" in header else width * height
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{path}: malformed PCD header ({exc})") from None
    if not (len(sizes) == len(types) == len(counts) == nf):
        raise ValueError(f"{path}: PCD header FIELDS/SIZE/TYPE/COUNT lengths differ")
    for t, s in zip(types, sizes):
        if (t, s) not in _PCD_TYPES:
            raise ValueError(f"{path}: unsupported PCD field type {t}{s}")
    if npts < 0:
        raise ValueError(f"{path}: negative POINTS in PCD header")
    if "POINTS" in header and "WIDTH" in header and width * height != npts:
        raise ValueError(f"{path}: PCD header disagrees with itself: WIDTH {width} x HEIGHT {height} = "
                         f"{width * height} but POINTS {npts}")
    return dict(fields=fields, sizes=sizes, types=types, counts=counts, points=npts,
                data=header["DATA"][0].lower()), pos


def _read_pcd(path: Path) -> PointCloudFile:
    raw = path.read_bytes()
    head, pos = _parse_pcd_header(raw, path)
    fields, npts = head["fields"], head["points"]
    if "x" not in fields or "y" not in fields or "z" not in fields:
        raise ValueError(f"{path}: PCD has no x y z fields (fields: {' '.join(fields)})")
    if npts == 0:
        raise ValueError(f"{path}: the file holds no points (POINTS 0)")
    # Structured dtype: a field with COUNT > 1 becomes a sub-array; names must be unique.
    names, formats = [], []
    for i, (f, t, s, c) in enumerate(zip(fields, head["types"], head["sizes"], head["counts"])):
        name = f if f not in names and f != "_" else f"_pad{i}"
        names.append(name)
        base = "<" + _PCD_TYPES[(t, s)]
        formats.append(base if c == 1 else (base, (c,)))
    dtype = np.dtype({"names": names, "formats": formats})
    mode = head["data"]
    if mode == "ascii":
        text = raw[pos:].decode("ascii", errors="replace").split()
        ncols = sum(head["counts"])
        try:
            flat = np.array(text, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}: corrupt ASCII PCD data ({exc})") from None
        if flat.size < ncols * npts:
            raise ValueError(f"{path}: truncated ASCII PCD data: {flat.size // max(ncols, 1)} of "
                             f"{npts} points")
        if flat.size >= ncols * (npts + 1):
            raise ValueError(f"{path}: the PCD header says {npts} points but the data holds "
                             f"{flat.size // max(ncols, 1)}")
        table = flat[: ncols * npts].reshape(npts, ncols)
        col = {}
        c0 = 0
        for name, c, t, sz in zip(names, head["counts"], head["types"], head["sizes"]):
            block = table[:, c0] if c == 1 else table[:, c0:c0 + c]
            if t == "F" and sz == 4:  # the file holds float32 values: restore them exactly
                block = block.astype(np.float32)
            col[name] = block
            c0 += c
        get = col.__getitem__
        rgb_from_ascii = True
    elif mode == "binary":
        need = dtype.itemsize * npts
        if len(raw) - pos < need:
            raise ValueError(f"{path}: truncated binary PCD data: {len(raw) - pos} bytes, "
                             f"need {need} for {npts} points")
        if len(raw) - pos >= need + dtype.itemsize:
            raise ValueError(f"{path}: the PCD header says {npts} points but the data holds "
                             f"{(len(raw) - pos) // dtype.itemsize}")
        arr = np.frombuffer(raw, dtype=dtype, count=npts, offset=pos)
        get = arr.__getitem__
        rgb_from_ascii = False
    elif mode == "binary_compressed":
        if len(raw) - pos < 8:
            raise ValueError(f"{path}: truncated binary_compressed PCD data")
        csize, usize = struct.unpack("<II", raw[pos:pos + 8])
        if len(raw) - pos - 8 < csize:
            raise ValueError(f"{path}: truncated binary_compressed PCD data")
        if usize != dtype.itemsize * npts:
            raise ValueError(f"{path}: the PCD header says {npts} points ({dtype.itemsize * npts} bytes) but the "
                             f"compressed block claims {usize} bytes")
        try:
            buf = lzf_decompress(raw[pos + 8:pos + 8 + csize], usize)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        # Decompressed data is field-major: all values of field 0, then field 1, ...
        col = {}
        off = 0
        for name, fmt in zip(names, formats):
            base, shape = (fmt, ()) if isinstance(fmt, str) else fmt
            cnt = int(np.prod(shape)) if shape else 1
            nbytes = np.dtype(base).itemsize * cnt * npts
            col[name] = np.frombuffer(buf, dtype=base, count=cnt * npts, offset=off).reshape(
                (npts,) + tuple(shape))
            off += nbytes
        get = col.__getitem__
        rgb_from_ascii = False
    else:
        raise ValueError(f"{path}: unknown PCD DATA mode {mode!r}")

    pts = np.stack([np.asarray(get(k), dtype=np.float64) for k in ("x", "y", "z")], axis=1)
    normals = None
    if all(k in names for k in ("normal_x", "normal_y", "normal_z")):
        normals = np.stack([np.asarray(get(k), dtype=np.float64)
                            for k in ("normal_x", "normal_y", "normal_z")], axis=1)
    colors = None
    for key in ("rgb", "rgba"):
        if key in names:
            i = names.index(key)
            v = np.asarray(get(key))
            if rgb_from_ascii:  # ascii holds the float (or integer) value; restore its bits
                v = v.astype(np.float32) if head["types"][i] == "F" else v.astype(np.uint32)
            colors = _unpack_rgb(v)
            break
    return _finish(path, pts, normals, colors)


def _write_pcd(path: Path, points, normals, colors, *, binary: bool, dtype) -> None:
    fields, sizes, types, cols = ["x", "y", "z"], [], [], [points]
    if normals is not None:
        fields += ["normal_x", "normal_y", "normal_z"]
        cols.append(normals)
    n = points.shape[0]
    fsize = np.dtype(dtype).itemsize
    sizes = [fsize] * len(fields)
    types = ["F"] * len(fields)
    rgb = None
    if colors is not None:
        fields.append("rgb")
        sizes.append(4)
        types.append("U")
        rgb = _pack_rgb(colors)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS {' '.join(fields)}\n"
        f"SIZE {' '.join(map(str, sizes))}\n"
        f"TYPE {' '.join(types)}\n"
        f"COUNT {' '.join(['1'] * len(fields))}\n"
        f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
        f"DATA {'binary' if binary else 'ascii'}\n"
    )
    floats = np.concatenate(cols, axis=1).astype(dtype)
    if binary:
        names = fields
        fmts = ["<" + np.dtype(dtype).str[1:]] * floats.shape[1] + (["<u4"] if rgb is not None else [])
        rec = np.empty(n, dtype=np.dtype({"names": names, "formats": fmts}))
        for i in range(floats.shape[1]):
            rec[names[i]] = floats[:, i]
        if rgb is not None:
            rec["rgb"] = rgb
        with open(path, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(rec.tobytes())
    else:
        fmt = "%.9g" if np.dtype(dtype) == np.float32 else "%.17g"
        if rgb is None:
            _savetxt_fast(path, floats.astype(np.float64), [fmt] * floats.shape[1], " ", header)
        else:
            table = np.concatenate([floats.astype(np.float64), rgb[:, None].astype(np.float64)], 1)
            _savetxt_fast(path, table, [fmt] * floats.shape[1] + ["%d"], " ", header)


# --------------------------------------------------------------------------------------------
# PLY
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------
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
    sends anything else to the line-by-line parser, which also words the errors."""
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


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
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
    (Anomaly-ShapeNet). Coordinates use ``%.9g`` (float32) or ``%.17g`` (float64)."""
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


def _savetxt_fast(path, table: np.ndarray, fmts, delimiter: str = " ", header: str = "") -> None:
    """``np.savetxt`` equivalent that formats all rows with one C-level ``%`` operation
    (several times faster for large tables)."""
    row = delimiter.join(fmts) + "\n"
    values = table.tolist()
    body = "".join(row % tuple(r) for r in values) if len(values) < 64 else \
        (row * len(values)) % tuple(v for r in values for v in r)
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        fh.write(header)
        fh.write(body)


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


# --------------------------------------------------------------------------------------------
# YAML from outside (CAD metadata files, service requests)
# --------------------------------------------------------------------------------------------
#: largest YAML text :func:`load_yaml` reads [bytes]
YAML_MAX_BYTES = 256 * 1024
#: most nodes of the document once every alias is expanded (a "billion laughs" stops here)
YAML_MAX_NODES = 100_000


def load_yaml(text, *, name: str = "YAML", max_bytes: int = YAML_MAX_BYTES, max_nodes: int = YAML_MAX_NODES):
    """Parse YAML that came from outside with the safe loader (plain data only, no ``!!python``
    tags), refusing a text over ``max_bytes`` and a document that expands, through its aliases,
    to more than ``max_nodes`` nodes -- counted on the parsed node graph before anything is built,
    so the check costs time and memory in proportion to the text.

    Args:
        text: the YAML text (``str`` or ``bytes``).
        name: what to call it in errors (a file name, ``"metadata_yaml"``).

    Returns:
        the document (``None`` for an empty one).

    Raises:
        ValueError: too large, not valid YAML, too deeply nested, or expanding too far.
    """
    import yaml

    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > max_bytes:
        raise ValueError(f"{name} is {size} bytes; the limit is {max_bytes} bytes")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        open_: set[int] = set()
        stack = [(node, False)]
        while stack:  # expanded size per node, each shared (aliased) node counted once per use
            n, done = stack.pop()
            kids = ([c for kv in n.value for c in kv] if isinstance(n, yaml.MappingNode) else
                    n.value if isinstance(n, yaml.SequenceNode) else [])
            if done:
                open_.discard(id(n))
                sizes[id(n)] = min(1 + sum(sizes[id(k)] for k in kids), max_nodes + 1)
                continue
            if id(n) in sizes:
                continue
            if id(n) in open_:
                raise ValueError(f"{name} contains a recursive alias: refused")
            open_.add(id(n))
            stack.append((n, True))
            stack.extend((k, False) for k in kids if id(k) not in sizes)
        if sizes[id(node)] > max_nodes:
            raise ValueError(f"{name} expands to more than {max_nodes} YAML nodes through its aliases "
                             "(an alias bomb?): refused")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ValueError(f"{name} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{name} is nested too deeply") from None
    finally:
        loader.dispose()
