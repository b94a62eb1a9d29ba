"""Synthetic inspection benchmark generator (``cosarad synth``).

For each class (a part type: procedural CAD parts and real meshes from installed packages):

* ``n_templates`` good full-surface scans (:func:`~cosarad_ros.core.data.scans.full_scan`);
* ``n_tests`` test scans, ``anomalous_fraction`` of them defective. Defect types cycle through
  ``defect_types`` (every type present once a class has at least as many defective samples).
  Each defective sample gets its own defective mesh
  (:func:`~cosarad_ros.core.data.defects.apply_defect_to_mesh`) and is scanned; its points are
  labelled by the defect record from their noise-free positions, then noise is added.
  Real3D-AD layout: partial single-view scans (:func:`~cosarad_ros.core.data.scans.partial_scan`),
  the view drawn at random until it sees at least ``min_defect_points`` anomalous points.
  Anomaly-ShapeNet layout: full-surface scans.
* every scan gets an independent random rigid pose (``random_pose``), so templates and tests
  must be registered.

Units: the Real3D-AD layout is written in millimetres; the Anomaly-ShapeNet layout in
normalised units where the class's part has a longest bounding-box side of 1
(``scale_to_metres`` = that side in metres, recorded per class in ``manifest.json``).

Determinism: sample ``j`` of class ``c`` draws from ``numpy.random.default_rng([seed, c, kind,
j])`` and nothing else, so the same seed writes byte-identical files, in any order and with any
number of worker processes.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..geometry import transform_points
from .datasets import LAYOUT_UNITS, LAYOUTS, sample_stem, template_stem, write_template, write_test_sample
from .defects import ALL_DEFECT_TYPES, CAD_DEFECT_TYPES, DEFECT_TYPES, apply_defect_to_mesh
from .package_meshes import DEFAULT_PACKAGE_CLASSES, available_package_meshes, load_package_mesh
from .parts import PART_FAMILIES, Part, random_part
from .scans import full_scan, partial_scan, random_pose

__all__ = ["SynthConfig", "SynthResult", "synth_parts", "generate_benchmark"]


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the generated benchmark (maps 1:1 onto ``cosarad synth`` options).

    Attributes:
        layout: ``"real3d"`` or ``"anomaly-shapenet"``.
        n_classes: number of classes (part types).
        n_templates: good full scans per class.
        n_tests: test scans per class.
        anomalous_fraction: share of defective test scans.
        template_points: points per template.
        test_points: points per test scan (partial scans may return fewer).
        defect_types: types to cycle through; CAD types (``hole_position``, ``hole_diameter``)
            apply to procedural classes only and are replaced by the next other type elsewhere.
        procedural_fraction: share of procedural classes (the rest: package meshes).
        package_size: (min, max) longest side of package meshes, metres.
        noise: scan noise standard deviation, metres.
        density_variation: strength of the smooth density field in ``[0, 1)``.
        pose: give every scan a random rigid pose.
        max_translation: translation range of the random pose, metres.
        label_tol: GT tolerance (see :meth:`DefectRecord.label_points`), metres.
        min_shift: displacement that counts as anomalous, metres.
        min_defect_points: a defective scan must show at least this many anomalous points
            (default: ``max(5, test_points // 1000)``).
        seed: master seed.
        gallery: defective samples drawn in ``gallery.png`` (0: no gallery).
        workers: worker processes (1: in-process).
    """

    layout: str = "real3d"
    n_classes: int = 12
    n_templates: int = 4
    n_tests: int = 34
    anomalous_fraction: float = 0.5
    template_points: int = 40000
    test_points: int = 20000
    defect_types: tuple = DEFECT_TYPES
    procedural_fraction: float = 0.5
    package_size: tuple = (0.06, 0.10)
    noise: float = 3e-5
    density_variation: float = 0.4
    pose: bool = True
    max_translation: float = 0.05
    label_tol: float = 3e-4
    min_shift: float = 5e-5
    min_defect_points: int | None = None
    seed: int = 0
    gallery: int = 8
    workers: int = 1

    @property
    def min_visible(self) -> int:
        """Anomalous points a defective scan must show."""
        if self.min_defect_points is not None:
            return int(self.min_defect_points)
        return max(5, int(self.test_points) // 1000)

    def validate(self) -> "SynthConfig":
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        for name in ("n_classes", "n_templates", "n_tests", "template_points", "test_points", "workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.anomalous_fraction <= 1.0:
            raise ValueError(f"anomalous_fraction must be in [0, 1], got {self.anomalous_fraction}")
        if not 0.0 <= self.procedural_fraction <= 1.0:
            raise ValueError(f"procedural_fraction must be in [0, 1], got {self.procedural_fraction}")
        if not self.defect_types:
            raise ValueError("defect_types is empty")
        for t in self.defect_types:
            if t not in ALL_DEFECT_TYPES:
                raise ValueError(f"unknown defect type {t!r}; choose from {list(ALL_DEFECT_TYPES)}")
        if all(t in CAD_DEFECT_TYPES for t in self.defect_types) and self.procedural_fraction < 1:
            raise ValueError("package-mesh classes need at least one non-CAD defect type")
        if self.noise < 0 or not 0 <= self.density_variation < 1:
            raise ValueError("noise must be >= 0 and density_variation in [0, 1)")
        lo, hi = self.package_size
        if not 0 < lo <= hi:
            raise ValueError(f"package_size must be 0 < min <= max, got {self.package_size}")
        return self


@dataclass(frozen=True)
class SynthResult:
    out: str
    manifest: str
    gallery: str | None
    n_classes: int
    n_templates: int
    n_tests: int
    n_defective: int
    seconds: float
    defect_counts: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# classes
# --------------------------------------------------------------------------------------------
def synth_parts(config: SynthConfig) -> list[Part]:
    """The part of every class: procedural parts cycling through the families (random
    dimensions) and package meshes in :data:`DEFAULT_PACKAGE_CLASSES` order (those installed).
    """
    n = int(config.n_classes)
    n_proc = int(round(n * config.procedural_fraction))
    avail = set(available_package_meshes())
    pkg_names = [p for p in DEFAULT_PACKAGE_CLASSES if p in avail]
    n_pkg = n - n_proc
    if n_pkg > len(pkg_names):  # not enough package meshes installed: fill with procedural parts
        n_proc += n_pkg - len(pkg_names)
        n_pkg = len(pkg_names)
    fams = sorted(PART_FAMILIES)
    parts: list[Part] = []
    for i in range(n_proc):
        fam = fams[i % len(fams)]
        rng = np.random.default_rng([config.seed, 1_000_000 + i])
        parts.append(random_part(rng, fam, name=f"{fam}_{i // len(fams):02d}"))
    for i in range(n_pkg):
        rng = np.random.default_rng([config.seed, 2_000_000 + i])
        size = round(float(rng.uniform(*config.package_size)), 4)
        parts.append(load_package_mesh(pkg_names[i], size=size))
    # interleave so small --classes still mixes both kinds
    order = []
    proc, pkg = parts[:n_proc], parts[n_proc:]
    for k in range(max(len(proc), len(pkg))):
        if k < len(proc):
            order.append(proc[k])
        if k < len(pkg):
            order.append(pkg[k])
    return order


def _file_scale(config: SynthConfig, part: Part) -> float:
    """Scale from metres to file units."""
    if config.layout == "real3d":
        return 1.0 / LAYOUT_UNITS["real3d"][1]
    return 1.0 / float(np.max(part.extents))


def _test_plan(config: SynthConfig, part: Part, class_index: int) -> list[str]:
    """Defect type (or "good") of every test index."""
    n_bad = int(round(config.n_tests * config.anomalous_fraction))
    types = [t for t in config.defect_types if part.holes or t not in CAD_DEFECT_TYPES]
    if not part.is_procedural:
        types = [t for t in types if t not in CAD_DEFECT_TYPES]
    rng = np.random.default_rng([config.seed, class_index, 7])
    # start the cycle at a class-dependent type so that every type appears across classes even
    # when a class has fewer defective samples than types
    kinds = [types[(k + class_index) % len(types)] for k in range(n_bad)]
    plan = kinds + ["good"] * (config.n_tests - n_bad)
    perm = rng.permutation(len(plan))
    return [plan[i] for i in perm]


def _facing_view(rng, normal, min_cos: float = 0.3):
    """A random view direction (as :func:`random_view_direction`) within about 73 degrees of
    ``normal``; random when none is found in 200 draws.
    """
    from .scans import random_view_direction

    d = random_view_direction(rng)
    for _ in range(200):
        if d @ normal >= min_cos:
            return d
        d = random_view_direction(rng)
    return d


def _pose(config, rng):
    return random_pose(rng, max_translation=config.max_translation) if config.pose else np.eye(4)


def _round_list(a, nd=6):
    return [round(float(v), nd) for v in np.asarray(a).ravel()]


def _gen_class(args) -> dict:
    """Generate one class; returns its manifest entry. Runs in a worker process or inline."""
    out, config, ci, part, progress_q = args
    out = Path(out)
    scale = _file_scale(config, part)
    entry = {"part": part.metadata(), "scale_to_metres": round(1.0 / scale, 9), "templates": [], "tests": []}
    for ti in range(config.n_templates):
        rng = np.random.default_rng([config.seed, ci, 0, ti])
        scan = full_scan(part.mesh, config.template_points, rng, noise=config.noise,
                         density_variation=config.density_variation)
        T = _pose(config, rng)
        pts = transform_points(T, scan.points) * scale
        path = write_template(out, config.layout, part.name, ti, pts)
        entry["templates"].append({"file": str(path.relative_to(out)), "n_points": int(len(pts)),
                                   "pose": _round_list(T, 9)})
        if progress_q is not None:
            progress_q(1)
    for j, kind in enumerate(_test_plan(config, part, ci)):
        rng = np.random.default_rng([config.seed, ci, 1, j])
        rec, mesh = None, part.mesh
        scan = None
        for _attempt in range(4):
            if kind != "good":
                mesh, rec = apply_defect_to_mesh(part, kind, rng, min_shift=config.min_shift)
            for _view in range(12 if config.layout == "real3d" else 1):
                if config.layout == "real3d":
                    view = None
                    if rec is not None:  # a random view that faces the defect
                        view = _facing_view(rng, np.asarray(rec.normal))
                    try:
                        scan = partial_scan(mesh, config.test_points, rng, view_direction=view,
                                            noise=config.noise, density_variation=config.density_variation)
                    except ValueError:
                        scan = None
                        continue
                else:
                    scan = full_scan(mesh, config.test_points, rng, noise=config.noise,
                                     density_variation=config.density_variation)
                if rec is None:
                    mask = np.zeros(len(scan.points), dtype=bool)
                    break
                mask = rec.label_points(scan.clean_points, tol=config.label_tol)
                if mask.sum() >= config.min_visible:
                    break
                scan = None
            if scan is not None:
                break
        if scan is None:
            raise ValueError(f"class {part.name}: could not make a scan of a visible {kind} "
                             f"(sample {j}); try more --points")
        T = _pose(config, rng)
        pts = transform_points(T, scan.points) * scale
        pcd, gt = write_test_sample(out, config.layout, part.name, j, kind, pts, mask)
        item = {"file": str(pcd.relative_to(out)), "gt": str(gt.relative_to(out)),
                "defect_type": kind, "is_anomalous": kind != "good", "n_points": int(len(pts)),
                "n_anomalous": int(mask.sum()), "pose": _round_list(T, 9)}
        if scan.sensor_pose is not None:
            item["sensor_pose_part"] = _round_list(scan.sensor_pose, 9)
        if rec is not None:
            item["defect"] = rec.to_dict(transform=T, scale=scale)
            item["defect_part_frame_m"] = rec.to_dict()
        entry["tests"].append(item)
        if progress_q is not None:
            progress_q(1)
    return entry


def _gen_class_worker(args):
    out, config, ci = args
    part = synth_parts(config)[ci]  # rebuilt in the worker: parts hold meshes, cheap to remake
    return ci, _gen_class((out, config, ci, part, None))


def _prepare_output(out: Path) -> None:
    """Create ``out``; when it holds an earlier benchmark of ours, remove that benchmark's files
    (so no stale sample survives); refuse any other non-empty folder.
    """
    import shutil

    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not any(out.iterdir()):
        return
    man_path = out / "manifest.json"
    try:
        old = json.loads(man_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or not str(old.get("format", "")).startswith("cosarad-synth"):
        raise ValueError(f"{out} is not empty and holds no cosarad synth benchmark; choose an empty folder")
    for name in old.get("classes", {}):
        d = out / name
        if d.is_dir() and d.resolve().parent == out.resolve():
            shutil.rmtree(d)
    for f in ("manifest.json", "gallery.png", "classes.png"):
        (out / f).unlink(missing_ok=True)


def generate_benchmark(out, config: SynthConfig | None = None, *, progress: bool = True) -> SynthResult:
    """Write a benchmark folder.

    Args:
        out: output folder: empty, new, or holding an earlier benchmark written by this
            function (whose files are removed first).
        config: :class:`SynthConfig` (defaults: 12 classes, Real3D-AD layout).
        progress: show a tqdm progress bar.

    Returns:
        :class:`SynthResult` (paths, counts, wall time).

    Files: ``<class>/...`` in the chosen layout, ``manifest.json`` (every sample: part, defect
    type, size and location in file frame and units and in the part frame in metres, pose),
    ``gallery.png`` (defective samples, anomalous points red) and ``classes.png`` (one
    template per class).
    """
    from tqdm import tqdm

    config = (config or SynthConfig()).validate()
    t0 = time.perf_counter()
    out = Path(os.fspath(out))
    _prepare_output(out)
    parts = synth_parts(config)
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names: {names}")
    total = len(parts) * (config.n_templates + config.n_tests)
    bar = tqdm(total=total, desc=f"synth {config.layout}", unit="scan", disable=not progress)
    entries: dict[int, dict] = {}
    try:
        if config.workers > 1 and len(parts) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            jobs = [(str(out), config, ci) for ci in range(len(parts))]
            # fresh interpreters, not forks: a fork copies a process whose other threads (Open3D's
            # and torch's pools, ROS executors of a caller) may hold locks the child then waits on,
            # or native state the child crashes in
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=int(config.workers), mp_context=ctx) as ex:
                futs = [ex.submit(_gen_class_worker, j) for j in jobs]
                for f in as_completed(futs):
                    ci, entry = f.result()
                    entries[ci] = entry
                    bar.update(config.n_templates + config.n_tests)
        else:
            for ci, part in enumerate(parts):
                bar.set_postfix_str(part.name)
                entries[ci] = _gen_class((str(out), config, ci, part, bar.update))
    finally:
        bar.close()
    units, _ = LAYOUT_UNITS[config.layout]
    cfg = asdict(config)
    cfg.pop("workers")
    cfg["defect_types"] = list(config.defect_types)
    cfg["package_size"] = list(config.package_size)
    manifest = {
        "format": "cosarad-synth/1",
        "layout": config.layout,
        "units": units if config.layout == "real3d" else "normalised (part longest side = 1)",
        "scale_to_metres": 1e-3 if config.layout == "real3d" else None,
        "pose_convention": "file_points = scale * (pose[:3,:3] @ part_points_m + pose[:3,3]); pose in "
                           "metres, scale = 1 / scale_to_metres of the class",
        "config": cfg,
        "classes": {parts[ci].name: entries[ci] for ci in range(len(parts))},
    }
    man_path = out / "manifest.json"
    man_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    counts: dict[str, int] = {}
    for e in manifest["classes"].values():
        for t in e["tests"]:
            counts[t["defect_type"]] = counts.get(t["defect_type"], 0) + 1
    gallery = None
    if config.gallery > 0:
        gallery = str(write_gallery(out, manifest, n=config.gallery))
    n_tests = sum(len(e["tests"]) for e in manifest["classes"].values())
    return SynthResult(out=str(out), manifest=str(man_path), gallery=gallery, n_classes=len(parts),
                       n_templates=len(parts) * config.n_templates, n_tests=n_tests,
                       n_defective=n_tests - counts.get("good", 0), seconds=time.perf_counter() - t0,
                       defect_counts=counts)


def write_gallery(out, manifest: dict, *, n: int = 8) -> Path:
    """``gallery.png``: up to ``n`` defective samples, one per defect type first, read back from
    the written files; and ``classes.png``: the first template of every class.
    """
    from ..io import read_labelled_points, read_points
    from .gallery import plot_clouds

    out = Path(os.fspath(out))
    classes = list(manifest["classes"])
    by_type: dict[str, list] = {}
    for c in classes:
        for t in manifest["classes"][c]["tests"]:
            if t["is_anomalous"]:
                by_type.setdefault(t["defect_type"], []).append((c, t))
    # one sample per type first, each from a different class where possible
    chosen = []
    for k, kind in enumerate(sorted(by_type)):
        cands = by_type[kind]
        want = classes[k % len(classes)]
        chosen.append(next((ct for ct in cands if ct[0] == want), cands[0]))
    rest = [ct for kind in sorted(by_type) for ct in by_type[kind] if ct not in chosen]
    chosen += rest[: max(0, n - len(chosen))]
    items = []
    for c, t in chosen[:n]:
        pts, lab = read_labelled_points(out / t["gt"])
        items.append((f"{c}: {t['defect_type']}", pts, lab))
    if items:
        plot_clouds(items, out / "gallery.png")
    tmpl = [(c, read_points(out / e["templates"][0]["file"]), None)
            for c, e in manifest["classes"].items() if e["templates"]]
    if tmpl:
        plot_clouds(tmpl, out / "classes.png", max_points=4000)
    return out / "gallery.png"


def sample_names(config: SynthConfig, part: Part, class_index: int) -> list[str]:
    """File stems of the test samples :func:`generate_benchmark` writes for a class."""
    return [sample_stem(config.layout, part.name, j, k) for j, k in enumerate(_test_plan(config, part, class_index))]


def template_names(config: SynthConfig, part: Part) -> list[str]:
    return [template_stem(config.layout, part.name, i) for i in range(config.n_templates)]


__all__ += ["write_gallery", "sample_names", "template_names"]
