"""Readers and writers for the Real3D-AD and Anomaly-ShapeNet folder layouts.

Real3D-AD (Liu et al., "Real3D-AD: A Dataset of Point Cloud Anomaly Detection", NeurIPS 2023
Datasets and Benchmarks)::

    <root>/<class>/train/<i>_template.pcd        full 360-degree prototypes (any *template* or
                                                 *prototype* name; else every .pcd in train/)
    <root>/<class>/test/<i>_good.pcd             partial scans; defect type in the name:
    <root>/<class>/test/<i>_bulge.pcd            <i>_<type>[_cut|_copy].pcd
    <root>/<class>/gt/<name>.txt                 "x y z label" per line, space-separated

Coordinates are millimetres (``units="mm"``, ``scale_to_metres=0.001``).

Anomaly-ShapeNet v2 (Li et al., "Towards Scalable 3D Anomaly Detection and Localization: A
Benchmark via 3D Anomaly Synthesis and A Self-Supervised Learning Network", CVPR 2024)::

    <root>/<class>/train/<class>_template<i>.pcd
    <root>/<class>/test/<class>_positive<i>.pcd  good
    <root>/<class>/test/<class>_<type><i>.pcd    defective (bulge, concavity, crack, hole, ...)
    <root>/<class>/GT/<name>.txt                 "x,y,z,label" per line (also gt/)

Coordinates are in the dataset's normalised units (``units="normalised"``); the scale to metres
is unknown (``None``) unless a ``manifest.json`` written by :mod:`cosarad_ros.core.data.synth`
records it per class.

Ground truth transfer: the GT points need not coincide with the .pcd points. Each scan point
takes the label of its nearest GT point when that point lies within ``gt_radius`` (default:
2 x the median nearest-neighbour spacing of the GT cloud); the number of scan points that found
a GT point is reported as ``gt_matched``. Good samples without a GT file get an all-False mask.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from ..geometry import as_points
from ..io import read_labelled_points, read_points, write_labelled_points, write_points

__all__ = [
    "LAYOUTS",
    "LAYOUT_UNITS",
    "TestSample",
    "BenchmarkClass",
    "Benchmark",
    "SampleFile",
    "ClassFiles",
    "BenchmarkIndex",
    "detect_layout",
    "index_benchmark",
    "read_benchmark",
    "transfer_labels",
    "sample_stem",
    "template_stem",
    "write_template",
    "write_test_sample",
    "AS_TYPE_NAMES",
]

LAYOUTS = ("real3d", "anomaly-shapenet")
# units and scale to metres of each layout
LAYOUT_UNITS = {"real3d": ("mm", 1e-3), "anomaly-shapenet": ("normalised", None)}
# our canonical defect names -> Anomaly-ShapeNet file names
AS_TYPE_NAMES = {"sink": "concavity", "bend": "bending"}
_GOOD = {"real3d": "good", "anomaly-shapenet": "positive"}


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestSample:
    """One test scan.

    Attributes:
        name: file stem, e.g. ``"12_bulge"``.
        points: ``(N, 3)`` float64 in the layout's units.
        mask: ``(N,)`` bool point labels (True = anomalous).
        is_anomalous: object label.
        defect_type: ``"good"`` or the type from the file name (the dataset's own word, e.g.
            ``"concavity"`` in Anomaly-ShapeNet).
        path: the point cloud file.
        gt_path: the ground-truth file or ``None``.
        gt_matched: scan points that found a GT point within the radius.
        gt_total: points in the GT file (0 when there is none).
    """

    name: str
    points: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    is_anomalous: bool
    defect_type: str
    path: str = ""
    gt_path: str | None = None
    gt_matched: int = 0
    gt_total: int = 0

    @property
    def n_anomalous(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class BenchmarkClass:
    """A class (part type): templates (good, full scans) and test samples."""

    name: str
    templates: tuple
    tests: tuple
    template_paths: tuple = ()
    scale_to_metres: float | None = None

    @property
    def n_good(self) -> int:
        return sum(1 for t in self.tests if not t.is_anomalous)

    @property
    def n_bad(self) -> int:
        return sum(1 for t in self.tests if t.is_anomalous)


@dataclass(frozen=True)
class SampleFile:
    """Where a test sample lives (nothing loaded)."""

    name: str
    path: Path
    gt_path: Path | None
    defect_type: str
    is_anomalous: bool


@dataclass(frozen=True)
class ClassFiles:
    name: str
    templates: tuple
    tests: tuple


@dataclass(frozen=True)
class Benchmark:
    """A loaded benchmark: ``classes`` maps class name -> :class:`BenchmarkClass`."""

    root: str
    layout: str
    units: str
    scale_to_metres: float | None
    classes: Mapping[str, BenchmarkClass]

    def __getitem__(self, name: str) -> BenchmarkClass:
        return self.classes[name]

    def __iter__(self) -> Iterator[BenchmarkClass]:
        return iter(self.classes.values())

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> tuple:
        return tuple(self.classes)


@dataclass(frozen=True)
class BenchmarkIndex:
    """The files of a benchmark folder, found without loading any point cloud.

    Load one class at a time with :meth:`load_class` (a full benchmark does not fit in memory
    comfortably), or everything with :meth:`load`.
    """

    root: str
    layout: str
    units: str
    scale_to_metres: float | None
    classes: Mapping[str, ClassFiles]
    class_scale_to_metres: Mapping[str, float] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple:
        return tuple(self.classes)

    def load_class(self, name: str, *, gt_radius: float | None = None, require_gt: bool = True,
                   load_tests: bool = True) -> BenchmarkClass:
        """Read the templates and test samples (with transferred GT masks) of one class.

        Args:
            name: class name.
            gt_radius: GT transfer radius in file units (default: 2 x median GT spacing).
            require_gt: a defective sample without a GT file is an error (else: empty mask).
            load_tests: skip the test samples (templates only) when False.

        Raises:
            KeyError: unknown class. ValueError / FileNotFoundError: unreadable files.
        """
        if name not in self.classes:
            raise KeyError(f"no class {name!r} in {self.root} (classes: {list(self.classes)})")
        cf = self.classes[name]
        templates = tuple(read_points(p) for p in cf.templates)
        tests = []
        if load_tests:
            for sf in cf.tests:
                pts = read_points(sf.path)
                if sf.gt_path is not None:
                    gp, gl = read_labelled_points(sf.gt_path)  # spaces or commas
                    mask, matched = transfer_labels(pts, gp, gl, radius=gt_radius)
                    total = len(gp)
                elif sf.is_anomalous and require_gt:
                    raise ValueError(f"{sf.path}: defective sample without a ground-truth file")
                else:
                    mask, matched, total = np.zeros(len(pts), dtype=bool), 0, 0
                tests.append(TestSample(name=sf.name, points=pts, mask=mask, is_anomalous=sf.is_anomalous,
                                        defect_type=sf.defect_type, path=str(sf.path),
                                        gt_path=None if sf.gt_path is None else str(sf.gt_path),
                                        gt_matched=int(matched), gt_total=int(total)))
        scale = self.class_scale_to_metres.get(name, self.scale_to_metres)
        return BenchmarkClass(name=name, templates=templates, tests=tuple(tests),
                              template_paths=tuple(str(p) for p in cf.templates), scale_to_metres=scale)

    def load(self, classes: Sequence[str] | None = None, **kwargs) -> Benchmark:
        names = list(self.classes) if classes is None else list(classes)
        return Benchmark(root=self.root, layout=self.layout, units=self.units,
                         scale_to_metres=self.scale_to_metres,
                         classes={n: self.load_class(n, **kwargs) for n in names})


# --------------------------------------------------------------------------------------------
# GT transfer
# --------------------------------------------------------------------------------------------
def transfer_labels(points, gt_points, gt_labels, *, radius: float | None = None):
    """Nearest-neighbour label transfer from a GT cloud to scan points.

    Args:
        points: ``(N, 3)`` scan points.
        gt_points: ``(M, 3)`` GT points (same frame and units).
        gt_labels: ``(M,)`` bool/int labels.
        radius: a scan point takes the label of its nearest GT point only when that point is
            within ``radius``; default 2 x the median nearest-neighbour spacing of ``gt_points``
            (exact copies match at distance 0 whatever the radius).

    Returns:
        ``(mask (N,) bool, matched int)``: labels, and how many scan points found a GT point.
    """
    from scipy.spatial import cKDTree

    pts = as_points(points, name="points")
    gp = as_points(gt_points, name="gt_points")
    gl = np.asarray(gt_labels).reshape(-1)
    if gl.shape[0] != gp.shape[0]:
        raise ValueError(f"gt_labels has {gl.shape[0]} entries, gt_points has {gp.shape[0]}")
    tree = cKDTree(gp)
    if radius is None:
        if len(gp) > 1:
            sub = gp[np.linspace(0, len(gp) - 1, min(len(gp), 2000)).astype(int)]
            d, _ = tree.query(sub, k=2)
            radius = 2.0 * float(np.median(d[:, 1]))
        else:
            radius = 0.0
        radius = max(radius, 1e-12)
    elif not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    d, j = tree.query(pts, k=1, distance_upper_bound=radius if radius > 0 else 1e-12)
    ok = np.isfinite(d)
    mask = np.zeros(len(pts), dtype=bool)
    mask[ok] = gl[j[ok]] != 0
    return mask, int(ok.sum())


# --------------------------------------------------------------------------------------------
# layout detection and indexing
# --------------------------------------------------------------------------------------------
_R3D_TEST = re.compile(r"^(?:\d+_)?(?P<type>.+?)(?:_(?:cut|copy))*$")


def _parse_real3d(stem: str) -> tuple[str, bool]:
    m = _R3D_TEST.match(stem)
    t = m.group("type") if m else stem
    t = re.sub(r"\d+$", "", t).strip("_") or "unknown"
    return t, t not in ("good", "normal", "ok")


def _parse_as(stem: str, cls: str) -> tuple[str, bool]:
    s = stem[len(cls) + 1:] if stem.startswith(cls + "_") else stem
    s = re.sub(r"^\d+_", "", s)
    t = re.sub(r"\d+$", "", s).strip("_") or "unknown"
    return t, t not in ("positive", "good")


def _manifest(root: Path) -> dict | None:
    p = root / "manifest.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and (d / "train").is_dir() and (d / "test").is_dir())


def detect_layout(root) -> str:
    """Guess the layout of a benchmark folder: ``"real3d"`` or ``"anomaly-shapenet"``.

    Uses ``manifest.json`` when present; otherwise file names (``*_template<i>.pcd`` /
    ``*positive*`` / a ``GT`` folder -> Anomaly-ShapeNet; ``<i>_good.pcd`` / ``gt`` -> Real3D-AD).

    Raises:
        FileNotFoundError: no such folder. ValueError: no class folders or undecidable.
    """
    root = Path(os.fspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"no such benchmark folder: {root}")
    man = _manifest(root)
    if man and man.get("layout") in LAYOUTS:
        return man["layout"]
    dirs = _class_dirs(root)
    if not dirs:
        raise ValueError(f"{root}: no class folders with train/ and test/ inside")
    votes = {"real3d": 0, "anomaly-shapenet": 0}
    for d in dirs:
        names = [p.stem for p in (d / "test").glob("*.pcd")] + [p.stem for p in (d / "train").glob("*.pcd")]
        if (d / "GT").is_dir() and not (d / "gt").is_dir():
            votes["anomaly-shapenet"] += 2
        if any("positive" in n for n in names) or any(re.search(r"template\d+$", n) for n in names):
            votes["anomaly-shapenet"] += 1
        if any(re.match(r"^\d+_good", n) for n in names) or any(re.match(r"^\d+_(template|prototype)", n)
                                                               for n in names):
            votes["real3d"] += 1
    if votes["real3d"] == votes["anomaly-shapenet"]:
        raise ValueError(f"{root}: cannot tell the layout; pass layout='real3d' or 'anomaly-shapenet'")
    return max(votes, key=votes.get)


def index_benchmark(root, layout: str | None = None) -> BenchmarkIndex:
    """Find the classes, templates, test samples and GT files of a benchmark folder.

    Args:
        root: the folder holding one sub-folder per class.
        layout: ``"real3d"``, ``"anomaly-shapenet"`` or ``None`` (detect).

    Raises:
        FileNotFoundError: missing folder. ValueError: unknown layout, no classes, a class
        without templates or test samples.
    """
    root = Path(os.fspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"no such benchmark folder: {root}")
    layout = layout or detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
    units, scale = LAYOUT_UNITS[layout]
    man = _manifest(root) or {}
    class_scale = {}
    for cname, entry in (man.get("classes") or {}).items():
        if isinstance(entry, dict) and entry.get("scale_to_metres"):
            class_scale[cname] = float(entry["scale_to_metres"])
    classes = {}
    dirs = _class_dirs(root)
    if not dirs:
        raise ValueError(f"{root}: no class folders with train/ and test/ inside")
    for d in dirs:
        train = sorted((d / "train").glob("*.pcd"), key=_natural)
        tmpl = [p for p in train if "template" in p.stem or "prototype" in p.stem] or train
        if not tmpl:
            raise ValueError(f"{d}/train: no template .pcd files")
        gt_dir = next((d / g for g in (("gt", "GT") if layout == "real3d" else ("GT", "gt"))
                       if (d / g).is_dir()), None)
        tests = []
        for p in sorted((d / "test").glob("*.pcd"), key=lambda q: _sample_key(q, layout)):
            t, bad = _parse_real3d(p.stem) if layout == "real3d" else _parse_as(p.stem, d.name)
            gt = gt_dir / f"{p.stem}.txt" if gt_dir is not None else None
            tests.append(SampleFile(name=p.stem, path=p, gt_path=gt if gt is not None and gt.is_file() else None,
                                    defect_type=t if bad else "good", is_anomalous=bad))
        if not tests:
            raise ValueError(f"{d}/test: no test .pcd files")
        classes[d.name] = ClassFiles(name=d.name, templates=tuple(tmpl), tests=tuple(tests))
    return BenchmarkIndex(root=str(root), layout=layout, units=units, scale_to_metres=scale,
                          classes=classes, class_scale_to_metres=class_scale)


def _sample_key(p: Path, layout: str):
    """Order test samples by their index (leading number in Real3D-AD, trailing in
    Anomaly-ShapeNet), then by name.
    """
    m = re.match(r"^(\d+)", p.stem) if layout == "real3d" else re.search(r"(\d+)$", p.stem)
    return (int(m.group(1)) if m else 1 << 62, p.stem)


def _natural(p: Path):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.stem)]


def read_benchmark(root, layout: str | None = None, classes: Sequence[str] | None = None, *,
                   gt_radius: float | None = None, require_gt: bool = True) -> Benchmark:
    """Index and load a benchmark (all classes, or the named ones). See :class:`BenchmarkIndex`."""
    return index_benchmark(root, layout).load(classes, gt_radius=gt_radius, require_gt=require_gt)


# --------------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------------
def _check_layout(layout):
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")


def _check_name(name: str, what: str):
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"bad {what} {name!r}")


def template_stem(layout: str, class_name: str, index: int) -> str:
    """File stem of template ``index``: ``<i>_template`` or ``<class>_template<i>``."""
    _check_layout(layout)
    return f"{index}_template" if layout == "real3d" else f"{class_name}_template{index}"


def sample_stem(layout: str, class_name: str, index: int, defect_type: str) -> str:
    """File stem of a test sample: ``<i>_<type>`` (Real3D-AD, ``good`` for good samples) or
    ``<class>_<type><i>`` (Anomaly-ShapeNet, ``positive`` for good samples; ``sink`` is written
    ``concavity`` and ``bend`` ``bending``).
    """
    _check_layout(layout)
    _check_name(defect_type, "defect type")
    if layout == "real3d":
        t = "good" if defect_type in ("good", "positive") else defect_type
        return f"{index}_{t}"
    t = "positive" if defect_type in ("good", "positive") else AS_TYPE_NAMES.get(defect_type, defect_type)
    return f"{class_name}_{t}{index}"


def write_template(root, layout: str, class_name: str, index: int, points) -> Path:
    """Write template ``index`` of a class (binary float32 PCD). ``points`` in file units."""
    _check_name(class_name, "class name")
    path = Path(os.fspath(root)) / class_name / "train" / f"{template_stem(layout, class_name, index)}.pcd"
    return write_points(path, points, binary=True)


def write_test_sample(root, layout: str, class_name: str, index: int, defect_type: str, points,
                      mask) -> tuple[Path, Path]:
    """Write a test scan and its GT file (every sample, good ones with all-zero labels).

    Real3D-AD: ``test/<i>_<type>.pcd`` + ``gt/<i>_<type>.txt`` (space-separated);
    Anomaly-ShapeNet: ``test/<class>_<type><i>.pcd`` + ``GT/<same>.txt`` (comma-separated).
    ``points`` in file units; ``mask (N,)`` bool.

    Returns:
        ``(pcd path, gt path)``.
    """
    _check_name(class_name, "class name")
    pts = as_points(points, name="points")
    mask = np.asarray(mask).reshape(-1)
    if mask.shape[0] != pts.shape[0]:
        raise ValueError(f"mask has {mask.shape[0]} entries, points has {pts.shape[0]}")
    stem = sample_stem(layout, class_name, index, defect_type)
    base = Path(os.fspath(root)) / class_name
    pcd = write_points(base / "test" / f"{stem}.pcd", pts, binary=True)
    gt_dir = "gt" if layout == "real3d" else "GT"
    gt = write_labelled_points(base / gt_dir / f"{stem}.txt", pts, mask,
                               delimiter=" " if layout == "real3d" else ",")
    return pcd, gt
