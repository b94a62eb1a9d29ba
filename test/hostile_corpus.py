"""A corpus of hostile and broken input for the ``cosarad`` command and the nodes.

Every case is small and generated on the spot (nothing large is stored in the repository):

* :data:`CLI_CASES` -- corrupt and lying files, degenerate meshes, crafted YAML and models, bad
  names and oversized inputs given to the ``cosarad`` command. Each case says which command line
  to run, the text the one-line error must contain, the exit code, and its time and memory bounds.
* :func:`node_cases` -- the requests and messages sent to each node over DDS, with what the answer
  must say. A case either expects a refusal (``success=False`` and a message) or a result; the
  ``verdict`` field takes cases whose answer is a verdict (a cloud that must never PASS).

``python test/hostile_corpus.py OUT`` writes the files of the CLI cases into ``OUT`` and prints
them, for probing by hand. ``python test/hostile_corpus.py --serve`` is the runner that
``test_hostile_input.py`` uses: it imports the heavy modules once, then runs each case it reads on
stdin in a forked child (a fresh process for each case, as a separate ``cosarad`` invocation would
be), watching its resident memory and time, and answers one JSON line per case.
"""
from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

#: bounds every case must respect unless it says otherwise
MAX_SECONDS = 60.0
MAX_RSS_MB = 2048.0


# ------------------------------------------------------------------------------------------------
# file builders (they write lies on purpose: never use the project's writers for these)
# ------------------------------------------------------------------------------------------------
def box_points(n: int = 3000, size=(0.04, 0.03, 0.02), seed: int = 0) -> np.ndarray:
    """``(n, 3)`` points on the surface of a box [m], the cell's idea of a small part."""
    import trimesh

    from cosarad_ros.core.io import sample_mesh

    return sample_mesh(trimesh.creation.box(extents=size), n, seed=seed)[0]


def pcd_ascii(path: Path, pts, *, header_points: int | None = None, width: int | None = None) -> Path:
    n = len(pts) if header_points is None else header_points
    head = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
            f"WIDTH {n if width is None else width}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA ascii\n")
    body = "".join(f"{x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in np.asarray(pts, dtype=np.float64))
    path.write_text(head + body)
    return path


def pcd_binary(path: Path, pts) -> Path:
    n = len(pts)
    head = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
            f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA binary\n").encode()
    path.write_bytes(head + np.ascontiguousarray(pts, dtype="<f4").tobytes())
    return path


def pcd_compressed_claim(path: Path, claimed_points: int, payload: bytes) -> Path:
    """A ``binary_compressed`` PCD whose header and block claim ``claimed_points`` points."""
    usize = 12 * claimed_points
    head = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
            f"WIDTH {claimed_points}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {claimed_points}\n"
            "DATA binary_compressed\n").encode()
    path.write_bytes(head + struct.pack("<II", len(payload), usize & 0xFFFFFFFF) + payload)
    return path


def ply_binary(path: Path, pts, *, declared_endian: str = "little", header_vertices: int | None = None) -> Path:
    """A binary PLY whose data are little-endian float32, whatever the header declares."""
    n = len(pts) if header_vertices is None else header_vertices
    head = (f"ply\nformat binary_{declared_endian}_endian 1.0\nelement vertex {n}\n"
            "property float x\nproperty float y\nproperty float z\nend_header\n").encode()
    path.write_bytes(head + np.ascontiguousarray(pts, dtype="<f4").tobytes())
    return path


def byte_order_lie(pts) -> np.ndarray:
    """What little-endian float32 ``pts`` read as big-endian look like (garbage up to 1e38)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.ascontiguousarray(pts, dtype="<f4").view(">f4").astype(np.float64)


def lie_points(n: int = 2000, seed: int = 0) -> np.ndarray:
    """Plausible points whose byte-swapped reading holds values beyond 1e30 (checked)."""
    pts = box_points(n, seed=seed) + np.array([0.45, 0.0, 0.15])
    assert np.nanmax(np.abs(byte_order_lie(pts))) > 1e30
    return pts


def stl_mesh(path: Path, vertices, faces) -> Path:
    import trimesh

    trimesh.Trimesh(np.asarray(vertices, float), np.asarray(faces, int), process=False).export(str(path))
    return path


def single_triangle_stl(path: Path) -> Path:
    return stl_mesh(path, [[0, 0, 0], [0.03, 0, 0], [0, 0.03, 0]], [[0, 1, 2]])


def flat_stl(path: Path) -> Path:
    """Two triangles in one plane: a square with no volume."""
    return stl_mesh(path, [[0, 0, 0], [0.04, 0, 0], [0.04, 0.04, 0], [0, 0.04, 0]], [[0, 1, 2], [0, 2, 3]])


def box_stl(path: Path, size=(0.04, 0.03, 0.02)) -> Path:
    import trimesh

    trimesh.creation.box(extents=size).export(str(path))
    return path


def nan_stl(path: Path) -> Path:
    path.write_text("solid bad\nfacet normal 0 0 1\nouter loop\nvertex nan 0 0\nvertex 1 0 0\nvertex 0 1 0\n"
                    "endloop\nendfacet\nendsolid bad\n")
    return path


def alias_bomb(levels: int = 9) -> str:
    """A 'billion laughs' YAML document: 9 ** levels strings from a few hundred bytes."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def safetensors_model(path: Path, *, arch: dict | None = None, shape_lie: bool = False) -> Path:
    """A COSARAD-format model file: the tiny preset, or a crafted architecture record."""
    import torch
    from safetensors.torch import save_file

    from cosarad_ros.core.anomaly.model import FORMAT_VERSION, CosaradNet

    net = CosaradNet("tiny", feature_dim=16, hidden_dim=32)
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    if shape_lie:
        k = next(k for k, v in tensors.items() if v.ndim == 2)
        tensors[k] = torch.zeros(4096, 4096)
    if arch is not None:
        tensors = {"w": torch.zeros(1)}
    meta = {"format": FORMAT_VERSION, "arch": json.dumps(arch if arch is not None else net.arch()),
            "classes_seen": "[]", "patch_points": "64", "extra": "{}"}
    save_file(tensors, str(path), metadata=meta)
    return path


def huge_arch() -> dict:
    """An architecture record asking for terabytes of weights."""
    big = [1 << 20, 1 << 20, 1 << 20]
    return {"backbone": {"levels": [{"npoint": 1 << 20, "radii": [0.5], "nsamples": [1 << 20], "mlps": [big]}],
                         "global_mlp": big},
            "feature_dim": 1 << 20, "hidden_dim": 1 << 20, "dropout": 0.4, "inputs": "xyz"}


class _Pickled:
    """Unpickling this would run ``os.system``: the loader must refuse it without running it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------------------------------------
# CLI cases
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CliCase:
    """One command line on crafted input.

    Attributes:
        name: case id.
        category: what kind of input (files, meshes, yaml, models, names, resources, faults).
        make: ``make(root) -> argv`` writes the case's files under ``root`` and returns the
            arguments of ``cosarad``.
        expect: text the one-line error (stderr) must contain; ``""`` for a case that succeeds.
        rc: the exit code.
        max_seconds / max_rss_mb: time and peak resident memory bounds.
        unprivileged: run as an unprivileged user (file permissions mean nothing to root).
        check: ``check(root)`` after the run: a ``str`` describing a violation, or ``None``.
    """

    name: str
    category: str
    make: Callable[[Path], list]
    expect: str
    rc: int = 2
    max_seconds: float = 20.0
    max_rss_mb: float = MAX_RSS_MB
    unprivileged: bool = False
    check: Callable[[Path], str | None] | None = None


def _good_cloud(root: Path) -> Path:
    p = root / "good.pcd"
    if not p.exists():
        pcd_ascii(p, box_points(1500, seed=1))
    return p


def _library(root: Path) -> Path:
    """A CAD library holding one box model (created once per corpus folder)."""
    lib = root / "library"
    if not lib.exists():
        lib.mkdir()
        box_stl(lib / "box_a.stl")
        (lib / "box_a.yaml").write_text("label: box_a\ncode: BOX-A\n")
    return lib


def _library_unchanged(root: Path) -> str | None:
    names = _library_files(root / "library")
    return None if names == ["box_a.stl", "box_a.yaml"] else f"library changed: {names}"


def _mode_644(root: Path) -> str | None:
    bad = [f"{p.name} {oct(p.stat().st_mode & 0o777)}" for p in (root / "library").iterdir()
           if p.name.startswith("box_b") and p.stat().st_mode & 0o777 != 0o644]
    return f"new library files not 0644 (umask 022): {bad}" if bad else None


def _put(name: str, data):
    """A writer of ``data`` (text or bytes) to ``<root>/<name>``, returning the path."""
    def write(root: Path) -> Path:
        p = root / name
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
        return p
    return write


def _edit(path: Path, *pairs) -> Path:
    raw = path.read_bytes()
    for old, new in pairs:
        raw = raw.replace(old, new)
    path.write_bytes(raw)
    return path


def _file(fn):
    """``make`` for a ``register BAD good.pcd`` case from a writer ``fn(path)``."""
    def make(root: Path):
        return ["register", str(fn(root)), str(_good_cloud(root)), "--attempts", "1"]
    return make


def _huge_pcd(root):
    pts = box_points(500)
    pts[:50, 0] = 1e30
    return pcd_ascii(root / "huge.pcd", pts)


def _unreadable(root):
    p = pcd_ascii(root / "locked.pcd", box_points(500))
    p.chmod(0o000)
    return p


def _inspect(scan_fn, *extra):
    def make(root: Path):
        tdir = root / "templates"
        if not tdir.exists():
            tdir.mkdir()
            for i in range(3):
                pcd_ascii(tdir / f"template_{i}.pcd", box_points(1500, seed=10 + i))
        return ["inspect", str(scan_fn(root)), "--templates", str(tdir), "--method", "deviation",
                "--cache", str(root / "cache"), "--png", str(root / "map.png"), *extra]
    return make


def _cad_add(mesh_fn, *extra, metadata: str | None = None):
    def make(root: Path):
        lib = _library(root)
        argv = ["cad", "add", str(mesh_fn(root)), "--library", str(lib), *extra]
        if metadata is not None:
            m = root / "meta.yaml"
            m.write_text(metadata)
            argv += ["--metadata", str(m)]
        return argv
    return make


def _plan(mesh_fn):
    return lambda root: ["plan-views", str(mesh_fn(root)), "--samples", "300", "--candidates", "24", "--quiet"]


def _big_cloud(root):
    p = root / "big.pcd"
    return p if p.exists() else pcd_binary(p, box_points(1_000_000, seed=3))


def _pickled_checkpoint(root):
    import torch

    out = root / "train_run"
    out.mkdir(exist_ok=True)
    torch.save({"config": _Pickled(str(root / "PWNED"))}, out / "checkpoint.pt")
    return ["train", "--export", "last", "--out", str(out)]


def _not_pwned(root: Path) -> str | None:
    return "the pickled checkpoint ran code" if (root / "PWNED").exists() else None


CLI_CASES: tuple[CliCase, ...] = (
    # --- corrupt and lying point cloud files
    CliCase("pcd-huge-coordinates", "files", _file(_huge_pcd), "beyond 1e+09"),
    CliCase("ply-byte-order-lie", "files",
            _file(lambda r: ply_binary(r / "lie.ply", lie_points(), declared_endian="big")), "beyond 1e+09"),
    CliCase("pcd-header-fewer-points", "files",
            _file(lambda r: pcd_ascii(r / "short.pcd", box_points(500), header_points=10)),
            "header says 10 points but the data holds 500"),
    CliCase("pcd-header-more-points", "files",
            _file(lambda r: pcd_ascii(r / "long.pcd", box_points(500), header_points=800)), "truncated"),
    CliCase("pcd-binary-header-fewer-points", "files",
            _file(lambda r: _edit(pcd_binary(r / "bshort.pcd", box_points(500)), (b"POINTS 500", b"POINTS 50"),
                                  (b"WIDTH 500", b"WIDTH 50"))), "header says 50 points but the data holds 500"),
    CliCase("pcd-width-height-disagree", "files",
            _file(lambda r: pcd_ascii(r / "wh.pcd", box_points(500), width=499)), "disagrees with itself"),
    CliCase("pcd-compressed-claims-4gb", "files",
            _file(lambda r: pcd_compressed_claim(r / "bomb.pcd", 357_913_941, b"\x00" * 64)), "cannot hold",
            max_rss_mb=1200),
    CliCase("pcd-compressed-corrupt-stream", "files",
            _file(lambda r: pcd_compressed_claim(r / "corrupt.pcd", 100, b"\xff" * 200)), "corrupt LZF"),
    CliCase("pcd-no-xyz-fields", "files",
            _file(_put("noxyz.pcd", "VERSION 0.7\nFIELDS a b\nSIZE 4 4\nTYPE F F\nCOUNT 1 1\nWIDTH 1\nHEIGHT 1\n"
                                    "POINTS 1\nDATA ascii\n1 2\n")), "no x y z"),
    CliCase("pcd-garbage-bytes", "files",
            _file(_put("garbage.pcd", np.random.default_rng(0).integers(11, 256, 4096, dtype=np.uint8).tobytes())),
            "PCD"),
    CliCase("ply-header-fewer-vertices", "files",
            _file(lambda r: ply_binary(r / "short.ply", box_points(500), header_vertices=20)),
            "header says 20 vertices but the data holds 500"),
    CliCase("xyz-ragged-rows", "files",
            _file(_put("ragged.xyz", "0 0 0\n1 2\n0 1 0\n")), "row 2"),
    CliCase("file-empty", "files", _file(_put("empty.pcd", b"")), "empty (0 bytes)"),
    CliCase("file-is-a-directory", "files", _file(lambda r: (r / "dir.pcd").mkdir() or r / "dir.pcd"),
            "is a directory"),
    CliCase("file-without-read-permission", "files", _file(_unreadable), "permission denied", unprivileged=True),
    CliCase("file-nan-only", "files",
            _file(lambda r: pcd_ascii(r / "nan.pcd", np.full((100, 3), np.nan))), "no (finite) points"),
    CliCase("scan-in-millimetres", "files", _inspect(lambda r: pcd_ascii(r / "mm.pcd", box_points(1500) * 1000)),
            "looks like millimetres"),
    CliCase("scan-huge-coordinates", "files", _inspect(_huge_pcd), "beyond 1e+09"),
    # --- meshes
    CliCase("plan-views-single-triangle", "meshes", _plan(lambda r: single_triangle_stl(r / "tri.stl")),
            "at least 4"),
    CliCase("plan-views-flat-mesh", "meshes", _plan(lambda r: flat_stl(r / "flat.stl")), "flat"),
    CliCase("plan-views-corrupt-stl", "meshes",
            _plan(_put("junk.stl", b"solid x\nthis is no stl\n")), "holds no triangles"),
    CliCase("plan-views-nan-vertices", "meshes", _plan(lambda r: nan_stl(r / "nan.stl")), "non-finite"),
    CliCase("cad-add-single-triangle", "meshes", _cad_add(lambda r: single_triangle_stl(r / "tri.stl")),
            "at least 4", check=_library_unchanged),
    CliCase("cad-add-flat-mesh", "meshes", _cad_add(lambda r: flat_stl(r / "flat.stl")), "flat",
            check=_library_unchanged),
    CliCase("cad-add-millimetres-as-metres", "meshes",
            _cad_add(lambda r: box_stl(r / "mm_box.stl", size=(40, 30, 20))), "looks like millimetres",
            check=_library_unchanged),
    CliCase("cad-add-new-files-mode", "meshes", _cad_add(lambda r: box_stl(r / "box_b.stl", size=(0.05, 0.03, 0.02))),
            "", rc=0, check=_mode_644),
    # --- YAML
    CliCase("yaml-alias-bomb", "yaml", _cad_add(lambda r: box_stl(r / "box_c.stl"), metadata=alias_bomb()),
            "alias", max_seconds=10, max_rss_mb=1200, check=_library_unchanged),
    CliCase("yaml-python-tag", "yaml",
            _cad_add(lambda r: box_stl(r / "box_c.stl"), metadata="x: !!python/object/apply:os.system ['true']\n"),
            "not valid YAML", check=_library_unchanged),
    CliCase("yaml-oversized", "yaml",
            _cad_add(lambda r: box_stl(r / "box_c.stl"), metadata="d: '" + "x" * 300_000 + "'\n"), "the limit is",
            check=_library_unchanged),
    CliCase("yaml-deep-nesting", "yaml",
            _cad_add(lambda r: box_stl(r / "box_c.stl"), metadata="d: " + "[" * 3000 + "]" * 3000 + "\n"),
            "nested too deeply", check=_library_unchanged),
    CliCase("yaml-recursive-alias", "yaml",
            _cad_add(lambda r: box_stl(r / "box_c.stl"), metadata="d: &d [*d]\n"), "recursive alias",
            check=_library_unchanged),
    # --- names
    CliCase("cad-label-trailing-newline", "names", _cad_add(lambda r: box_stl(r / "box_c.stl"), "--label", "box_c\n"),
            "not a valid name", check=_library_unchanged),
    CliCase("cad-label-path-traversal", "names",
            _cad_add(lambda r: box_stl(r / "box_c.stl"), "--label", "../escape"), "not a valid name",
            check=_library_unchanged),
    CliCase("cad-label-absolute-path", "names",
            _cad_add(lambda r: box_stl(r / "box_c.stl"), "--label", "/tmp/escape"), "not a valid name",
            check=_library_unchanged),
    CliCase("cad-metadata-label-control-char", "names",
            _cad_add(lambda r: box_stl(r / "box_c.stl"), metadata='label: "box\\x07c"\n'), "not a valid name",
            check=_library_unchanged),
    CliCase("inspect-part-type-path", "names", _inspect(_good_cloud, "--part-type", "../../etc"),
            "not a valid name"),
    # --- crafted models
    CliCase("model-huge-architecture", "models",
            _inspect(_good_cloud, "--method", "cosarad", "--model", "MODEL:huge"), "none of the known architectures",
            max_rss_mb=1500),
    CliCase("model-tensor-shape-lie", "models",
            _inspect(_good_cloud, "--method", "cosarad", "--model", "MODEL:shape"), "has shape"),
    CliCase("model-not-safetensors", "models",
            _inspect(_good_cloud, "--method", "cosarad", "--model", "MODEL:junk"), "not a readable safetensors"),
    CliCase("checkpoint-pickled-code", "models", _pickled_checkpoint, "Weights only load failed", rc=1,
            check=_not_pwned),
    # --- resources
    CliCase("million-points-capped", "resources",
            lambda r: ["register", str(_big_cloud(r)), str(_big_cloud(r)), "--max-points", "5000",
                       "--attempts", "1", "--method", "identity", "--json"], "", rc=0, max_seconds=30),
)


def resolve_models(argv: list, root: Path) -> list:
    """Replace ``MODEL:<kind>`` placeholders by crafted model files written under ``root``."""
    out = []
    for a in argv:
        if isinstance(a, str) and a.startswith("MODEL:"):
            kind = a.split(":", 1)[1]
            p = root / f"model_{kind}.safetensors"
            if kind == "huge":
                safetensors_model(p, arch=huge_arch())
            elif kind == "shape":
                safetensors_model(p, shape_lie=True)
            else:
                p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
            a = str(p)
        out.append(a)
    return out


# ------------------------------------------------------------------------------------------------
# node cases
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeCase:
    """One request (or message) to a node.

    Attributes:
        name: case id.
        category: what kind of input.
        request: ``request(ctx) -> request message`` (``ctx``: the fixture's dict of paths and
            data); for a topic case, the message to publish.
        expect: text the refusal's message must contain (``success=False``); ``""`` with
            ``verdict`` or for a good request.
        verdict: for a request that must succeed with an ``InspectionResult``: the verdicts
            allowed (e.g. ``("INCONCLUSIVE",)`` for a cloud that did not register onto the part).
        succeeds: the request must succeed (an oversized cloud cut to ``max_points``, say).
        topic: publish the message on this topic instead of calling the service.
        max_seconds: the answer's time bound.
        check: ``check(ctx) -> str | None`` after the answer (files left behind, ...).
    """

    name: str
    category: str
    request: Callable[[dict], object]
    expect: str = ""
    verdict: tuple = ()
    succeeds: bool = False
    topic: str = ""
    max_seconds: float = 15.0
    check: Callable[[dict], str | None] | None = None


def cloud_msg(pts, *, big_endian_flag: bool = False, dtype="<f4", frame_id: str = "part"):
    """A ``PointCloud2`` of ``x y z`` (float32 or float64); ``big_endian_flag`` marks little-endian
    data as big-endian (the lie).
    """
    from sensor_msgs.msg import PointCloud2, PointField

    dt = np.dtype(dtype)
    kind = PointField.FLOAT32 if dt.itemsize == 4 else PointField.FLOAT64
    data = np.ascontiguousarray(pts, dtype=dt)
    msg = PointCloud2(height=1, width=len(data), point_step=3 * dt.itemsize, row_step=3 * dt.itemsize * len(data),
                      is_bigendian=big_endian_flag, is_dense=True,
                      fields=[PointField(name=c, offset=i * dt.itemsize, datatype=kind, count=1)
                              for i, c in enumerate("xyz")])
    msg.header.frame_id = frame_id
    msg.data = data.tobytes()
    return msg


def short_cloud_msg():
    """A cloud whose data are half what width * point_step promise."""
    msg = cloud_msg(box_points(100))
    msg.data = bytes(msg.data)[:600]
    return msg


def huge_points(seed: int = 0) -> np.ndarray:
    pts = box_points(2000, seed=seed)
    pts[::7, 0] = 1e30
    return pts


def node_cases(node: str) -> tuple[NodeCase, ...]:
    """The cases of one node (``anomaly``, ``registration``, ``classifier``, ``planner``, ``scanner``)."""
    from cosarad_ros.srv import ClassifyPart, DetectAnomalies, LoadPart, PlanViews, RegisterCadModel, RegisterCloud

    if node == "anomaly":
        def det_req(pts, part="box"):
            return DetectAnomalies.Request(part_type=part, part_id="x", cloud=cloud_msg(pts))

        def patch(pts, n):
            """The ``n`` points nearest to one point of ``pts``: a small piece of the part."""
            return pts[np.argsort(np.linalg.norm(pts - pts[0], axis=1))[:n]]

        def det(pts=None, part="box", msg=None):
            return lambda ctx: DetectAnomalies.Request(part_type=part, part_id="x",
                                                       cloud=msg if msg is not None else cloud_msg(
                                                           ctx["scan"] if pts is None else pts))
        return (
            NodeCase("huge-coordinates", "clouds", det(huge_points()), "beyond 1e+09"),
            NodeCase("byte-order-lie", "clouds", det(msg=cloud_msg(lie_points(), big_endian_flag=True)), "beyond"),
            NodeCase("float64-1e300", "clouds", det(msg=cloud_msg(np.full((500, 3), 1e300), dtype="<f8")), "beyond"),
            NodeCase("millimetres", "clouds", det(box_points(2000) * 1000), "looks like millimetres"),
            NodeCase("short-data", "clouds", det(msg=short_cloud_msg()), "cloud"),
            NodeCase("too-few-points", "clouds", det(box_points(20)), "need at least"),
            NodeCase("part-type-absolute-path", "names", det(part="/etc"), "not a valid name"),
            NodeCase("part-type-traversal", "names", det(part="../templates/box"), "not a valid name"),
            NodeCase("part-type-trailing-newline", "names", det(part="box\n"), "not a valid name"),
            NodeCase("template-file-unreadable", "files", det(part="locked"), "permission denied"),
            NodeCase("cloud-in-huge-coordinates", "clouds", lambda ctx: cloud_msg(huge_points()), "beyond 1e+09",
                     topic="/anomaly_node/cloud_in"),
            NodeCase("over-max-points", "resources", det(box_points(300_000, seed=8)),
                     verdict=("PASS", "FAIL", "INCONCLUSIVE"), max_seconds=30),
            # garbage that is no scan of the part: refused ("") or INCONCLUSIVE, never a verdict
            NodeCase("garbage-copies-of-one-point", "garbage", lambda ctx: det_req(np.tile(ctx["scan"][:1], (8729, 1))),
                     verdict=("", "INCONCLUSIVE"), max_seconds=30),
            NodeCase("garbage-all-at-origin", "garbage", det(np.zeros((5000, 3))), verdict=("", "INCONCLUSIVE"),
                     max_seconds=30),
            NodeCase("garbage-300-point-patch", "garbage", lambda ctx: det_req(patch(ctx["scan"], 300)),
                     verdict=("", "INCONCLUSIVE"), max_seconds=30),
            NodeCase("garbage-micrometres", "garbage", lambda ctx: det_req(ctx["scan"] * 1e-3),
                     verdict=("", "INCONCLUSIVE"), max_seconds=30),
        )
    if node == "registration":
        def reg(src=None, tgt=None, ref="box", src_msg=None):
            def make(ctx):
                req = RegisterCloud.Request(reference=ref)
                req.source = src_msg if src_msg is not None else cloud_msg(ctx["scan"] if src is None else src)
                if tgt is not None:
                    req.target = cloud_msg(tgt)
                return req
            return make
        return (
            NodeCase("reference-traversal", "names", reg(ref="../outside/secret"), "not a valid name"),
            NodeCase("reference-absolute-path", "names", reg(ref="/etc/passwd"), "not a valid name"),
            NodeCase("reference-trailing-newline", "names", reg(ref="box\n"), "not a valid name"),
            NodeCase("reference-symlink-outside", "names", reg(ref="sneaky"), "leads outside"),
            NodeCase("source-huge-coordinates", "clouds", reg(src=huge_points()), "beyond 1e+09"),
            NodeCase("source-byte-order-lie", "clouds", reg(src_msg=cloud_msg(lie_points(), big_endian_flag=True)),
                     "beyond"),
            NodeCase("target-millimetres", "clouds", reg(tgt=box_points(2000) * 1000), "looks like millimetres"),
            NodeCase("over-max-points", "resources", reg(src=box_points(300_000, seed=9)), succeeds=True,
                     max_seconds=30),
        )
    if node == "classifier":
        def add(mesh_key, label="", meta=""):
            return lambda ctx: RegisterCadModel.Request(mesh_path=str(ctx[mesh_key]), label=label,
                                                        metadata_yaml=meta)

        def cls(pts=None, msg=None):
            return lambda ctx: ClassifyPart.Request(cloud=msg if msg is not None else cloud_msg(pts))

        unchanged = _node_library_unchanged
        return (
            NodeCase("register-single-triangle", "meshes", add("triangle"), "at least 4", check=unchanged),
            NodeCase("register-flat-mesh", "meshes", add("flat"), "flat", check=unchanged),
            NodeCase("register-alias-bomb", "yaml", add("spare", meta=alias_bomb()), "alias", max_seconds=5,
                     check=unchanged),
            NodeCase("register-python-tag", "yaml", add("spare", meta="x: !!python/object/apply:os.system ['true']"),
                     "not valid YAML", check=unchanged),
            NodeCase("register-oversized-yaml", "yaml", add("spare", meta="d: '" + "x" * 300_000 + "'"),
                     "the limit is", check=unchanged),
            NodeCase("register-label-newline", "names", add("spare", label="spare\n"), "not a valid name",
                     check=unchanged),
            NodeCase("register-label-traversal", "names", add("spare", label="../spare"), "not a valid name",
                     check=unchanged),
            NodeCase("classify-huge-coordinates", "clouds", cls(huge_points()), "beyond 1e+09"),
            NodeCase("classify-byte-order-lie", "clouds", cls(msg=cloud_msg(lie_points(), big_endian_flag=True)),
                     "beyond"),
            NodeCase("classify-millimetres", "clouds", cls(box_points(2000) * 1000), "looks like millimetres"),
        )
    if node == "planner":
        def plan(key=None, part=""):
            return lambda ctx: PlanViews.Request(mesh_path=str(ctx[key]) if key else "", part_type=part)
        return (
            NodeCase("single-triangle", "meshes", plan("triangle"), "at least 4"),
            NodeCase("flat-mesh", "meshes", plan("flat"), "flat"),
            NodeCase("millimetre-mesh", "meshes", plan("mm_box"), "millimetres"),
            NodeCase("corrupt-stl", "meshes", plan("junk"), "holds no triangles"),
            NodeCase("part-type-traversal", "names", plan(part="../box"), "not a valid name"),
        )
    if node == "scanner":
        def load(key):
            return lambda ctx: LoadPart.Request(mesh_path=str(ctx[key]), part_id="x")
        return (
            NodeCase("load-single-triangle", "meshes", load("triangle"), "at least 4"),
            NodeCase("load-flat-mesh", "meshes", load("flat"), "flat"),
            NodeCase("load-millimetre-mesh", "meshes", load("mm_box"), "millimetres"),
            NodeCase("load-missing-file", "files", lambda ctx: LoadPart.Request(mesh_path="/nonexistent/x.stl"),
                     "no such file"),
        )
    raise ValueError(f"unknown node {node!r}")


def _library_files(folder) -> list[str]:
    """The library folder's entries, without hidden ones (the classifier's prepared-model cache)."""
    return sorted(p.name for p in Path(folder).iterdir() if not p.name.startswith("."))


def _node_library_unchanged(ctx: dict) -> str | None:
    names = _library_files(ctx["library"])
    return None if names == ctx["library_files"] else f"library changed: {names}"


def write_node_inputs(root: Path) -> dict:
    """Files the node cases refer to, under ``root``; returns the ``ctx`` dict."""
    root.mkdir(parents=True, exist_ok=True)
    ctx: dict = {"root": root, "scan": box_points(3000, seed=7)}
    ctx["triangle"] = single_triangle_stl(root / "triangle.stl")
    ctx["flat"] = flat_stl(root / "flat.stl")
    ctx["mm_box"] = box_stl(root / "mm_box.stl", size=(40, 30, 20))
    ctx["junk"] = root / "junk.stl"
    ctx["junk"].write_bytes(b"solid x\nthis is no stl\n")
    ctx["good_mesh"] = box_stl(root / "box.stl")
    ctx["spare"] = box_stl(root / "spare.stl", size=(0.05, 0.035, 0.025))
    lib = root / "library"
    lib.mkdir(exist_ok=True)
    box_stl(lib / "box.stl")
    box_stl(lib / "slab.stl", size=(0.06, 0.04, 0.01))
    ctx["library"] = lib
    ctx["library_files"] = _library_files(lib)
    tmpl = root / "templates"
    (tmpl / "box").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        pcd_ascii(tmpl / "box" / f"t{i}.pcd", box_points(3000, seed=20 + i))
    (tmpl / "locked").mkdir(exist_ok=True)
    locked = pcd_ascii(tmpl / "locked" / "t0.pcd", box_points(500))
    locked.chmod(0o000)
    ctx["templates"] = tmpl
    refs, outside = root / "refs", root / "outside"
    refs.mkdir(exist_ok=True)
    outside.mkdir(exist_ok=True)
    pcd_ascii(refs / "box.pcd", box_points(4000, seed=30))
    pcd_ascii(outside / "secret.pcd", box_points(500, seed=31))
    (refs / "sneaky.pcd").symlink_to(outside / "secret.pcd")
    ctx["refs"] = refs
    for d in (root, tmpl, tmpl / "box", tmpl / "locked", refs, outside, lib):
        d.chmod(0o755)
    return ctx


# ------------------------------------------------------------------------------------------------
# the runner: one forked child per case
# ------------------------------------------------------------------------------------------------
def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_job(job: dict) -> dict:
    """Run ``cosarad <argv>`` in a forked child; kill it past its time or memory bound."""
    import signal
    import time

    from cosarad_ros.cli.main import main as cli_main

    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: a fresh `cosarad` process as far as the case can tell
        rc = 99
        try:
            os.chdir(job["cwd"])
            for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
                f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
                os.dup2(f, fd)
                os.close(f)
            if job.get("unprivileged") and os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            rc = cli_main(list(job["argv"]))
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 - a traceback here is what the test looks for
            import traceback

            traceback.print_exc()
            rc = 98
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(int(rc) & 0xFF)
    peak, killed = 0.0, ""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        peak = max(peak, _rss_mb(pid))
        elapsed = time.monotonic() - t0
        if not killed and peak > job["max_rss_mb"]:
            killed = f"killed: resident memory {peak:.0f} MB over {job['max_rss_mb']:.0f} MB"
            os.kill(pid, signal.SIGKILL)
        elif not killed and elapsed > job["max_seconds"]:
            killed = f"killed: still running after {job['max_seconds']:.0f} s"
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    return {"rc": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - t0,
            "max_rss_mb": max(peak, usage.ru_maxrss / 1024.0), "killed": killed}


def serve() -> None:
    """Read one JSON job per line on stdin, answer one JSON result per line on stdout."""
    import importlib

    # what the cases run, imported once before any fork (nothing computed yet: fork-safe)
    for mod in ("open3d", "torch", "trimesh", "cosarad_ros.cli.main", "cosarad_ros.cli.register",
                "cosarad_ros.cli.inspect", "cosarad_ros.cli.cad", "cosarad_ros.cli.plan_views", "cosarad_ros.cli.train",
                "cosarad_ros.core.io", "cosarad_ros.core.registration", "cosarad_ros.core.anomaly",
                "cosarad_ros.core.anomaly.evaluation", "cosarad_ros.core.cad", "cosarad_ros.core.planning",
                "cosarad_ros.core.anomaly.training"):
        importlib.import_module(mod)
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(run_job(json.loads(line))) + "\n")
            out.flush()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        serve()
        return 0
    if len(argv) != 1:
        print("usage: python test/hostile_corpus.py OUT_DIR   (or --serve)", file=sys.stderr)
        return 2
    root = Path(argv[0])
    root.mkdir(parents=True, exist_ok=True)
    for case in CLI_CASES:
        d = root / case.name
        d.mkdir(exist_ok=True)
        argv_ = resolve_models(case.make(d), d)
        print(f"{case.category:<10} {case.name:<34} cosarad {' '.join(map(repr, argv_))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
