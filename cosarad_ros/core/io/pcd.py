"""PCD files (Point Cloud Library format v0.7): our own reader (``ascii``, ``binary``,
``binary_compressed``) and writer (``ascii``, ``binary``), and the LZF decompressor of
``binary_compressed`` data.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .common import PointCloudFile, _finish, _pack_rgb, _savetxt_fast, _unpack_rgb

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
