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
from cosarad_ros.core.cad.classifier import CadClassifier
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
    ``<name>.yaml`` (the part's metadata, ``units: mm``). Returns the labels."""
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


# the extent that makes a part "longer" (near-duplicates of the cell benchmark)
_LENGTH_KEY = {"block": "length", "pocket_block": "length", "flange": "diameter", "bracket": "base_length",
               "mold_insert": "length", "boss_plate": "length", "u_channel": "length"}


def _low_params(family: str, p: dict, rng: np.random.Generator) -> dict:
    """Parameters of a thin / low variant (5-15 mm high) of a family's random part [m]."""
    mm = 1e-3
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 1) * mm  # noqa: E731
    p = dict(p)
    if family == "block":
        p.update(height=u(5, 12), chamfer=min(p["chamfer"], 1e-3))
    elif family == "pocket_block":
        p.update(height=u(12, 15), chamfer=min(p["chamfer"], 1e-3))
        p["pocket_depth"] = round(p["height"] * 0.4, 4)
    elif family == "flange":
        p.update(thickness=u(5, 8), hub_height=u(4, 6), chamfer=min(p["chamfer"], 1e-3))
    elif family == "bracket":
        p.update(thickness=u(4, 5), upright_height=u(12, 15), inner_fillet=u(2, 3))
    elif family == "mold_insert":
        p.update(shoulder_height=u(6, 7), core_height=u(6, 8), chamfer=min(p["chamfer"], 1e-3),
                 cooling_diameter=u(2.5, 3))
        p["cavity_depth"] = round(p["core_height"] * 0.4, 4)
    elif family == "boss_plate":
        p.update(thickness=u(5, 6), boss_height=u(5, 8), hole_depth=u(4, 6))
    elif family == "u_channel":
        p.update(height=u(12, 15), base=u(4, 5), wall=u(3, 4))
    return p


def cell_catalogue(n_base: int = 16, *, seed: int = 0, delta: float = 0.0015, low_share: float = 0.5,
                   withheld: int = 0) -> tuple[list, list]:
    """Part types for the cell-like classification benchmark.

    ``n_base`` base types cycle through every procedural family (the later half, ``low_share``,
    as thin / low variants 5-15 mm high: plates, flat brackets, low channels); each has a
    near-duplicate ``"<name>_long"`` whose length (a flange's diameter) is ``delta`` longer.
    ``withheld`` more types of random families and dimensions are drawn from another stream,
    for the test that types missing from the library come back ``unknown``.

    Returns:
        ``(library parts (2 * n_base), withheld parts)``.
    """
    from cosarad_ros.core.data.parts import PART_FAMILIES, make_part

    if n_base < 1 or withheld < 0:
        raise ValueError(f"n_base must be >= 1 and withheld >= 0, got {n_base}, {withheld}")
    fams = sorted(PART_FAMILIES)
    rng = np.random.default_rng(seed)
    n_low = int(round(n_base * low_share))

    def draw(fam: str, name: str, low: bool, r: np.random.Generator):
        for _ in range(20):  # CSG can reject an unlucky combination; draw again
            params = PART_FAMILIES[fam].sample_params(r)
            if low:
                params = _low_params(fam, params, r)
            try:
                return make_part(fam, params, name=name)
            except ValueError:
                continue
        raise ValueError(f"could not build a valid {fam} part")

    base, parts = [], []
    for i in range(n_base):
        low = i >= n_base - n_low
        fam = fams[i % len(fams)]
        base.append(draw(fam, f"{fam}_{'low_' if low else ''}{i:02d}", low, rng))
    for b in base:
        params = dict(b.params)
        key = _LENGTH_KEY[b.family]
        params[key] = round(float(params[key]) + delta, 6)
        if b.family == "flange":
            params["bolt_circle"] = round((params["hub_diameter"] + params["diameter"]) / 2, 7)
        parts += [b, make_part(b.family, params, name=f"{b.name}_long")]
    r2 = np.random.default_rng([seed, 1])
    held = [draw(fams[int(r2.integers(len(fams)))], f"withheld_{k:02d}", bool(r2.random() < low_share), r2)
            for k in range(withheld)]
    return parts, held


def view_directions(rng: np.random.Generator, views: int = 4, elevation_deg=(35.0, 60.0)) -> np.ndarray:
    """``(views, 3)`` unit directions from the part towards the sensor, spread in azimuth and
    raised ``elevation_deg`` above the table (a cell scanning a part lying on a fixture)."""
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


def cell_scan(mesh, rng: np.random.Generator, *, views=(3, 5), elevation_deg=(30.0, 70.0), yaw: bool = True,
              max_offset: float = 0.003, voxel_size: float = 0.0015, sensor: Mapping | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """A fused scan of ``mesh`` as the inspection cell takes it.

    The part rests on the cell's fixture (:meth:`SimulatedScene.inspection_cell`), turned by a
    random yaw about the vertical and shifted by up to ``max_offset`` on the fixture (as a real
    part lies); the cell's simulated structured-light sensor
    (:func:`~cosarad_ros.core.inspection.templates.cell_sensor_options`, depth noise 0.25 mm at
    its working distance, occlusion by the projector, grazing-angle dropout) looks at it from
    ``views`` (a count or ``(min, max)``) directions at random azimuths, ``elevation_deg`` above
    the fixture plane; the views are fused in the nominal part frame as the cell fuses them
    (:func:`~cosarad_ros.core.inspection.fusion.fuse_scans`: the lowest 1.5 mm above the fixture
    are cut away, voxel ``voxel_size``). The underside is never seen.

    Args:
        mesh: the part (trimesh, metres, its own frame with the resting face at ``z = min``).
        rng: random generator (yaw, offset, views, sensor noise seed).
        views: number of views, or ``(min, max)`` inclusive.
        elevation_deg: ``(min, max)`` elevation of each view [deg].
        yaw: turn the part by a random yaw (``False``: the nominal pose of the simulated cell).
        max_offset: largest shift of the part on the fixture [m].
        voxel_size: fusion voxel [m].
        sensor: simulated-sensor options (default: the cell's).

    Returns:
        ``(points (N, 3) in the nominal part frame, T (4, 4) scan -> model frame)``.
    """
    from cosarad_ros.core.inspection.fusion import fuse_scans
    from cosarad_ros.core.inspection.pipeline import ViewScan
    from cosarad_ros.core.inspection.templates import cell_sensor_options
    from cosarad_ros.core.planning import CellModel
    from cosarad_ros.core.sensors import SimulatedScene, default_viewpoint, make_sensor

    lo, hi = np.asarray(mesh.bounds, dtype=np.float64)
    n_views = int(views) if np.isscalar(views) else int(rng.integers(int(views[0]), int(views[1]) + 1))
    if n_views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    # part -> nominal part frame: yaw about the vertical through the footprint centre, then the offset
    a = float(rng.uniform(0.0, 2.0 * np.pi)) if yaw else 0.0
    r = max_offset * np.sqrt(rng.uniform()) if max_offset > 0 else 0.0
    phi = rng.uniform(0.0, 2.0 * np.pi)
    c = np.array([(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0, -lo[2]])
    place = np.eye(4)
    place[:3, :3] = [[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]]
    place[:3, 3] = c * [1, 1, 0] + [r * np.cos(phi), r * np.sin(phi), c[2]] - place[:3, :3] @ (c * [1, 1, 0])
    part_pose = CellModel.default().part_pose()
    scene = SimulatedScene.inspection_cell()
    world = part_pose @ place
    scene.set_part(mesh, pose=world)
    centre = world[:3, :3] @ ((lo + hi) / 2.0) + world[:3, 3]
    opts = dict(sensor) if sensor is not None else cell_sensor_options()
    sim = make_sensor({"type": "motioncam", **opts, "scene": scene, "seed": int(rng.integers(2 ** 31))})
    sim.connect()
    az0 = rng.uniform(0.0, 360.0)
    scans = []
    try:
        for v in range(n_views):
            az = az0 + 360.0 * v / n_views + rng.uniform(-15.0, 15.0)
            pose = default_viewpoint(centre, sim.working_distance, elevation_deg=float(rng.uniform(*elevation_deg)),
                                     azimuth_deg=float(az))
            frame = sim.grab(pose)
            scans.append(ViewScan(np.asarray(frame.points, np.float64), np.asarray(frame.sensor_pose)))
    finally:
        sim.close()
    pts = fuse_scans(scans, part_pose=part_pose, voxel_size=voxel_size)
    return pts, np.linalg.inv(place)


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> tuple[float, dict]:
    """Macro-averaged F1 over ``labels`` (predictions outside ``labels``, e.g. ``unknown``,
    are wrong answers); returns ``(macro F1, {label: F1})``."""
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
    """Classification benchmark result (see :func:`classification_benchmark`)."""

    accuracy: float
    macro_f1: float
    unknown_rate: float
    per_class_f1: Mapping[str, float]
    y_true: tuple[str, ...]
    y_pred: tuple[str, ...]
    seconds: tuple[float, ...] = field(repr=False)
    scores: tuple[float, ...] = field(repr=False)

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")


def classification_benchmark(library: CadLibrary, parts: Sequence, *, scans_per_type: int = 2,
                             seed: int = 0, views: int = 4, points_per_view: int = 6000, noise: float = 3e-5,
                             classifier: CadClassifier | None = None, progress: bool = True) -> ClassificationScores:
    """Classify ``scans_per_type`` simulated partial scans of every part (see module docstring)."""
    from tqdm import tqdm

    clf = classifier or CadClassifier(library, compute_quality=False)
    rng = np.random.default_rng(seed)
    y_true, y_pred, secs, scores = [], [], [], []
    jobs = [(p, k) for p in parts for k in range(scans_per_type)]
    for part, _ in tqdm(jobs, desc="classify", disable=not progress, leave=False):
        pts, _, _ = multi_view_scan(part.mesh, rng, views=views, points_per_view=points_per_view, noise=noise)
        t0 = time.perf_counter()
        res = clf.classify(pts)
        secs.append(time.perf_counter() - t0)
        y_true.append(part.name)
        y_pred.append(res.label)
        scores.append(res.score)
    labels = sorted({p.name for p in parts})
    mf1, per = macro_f1(y_true, y_pred, labels)
    acc = float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
    unk = float(np.mean(np.asarray(y_pred) == "unknown"))
    return ClassificationScores(acc, mf1, unk, per, tuple(y_true), tuple(y_pred), tuple(secs), tuple(scores))


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
    (default :data:`TUNED_RULES`). See :func:`compare_rule_sets`."""
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
