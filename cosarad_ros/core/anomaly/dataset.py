"""Data containers for training and evaluation, benchmark folder readers, and toy parts for tests.

* :class:`TestSample` / :class:`ClassData` -- one class of a benchmark: good templates (full
  360-degree scans) and labelled test scans (partial, good or defective, with point masks).
* :func:`load_benchmark` / :func:`iter_benchmark` -- a benchmark folder in the Real3D-AD or
  Anomaly-ShapeNet layout, read with the data layer's readers and converted to metres.
* :func:`toy_class` -- a small procedural part (box + boss + rib, CSG union) with templates and
  partial test scans carrying bulges and sinks; enough for unit tests and smoke training runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TestSample", "ClassData", "load_benchmark", "iter_benchmark", "list_classes", "toy_class",
           "toy_benchmark", "UNIT_SCALES", "partial_view", "add_bump", "RegisteredClass", "register_class"]

#: length unit -> metres
UNIT_SCALES = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}


@dataclass(frozen=True)
class TestSample:
    """A test scan.

    Attributes:
        name: file stem.
        points: ``(N, 3)`` metres.
        labels: ``(N,)`` bool point mask (True = anomalous); all False for good scans.
        defect_type: ``"good"`` or the defect kind parsed from the name.
        pose: ground-truth ``(4, 4)`` part frame -> scan frame (metres) when the benchmark records
            it (synthetic benchmarks), else ``None``.
    """

    name: str
    points: np.ndarray
    labels: np.ndarray
    defect_type: str = "good"
    pose: np.ndarray | None = None

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type != "good"


@dataclass(frozen=True)
class ClassData:
    """One class: ``templates`` (full good scans, metres), ``tests``, and the templates'
    ground-truth poses (part frame -> template frame) when known.
    """

    name: str
    templates: tuple
    tests: tuple
    template_poses: tuple | None = None

    @property
    def n_good(self) -> int:
        return sum(not t.is_anomalous for t in self.tests)

    @property
    def n_bad(self) -> int:
        return sum(t.is_anomalous for t in self.tests)


def list_classes(root, layout: str | None = None) -> list[str]:
    """Class names of a benchmark folder (via :func:`cosarad_ros.core.data.datasets.index_benchmark`)."""
    from ..data.datasets import index_benchmark

    if not Path(os.fspath(root)).is_dir():
        raise FileNotFoundError(f"benchmark folder not found: {root}")
    return list(index_benchmark(root, layout).class_names)


def iter_benchmark(root, layout: str | None = None, *, classes=None, unit: str | None = None,
                   max_tests: int | None = None):
    """Yield :class:`ClassData` one class at a time (a whole benchmark need not fit in memory).

    Args:
        root: benchmark folder; read with the data layer's readers
            (:mod:`cosarad_ros.core.data.datasets`, which also transfer the GT labels).
        layout: ``"real3d"`` or ``"anomaly-shapenet"`` (``None``: detected).
        classes: subset of class names (default all).
        unit: file unit (``"mm"``, ``"cm"``, ``"m"``); ``None``: what the layout / manifest says
            (Real3D-AD: mm; Anomaly-ShapeNet: unknown, kept as is -- COSARAD is scale-free
            because the patch radius is relative to the part).
        max_tests: read at most this many test scans per class (half good, half defective).

    Raises:
        FileNotFoundError: missing folder. ValueError: unknown layout / class / unit, bad files.
    """
    from ..data.datasets import index_benchmark

    if not Path(os.fspath(root)).is_dir():
        raise FileNotFoundError(f"benchmark folder not found: {root}")
    if layout is not None and layout not in ("real3d", "anomaly-shapenet"):
        raise ValueError(f"unknown layout {layout!r}; choose 'real3d' or 'anomaly-shapenet'")
    if unit is not None and unit not in UNIT_SCALES:
        raise ValueError(f"unknown unit {unit!r}; choose from {sorted(UNIT_SCALES)}")
    idx = index_benchmark(root, layout)
    manifest = {}
    mpath = Path(os.fspath(root)) / "manifest.json"
    if mpath.is_file():
        import json

        with open(mpath) as f:
            manifest = json.load(f).get("classes", {})
    names = list(idx.class_names)
    if classes:
        missing = sorted(set(classes) - set(names))
        if missing:
            raise ValueError(f"classes {missing} not found in {root} (have: {', '.join(names)})")
        names = [n for n in names if n in set(classes)]
    for name in names:
        bc = idx.load_class(name)
        k = UNIT_SCALES[unit] if unit is not None else (bc.scale_to_metres or 1.0)
        tests = list(bc.tests)
        if max_tests is not None:
            good = [t for t in tests if not t.is_anomalous]
            bad = [t for t in tests if t.is_anomalous]
            nb = min(max_tests // 2, len(bad))
            keep = {t.name for t in good[: max_tests - nb] + bad[:nb]}
            tests = [t for t in tests if t.name in keep]
        poses = _manifest_poses(manifest.get(name), k)
        tposes = tuple(poses.get(Path(p).stem) for p in bc.template_paths) if bc.template_paths else ()
        yield ClassData(name, tuple(np.asarray(t) * k for t in bc.templates),
                        tuple(TestSample(t.name, np.asarray(t.points) * k, np.asarray(t.mask, dtype=bool),
                                         t.defect_type if t.is_anomalous else "good", poses.get(t.name))
                              for t in tests),
                        tposes if tposes and all(p is not None for p in tposes) else None)


def _manifest_poses(entry: dict | None, k: float) -> dict:
    """File stem -> ``(4, 4)`` part frame -> file frame in metres, from a synth manifest entry.

    The manifest's convention: ``file_points = scale * (pose[:3, :3] @ part_points_m + pose[:3, 3])``
    with ``scale = 1 / scale_to_metres``; we read files times ``k`` (to metres), so the
    transform from the part frame to our points is ``pose`` scaled by ``k * scale``.
    """
    if not entry:
        return {}
    s_to_m = entry.get("scale_to_metres") or 1.0
    f = k / s_to_m  # our units per file unit, times file units per metre = our units per metre
    out = {}
    for item in list(entry.get("templates", [])) + list(entry.get("tests", [])):
        pose = item.get("pose")
        if pose is None or "file" not in item:
            continue
        T = np.asarray(pose, dtype=np.float64).reshape(4, 4).copy()
        T[:3, :3] *= f
        T[:3, 3] *= f
        out[Path(item["file"]).stem] = T
    return out


def load_benchmark(root, layout: str | None = None, **kwargs) -> list[ClassData]:
    """All classes of a benchmark folder in memory (see :func:`iter_benchmark`)."""
    return list(iter_benchmark(root, layout, **kwargs))


# ---------------------------------------------------------------------------------- toy parts
def _toy_mesh(seed: int):
    """A non-symmetric part about 60 mm long: plate + off-centre boss + rib (CSG union), metres."""
    import trimesh

    rng = np.random.default_rng(seed)
    L, W, H = rng.uniform(0.05, 0.07), rng.uniform(0.03, 0.045), rng.uniform(0.008, 0.014)
    plate = trimesh.creation.box((L, W, H))
    r = rng.uniform(0.006, 0.01)
    boss = trimesh.creation.cylinder(radius=r, height=H * 1.8, sections=32)
    boss.apply_translation((rng.uniform(0.1, 0.3) * L, rng.uniform(-0.15, 0.15) * W, 0.4 * H))
    rib = trimesh.creation.box((0.5 * L, 0.004, 0.9 * H))
    rib.apply_translation((-0.2 * L, -0.3 * W, 0.6 * H))
    try:
        return trimesh.boolean.union([plate, boss, rib], engine="manifold")
    except Exception:  # pragma: no cover - manifold3d missing
        return trimesh.util.concatenate([plate, boss, rib])


def partial_view(points, rng: np.random.Generator, *, direction=None) -> np.ndarray:
    """Indices of the points visible from a random (or given) direction, by hidden point removal
    (Katz, Tal, Basri, "Direct visibility of point sets", SIGGRAPH 2007).
    """
    import open3d as o3d

    pts = np.asarray(points, dtype=np.float64)
    c = pts.mean(0)
    diag = float(np.linalg.norm(pts.max(0) - pts.min(0)))
    if direction is None:
        direction = rng.normal(size=3)
        direction[2] = abs(direction[2]) + 0.5  # look mostly from above, like a cell camera
    direction = np.asarray(direction, dtype=np.float64)
    cam = c + 2.0 * diag * direction / np.linalg.norm(direction)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    _, idx = pcd.hidden_point_removal(cam, diag * 100.0)
    return np.asarray(sorted(idx), dtype=np.int64)


def add_bump(points, normals, rng: np.random.Generator, *, radius: float, height: float,
             centre_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Push points within ``radius`` of a surface point along their normals by
    ``height * (1 - (d / radius)^2)^2`` (a bulge for ``height > 0``, a sink for ``< 0``).

    Returns ``(moved points, mask)``; the mask marks points moved by more than 2 % of ``|height|``.
    """
    pts = np.asarray(points, dtype=np.float64)
    i = int(rng.integers(len(pts))) if centre_index is None else int(centre_index)
    d = np.linalg.norm(pts - pts[i], axis=1)
    w = np.clip(1.0 - (d / radius) ** 2, 0.0, None) ** 2
    # average normal of the neighbourhood so sharp edges do not tear the bump apart
    n0 = normals[d < radius].mean(0)
    n0 /= max(np.linalg.norm(n0), 1e-12)
    moved = pts + (height * w)[:, None] * n0
    return moved, w * abs(height) > 0.02 * abs(height)


def toy_class(seed: int, *, name: str | None = None, n_templates: int = 4, n_good: int = 4, n_bad: int = 4,
              points: int = 6000, noise: float = 5e-5, defect_radius: float = 0.006,
              defect_height: float = 0.0015, partial: bool = True) -> ClassData:
    """A toy class: templates are full noisy samples of one procedural part in random poses,
    test scans are partial views (hidden point removal) in random poses, half with a bulge or
    sink of ``defect_radius`` / ``defect_height`` (metres).
    """
    from ..geometry import random_rotation
    from ..io import sample_mesh

    mesh = _toy_mesh(seed)
    rng = np.random.default_rng(seed + 12345)

    def pose(p):
        R = random_rotation(rng)
        return p @ R.T + rng.uniform(-0.05, 0.05, size=3)

    templates = []
    for g in range(n_templates):
        p, _ = sample_mesh(mesh, points, seed=int(rng.integers(2**31)))
        templates.append(pose(p + rng.normal(scale=noise, size=p.shape)))
    tests = []
    for i in range(n_good + n_bad):
        p, n = sample_mesh(mesh, int(points * 1.6), seed=int(rng.integers(2**31)))
        mask = np.zeros(len(p), dtype=bool)
        kind = "good"
        direction = None
        if i >= n_good:
            kind = "bulge" if i % 2 == 0 else "sink"
            sign = 1.0 if kind == "bulge" else -1.0
            ci = int(rng.integers(len(p)))
            p, mask = add_bump(p, n, rng, radius=defect_radius, height=sign * defect_height, centre_index=ci)
            direction = n[ci] + 0.6 * rng.normal(size=3)  # a view that sees the defect
        if partial:
            vis = partial_view(p, rng, direction=direction)
            p, mask = p[vis], mask[vis]
        p = p + rng.normal(scale=noise, size=p.shape)
        tests.append(TestSample(f"{i}_{kind}", pose(p), mask, kind))
    return ClassData(name or f"toy{seed}", tuple(templates), tuple(tests))


def toy_benchmark(n_classes: int, *, seed: int = 0, **kwargs) -> list[ClassData]:
    """``n_classes`` toy classes (see :func:`toy_class`)."""
    return [toy_class(seed + 101 * c, **kwargs) for c in range(n_classes)]


# ---------------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class RegisteredClass:
    """A class with every cloud registered onto its first template (the reference).

    Attributes:
        data: the original :class:`ClassData`.
        templates: registered templates (the reference first, unchanged).
        template_ok: ``(G,)`` registration passed its checks.
        test_transforms: ``(T, 4, 4)`` test scan -> reference frame.
        test_ok: ``(T,)``.
        test_chamfer: ``(T,)`` one-sided Chamfer distances [m].
    """

    data: ClassData
    templates: tuple
    template_ok: np.ndarray
    test_transforms: np.ndarray
    test_ok: np.ndarray
    test_chamfer: np.ndarray

    def test_points(self, i: int) -> np.ndarray:
        from ..geometry import transform_points

        return transform_points(self.test_transforms[i], self.data.tests[i].points)


def _cloud_hash(arrays) -> str:
    import hashlib

    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()[:20]


def register_class(cls: ClassData, *, attempts: int = 3, seed: int = 0, cache_dir: str | None = None,
                   progress: bool = False, use_poses: bool = False) -> RegisteredClass:
    """Register templates and test scans of ``cls`` onto ``cls.templates[0]`` (cached in ``cache_dir``).

    ``use_poses``: use the benchmark's ground-truth poses instead of registering (training data:
    exact correspondences, and no registration time); raises ``ValueError`` when they are missing.
    """
    from tqdm.auto import tqdm

    from ..cachekey import source_fingerprint
    from ..geometry import transform_points
    from ..registration.template_align import align_to_reference as register

    if use_poses:
        if cls.template_poses is None or any(t.pose is None for t in cls.tests):
            raise ValueError(f"class {cls.name} has no ground-truth poses (no manifest.json?)")
        ref = cls.template_poses[0]
        tT = np.stack([ref @ np.linalg.inv(P) for P in cls.template_poses])
        Ts = np.stack([ref @ np.linalg.inv(t.pose) for t in cls.tests])
        templates = tuple(transform_points(T, t) for T, t in zip(tT, cls.templates))
        return RegisteredClass(cls, templates, np.ones(len(tT), dtype=bool), Ts, np.ones(len(Ts), dtype=bool),
                               np.zeros(len(Ts)))

    ref = cls.templates[0]
    ref_key = _cloud_hash([ref])
    code = source_fingerprint("cosarad_ros.core.registration", "cosarad_ros.core.geometry")[:12]

    def one(points):
        """(transform, ok, chamfer) of one cloud, cached per (cloud, reference) pair."""
        path = None
        if cache_dir:
            path = os.path.join(cache_dir,
                                f"{ref_key}-{_cloud_hash([points])}-a{attempts}-s{seed}-c{code}.npz")
            if os.path.isfile(path):
                with np.load(path, allow_pickle=False) as z:
                    return z["T"], bool(z["ok"]), float(z["chamfer"])
        r = register(points, ref, attempts=attempts, seed=seed)
        out = (np.asarray(r.transform), bool(r.ok), float(r.chamfer))
        if path:
            os.makedirs(cache_dir, exist_ok=True)
            np.savez(path + ".tmp.npz", T=out[0], ok=out[1], chamfer=out[2])
            os.replace(path + ".tmp.npz", path)
        return out

    tT, tok = [np.eye(4)], [True]
    for t in cls.templates[1:]:
        T, ok_, _ = one(t)
        tT.append(T)
        tok.append(ok_)
    Ts, ok, ch = [], [], []
    for s in tqdm(cls.tests, desc=f"register {cls.name}", disable=not progress, leave=False):
        T, ok_, c = one(s.points)
        Ts.append(T)
        ok.append(ok_)
        ch.append(c)
    tT, tok, Ts, ok, ch = (np.asarray(tT), np.asarray(tok), np.asarray(Ts).reshape(-1, 4, 4), np.asarray(ok),
                           np.asarray(ch))
    templates = tuple(transform_points(T, t) for T, t in zip(tT, cls.templates))
    return RegisteredClass(cls, templates, tok, Ts, ok, ch)
