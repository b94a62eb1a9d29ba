"""Synthetic evaluation of the CAD classifier and the rule-based defect checks.

Builds a CAD library from the procedural catalogue of :mod:`cosarad_ros.core.data.parts`
(near-duplicates that differ by 1-2 mm in a box extent or in a feature, hole metadata),
simulates partial scans by ray casting (:func:`cosarad_ros.core.data.scans.partial_scan`, several
views from above so the bottom face is never seen, sensor noise and a random pose) and scores:

* classification: top-1 accuracy and macro F1 over the part types (``unknown`` counts as a
  wrong answer), time per scan;
* defects: per-type F1 of ``scratch``, ``dent`` (the data layer's ``sink``) and ``hole`` (the CAD
  hole deviations ``hole_position`` / ``hole_diameter``) on scans of parts with injected defects
  (:func:`cosarad_ros.core.data.defects.apply_defect_to_mesh`) or none. A finding counts only
  with the right type and near the injected defect; every other finding of a type is a false
  positive of that type; the macro F1 is the mean over the three types.

Used by ``benchmarks/bench_cad.py`` and the tests.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cosarad_ros.core.cad.align import BoxIcpAligner
from cosarad_ros.core.cad.cell_scans import cell_catalogue, cell_scan
from cosarad_ros.core.cad.classifier import UNKNOWN, CadClassifier
from cosarad_ros.core.cad.features import box_features
from cosarad_ros.core.cad.library import CadLibrary
from cosarad_ros.core.cad.rules import detect_defects

__all__ = [
    "write_catalogue",
    "catalogue_library",
    "view_directions",
    "multi_view_scan",
    "cell_scan",
    "cell_catalogue",
    "defective_sample",
    "macro_f1",
    "ClassificationScores",
    "score_labels",
    "benchmark_scans",
    "classify_scans",
    "DefectScores",
    "classification_benchmark",
    "defect_benchmark",
    "compare_rule_sets",
    "DEFECT_CLASSES",
    "FINDING_CLASS",
    "TUNED_RULES",
]

# evaluated defect classes and the data-layer kinds that produce them
DEFECT_CLASSES = {"scratch": ("scratch",), "dent": ("sink",), "hole": ("hole_position", "hole_diameter")}
# finding type -> evaluated class
FINDING_CLASS = {"scratch": "scratch", "dent": "dent", "hole_position": "hole", "hole_diameter": "hole",
                 "missing": "hole", "hole": "hole", "bulge": "bulge"}
# thresholds for the synthetic benchmark's subtle defects (0.1 mm deep scratches, 0.2 mm dents)
TUNED_RULES: dict = {
    "hole": {},
    "dent": {"min_depth": 0.0001, "z_threshold": 4.0},
    "scratch": {"depth_threshold": 0.0001, "curvature_threshold": 0.001},
}


def write_catalogue(folder, parts) -> list[str]:
    """Write data-layer ``Part`` s into a library folder: ``<name>.stl`` in millimetres and
    ``<name>.yaml`` (the part's metadata, ``units: mm``). Returns the labels.
    """
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for part in parts:
        mesh = part.mesh.copy()
        mesh.apply_scale(1000.0)
        mesh.export(folder / f"{part.name}.stl")
        (folder / f"{part.name}.yaml").write_text(yaml.safe_dump(part.metadata(), sort_keys=False))
        labels.append(part.name)
    return labels


def catalogue_library(folder, n_types: int = 36, *, seed: int = 0,
                      near_duplicate_fraction: float = 1 / 3) -> tuple[CadLibrary, list]:
    """A library of ``n_types`` procedural part types in ``folder``; returns ``(library, parts)``."""
    from cosarad_ros.core.data.parts import part_catalogue

    parts = part_catalogue(n_types, seed=seed, near_duplicate_fraction=near_duplicate_fraction)
    write_catalogue(folder, parts)
    return CadLibrary(folder), parts


def view_directions(rng: np.random.Generator, views: int = 4, elevation_deg=(35.0, 60.0)) -> np.ndarray:
    """``(views, 3)`` unit directions from the part towards the sensor, spread in azimuth and
    raised ``elevation_deg`` above the table (a cell scanning a part lying on a fixture).
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    az0 = rng.uniform(0, 2 * np.pi)
    out = []
    for v in range(views):
        az = az0 + 2 * np.pi * v / views + rng.uniform(-0.2, 0.2)
        el = np.deg2rad(rng.uniform(*elevation_deg))
        out.append([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return np.asarray(out)


def multi_view_scan(mesh, rng: np.random.Generator, *, views: int = 4, points_per_view: int = 6000,
                    noise: float = 3e-5, elevation_deg=(35.0, 60.0), pose: bool = True,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused ray-cast partial scans of ``mesh`` from ``views`` directions above it.

    Returns:
        ``(points (N, 3) in the scan frame, clean_points (N, 3) in the part frame,
        T (4, 4) part -> scan frame)``.
    """
    from cosarad_ros.core.data.scans import partial_scan, random_pose

    pts, clean = [], []
    for vd in view_directions(rng, views, elevation_deg):
        s = partial_scan(mesh, points_per_view, rng, view_direction=vd, noise=noise, min_points=10)
        pts.append(s.points)
        clean.append(s.clean_points)
    P, C = np.vstack(pts), np.vstack(clean)
    T = random_pose(rng, max_translation=0.2) if pose else np.eye(4)
    return P @ T[:3, :3].T + T[:3, 3], C, T


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> tuple[float, dict]:
    """Macro-averaged F1 over ``labels`` (predictions outside ``labels``, e.g. ``unknown``,
    are wrong answers); returns ``(macro F1, {label: F1})``.
    """
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    per = {}
    for c in labels:
        tp = int(np.sum((yt == c) & (yp == c)))
        fp = int(np.sum((yt != c) & (yp == c)))
        fn = int(np.sum((yt == c) & (yp != c)))
        per[c] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    return float(np.mean(list(per.values()))) if per else 0.0, per


@dataclass(frozen=True)
class ClassificationScores:
    """Classification benchmark result (see :func:`classification_benchmark`, :func:`score_labels`).

    Attributes:
        accuracy: top-1 accuracy over the scans of library types.
        macro_f1: macro F1 over the library types (``unknown`` counts as a wrong answer).
        unknown_rate: share of scans of library types answered ``unknown``.
        per_class_f1: library type -> F1.
        y_true, y_pred: per scan (a withheld type's own name as truth).
        seconds: time per classification.
        scores: score [%] per scan.
        correct_unknown_rate: share of scans of withheld types answered ``unknown`` (NaN: none).
    """

    accuracy: float
    macro_f1: float
    unknown_rate: float
    per_class_f1: Mapping[str, float]
    y_true: tuple[str, ...]
    y_pred: tuple[str, ...]
    seconds: tuple[float, ...] = field(repr=False)
    scores: tuple[float, ...] = field(repr=False)
    correct_unknown_rate: float = float("nan")

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")

    def as_dict(self) -> dict:
        """JSON-friendly figures (per-scan lists included)."""
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "unknown_rate": self.unknown_rate,
                "correct_unknown_rate": self.correct_unknown_rate, "median_seconds": self.median_seconds,
                "mean_seconds": float(np.mean(self.seconds)) if self.seconds else float("nan"),
                "n": len(self.y_true), "y_true": list(self.y_true), "y_pred": list(self.y_pred),
                "seconds": [float(t) for t in self.seconds]}


def score_labels(y_true: Sequence[str], y_pred: Sequence[str], library_labels: Sequence[str], *,
                 seconds: Sequence[float] = (), scores: Sequence[float] = ()) -> ClassificationScores:
    """Figures of a set of answers: scans whose true type is not in ``library_labels`` are
    withheld types, right when answered ``unknown``.
    """
    lib = set(library_labels)
    yt, yp = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    inlib = np.array([t in lib for t in yt], dtype=bool)
    labels = sorted({t for t in yt[inlib]})
    mf1, per = macro_f1(list(yt[inlib]), list(yp[inlib]), labels)
    acc = float(np.mean(yt[inlib] == yp[inlib])) if inlib.any() else float("nan")
    unk = float(np.mean(yp[inlib] == UNKNOWN)) if inlib.any() else float("nan")
    cu = float(np.mean(yp[~inlib] == UNKNOWN)) if (~inlib).any() else float("nan")
    return ClassificationScores(acc, mf1, unk, per, tuple(str(t) for t in yt), tuple(str(p) for p in yp),
                                tuple(float(t) for t in seconds), tuple(float(v) for v in scores), cu)


def benchmark_scans(parts: Sequence, *, scans_per_type: int = 2, seed: int = 0, kind: str = "multi_view",
                    progress: bool = True, **options) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Simulated scans of every part, ``scans_per_type`` each.

    Args:
        parts: data-layer ``Part`` s.
        scans_per_type: scans per part.
        seed: seed of every scan.
        kind: ``"multi_view"`` (:func:`multi_view_scan`: ray-cast views from above, random pose)
            or ``"cell"`` (:func:`cell_scan`: the cell's sensor, fixture and fusion).
        progress: tqdm bar.
        **options: passed to the scan function (``views``, ``noise`` ...).

    Returns:
        ``[(label, points (N, 3), T (4, 4) scan -> part frame), ...]``.
    """
    from tqdm import tqdm

    if kind not in ("multi_view", "cell"):
        raise ValueError(f"kind must be 'multi_view' or 'cell', got {kind!r}")
    rng = np.random.default_rng(seed)
    out = []
    jobs = [(p, k) for p in parts for k in range(scans_per_type)]
    for part, _ in tqdm(jobs, desc=f"{kind} scans", disable=not progress, leave=False):
        if kind == "cell":
            pts, T = cell_scan(part.mesh, rng, **options)
        else:
            pts, _, T_part = multi_view_scan(part.mesh, rng, **options)
            T = np.linalg.inv(T_part)
        out.append((part.name, pts, T))
    return out


def classify_scans(classifier: CadClassifier, scans: Sequence, *, progress: bool = True) -> ClassificationScores:
    """Classify ``[(label, points, ...), ...]`` (see :func:`benchmark_scans`) and score the answers."""
    from tqdm import tqdm

    y_true, y_pred, secs, scores = [], [], [], []
    for item in tqdm(scans, desc="classify", disable=not progress, leave=False):
        t0 = time.perf_counter()
        res = classifier.classify(item[1])
        secs.append(time.perf_counter() - t0)
        y_true.append(item[0])
        y_pred.append(res.label)
        scores.append(res.score)
    return score_labels(y_true, y_pred, classifier.library.labels, seconds=secs, scores=scores)


def classification_benchmark(library: CadLibrary, parts: Sequence, *, scans_per_type: int = 2,
                             seed: int = 0, views: int = 4, points_per_view: int = 6000, noise: float = 3e-5,
                             classifier: CadClassifier | None = None, progress: bool = True) -> ClassificationScores:
    """Classify ``scans_per_type`` simulated partial scans of every part (see module docstring)."""
    scans = benchmark_scans(parts, scans_per_type=scans_per_type, seed=seed, progress=progress, views=views,
                            points_per_view=points_per_view, noise=noise)
    return classify_scans(classifier or CadClassifier(library, compute_quality=False), scans, progress=progress)


@dataclass(frozen=True)
class DefectScores:
    """Defect benchmark result (see :func:`defect_benchmark`).

    Attributes:
        f1: per evaluated class (``scratch``, ``dent``, ``hole``).
        macro_f1: mean of ``f1``.
        counts: per class ``{"tp", "fp", "fn"}``.
        false_alarm_rate: share of defect-free samples with any finding.
        samples: per sample ``{"kind", "part", "found", "distance", ...}``.
        seconds: time of classification-free inspection (registration + rules) per sample.
    """

    f1: Mapping[str, float]
    macro_f1: float
    counts: Mapping[str, Mapping[str, int]]
    false_alarm_rate: float
    samples: tuple = field(repr=False)
    seconds: tuple[float, ...] = field(repr=False)

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")


def defective_sample(part, kind: str, rng, *, views: int = 4, points_per_view: int = 6000, noise: float = 3e-5,
                     min_visible: int = 30, tries: int = 6, **size):
    """A multi-view scan of ``part`` with one injected defect of ``kind`` (``"none"``: intact)
    that at least ``min_visible`` scan points see.

    Returns:
        ``(points (N, 3) scan frame, clean points (N, 3) part frame, T (4, 4) part -> scan,
        DefectRecord or None)``.

    Raises:
        ValueError: no placement was seen in ``tries`` attempts.
    """
    from cosarad_ros.core.data.defects import apply_defect_to_mesh

    if kind == "none":
        pts, clean, T = multi_view_scan(part.mesh, rng, views=views, points_per_view=points_per_view, noise=noise)
        return pts, clean, T, None
    for _ in range(tries):
        target = part if kind.startswith("hole_") else part.mesh
        mesh, rec = apply_defect_to_mesh(target, kind, rng, **size)
        pts, clean, T = multi_view_scan(mesh, rng, views=views, points_per_view=points_per_view, noise=noise)
        if int(rec.label_points(clean, tol=3e-4).sum()) >= min_visible:
            return pts, clean, T, rec
    raise ValueError(f"could not place a visible {kind} on {part.name} in {tries} tries")


def defect_benchmark(library: CadLibrary, parts: Sequence, *, samples_per_kind: int = 10,
                     kinds: Sequence[str] = ("none", "scratch", "sink", "hole_position", "hole_diameter"),
                     rules: Mapping | None = None, seed: int = 0, views: int = 4, points_per_view: int = 6000,
                     noise: float = 3e-5, min_visible: int = 30, location_tolerance: float = 0.004,
                     progress: bool = True) -> DefectScores:
    """Inject defects into catalogue parts, scan, register onto the part's CAD, run the rules
    (default :data:`TUNED_RULES`). See :func:`compare_rule_sets`.
    """
    return compare_rule_sets(library, parts, {"rules": TUNED_RULES if rules is None else rules},
                             samples_per_kind=samples_per_kind, kinds=kinds, seed=seed, views=views,
                             points_per_view=points_per_view, noise=noise, min_visible=min_visible,
                             location_tolerance=location_tolerance, progress=progress)["rules"]


def compare_rule_sets(library: CadLibrary, parts: Sequence, rule_sets: Mapping[str, Mapping | None], *,
                      samples_per_kind: int = 10,
                      kinds: Sequence[str] = ("none", "scratch", "sink", "hole_position", "hole_diameter"),
                      seed: int = 0, views: int = 4, points_per_view: int = 6000, noise: float = 3e-5,
                      min_visible: int = 30, location_tolerance: float = 0.004,
                      progress: bool = True) -> dict[str, DefectScores]:
    """Score several rule configurations on the same defective scans.

    Procedural catalogue parts with holes get one defect of each kind in ``kinds`` (``"none"``:
    intact), ``samples_per_kind`` times; every scan is registered onto the part's CAD (the part
    type is known, as in an inspection) and inspected with each entry of ``rule_sets``
    (``None`` = the rules' defaults, i.e. the paper's thresholds). The defect must be seen by at
    least ``min_visible`` scan points (else it is placed again): the benchmark measures detection
    of observed defects, not scan planning. A finding matches when its centroid lies within
    ``location_tolerance`` plus half the defect's footprint of the injected centre, measured on
    the physical part (a symmetric part may register onto its CAD in a symmetric pose).

    Returns:
        ``{name: DefectScores}``.
    """
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    pool = [p for p in parts if getattr(p, "holes", ()) and p.is_procedural]
    if not pool:
        raise ValueError("defect benchmark needs procedural parts with holes")
    aligner = BoxIcpAligner()
    classes = list(DEFECT_CLASSES)
    state = {name: {"counts": {c: {"tp": 0, "fp": 0, "fn": 0} for c in classes}, "recs": [], "secs": [],
                    "false": 0} for name in rule_sets}
    n_good = 0
    jobs = [(k, i) for k in kinds for i in range(samples_per_kind)]
    for kind, _ in tqdm(jobs, desc="defects", disable=not progress, leave=False):
        for attempt in range(10):  # a part where the defect lands on a seen face
            part = pool[int(rng.integers(len(pool)))]
            try:
                pts, clean, T, rec = defective_sample(part, kind, rng, views=views, points_per_view=points_per_view,
                                                      noise=noise, min_visible=min_visible)
                break
            except ValueError:
                if attempt == 9:
                    raise
        model = library.get(part.name)
        t0 = time.perf_counter()
        al = aligner.align(pts, box_features(pts), model)
        t_align = time.perf_counter() - t0
        n_good += int(kind == "none")
        true_cls = next((c for c, ks in DEFECT_CLASSES.items() if kind in ks), None)
        to_scan = np.linalg.inv(al.transform)
        centre_scan = None if rec is None else T[:3, :3] @ np.asarray(rec.centre) + T[:3, 3]
        visible = 0 if rec is None else int(rec.label_points(clean, tol=3e-4).sum())
        for name, rules in rule_sets.items():
            st = state[name]
            t1 = time.perf_counter()
            report = detect_defects(pts, model, transform=al.transform, rules=rules)
            st["secs"].append(t_align + time.perf_counter() - t1)
            found_cls: dict[str, list[float]] = {}
            for f in report.defects:
                pos = to_scan[:3, :3] @ f.centroid + to_scan[:3, 3]
                d = float("inf") if rec is None else float(np.linalg.norm(pos - centre_scan))
                found_cls.setdefault(FINDING_CLASS.get(f.type, f.type), []).append(d)
            matched, dist = False, float("nan")
            if true_cls is not None:
                ds = found_cls.get(true_cls, [])
                dist = min(ds) if ds else float("nan")
                matched = bool(ds) and dist <= location_tolerance + 0.5 * float(rec.footprint)
                st["counts"][true_cls]["tp" if matched else "fn"] += 1
            for c in classes:
                if c in found_cls and not (c == true_cls and matched):
                    st["counts"][c]["fp"] += 1
            st["false"] += int(kind == "none" and bool(report.defects))
            st["recs"].append({
                "kind": kind, "part": part.name, "class": true_cls, "found": sorted(found_cls),
                "matched": matched, "distance": dist, "registration_rmse": al.rmse,
                "size": None if rec is None else dict(rec.size),
                "centre": None if rec is None else [float(v) for v in rec.centre],
                "normal": None if rec is None else [float(v) for v in rec.normal],
                "visible_points": visible,
                "findings": [(f.type, [round(float(v), 5) for v in f.centroid], round(f.score, 6),
                              {k: round(float(v), 6) for k, v in f.details.items()
                               if k in ("length", "width", "elongation", "size", "depth")})
                             for f in report.defects]})
    out = {}
    for name, st in state.items():
        counts = st["counts"]
        f1 = {c: (2 * v["tp"] / (2 * v["tp"] + v["fp"] + v["fn"]) if (2 * v["tp"] + v["fp"] + v["fn"]) else 1.0)
              for c, v in counts.items()}
        out[name] = DefectScores(f1=f1, macro_f1=float(np.mean(list(f1.values()))), counts=counts,
                                 false_alarm_rate=st["false"] / n_good if n_good else 0.0,
                                 samples=tuple(st["recs"]), seconds=tuple(st["secs"]))
    return out
