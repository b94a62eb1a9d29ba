"""Production-run evaluation of the cell's verdicts: what an integrator measures on the line.

Per part: the verdict against the expected one (a good part must PASS, a defective one FAIL),
whether a FAIL found the injected defect where it is (a *hit*: a reported defect within
``max(10 mm, the defect's footprint)`` of its centre), whether the planned views measured the
defect at all (at least :data:`MIN_MEASURED_POINTS` fused points on its anomalous surface, covering
at least :data:`MIN_MEASURED_SHARE` of it:
a defect nobody saw cannot be found, and is counted apart so that an escape is always a real
miss), and the seconds per stage.

Over a run: verdict accuracy, escape rate (defective part PASS), false-reject rate (good part
FAIL), INCONCLUSIVE rate with its reasons, misclassification rate, localisation error, and the
probability of detection per defect type as a function of its size, with ``a90`` -- the size found
90 % of the time -- from a hit/miss logistic model in log size (MIL-HDBK-1823A, *Nondestructive
Evaluation System Reliability Assessment*, 2009, section 4 / appendix G).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .outcome import FAIL, INCONCLUSIVE, PASS
from .production import severity_of

__all__ = ["PartRecord", "PodFit", "fit_pod", "pod_size", "summarize", "MIN_MEASURED_POINTS", "MIN_MEASURED_SHARE",
           "measured_share",
           "GROSS_DEPTH", "GROSS_ACROSS", "plot_pod", "plot_confusion"]

#: a defect counts as measured by the planned views when the scan has at least this many points on
#: it and covers at least MIN_MEASURED_SHARE of its anomalous surface (the share of its surface
#: samples with a scan point within 1 mm); a defect seen only at its rim cannot be judged
MIN_MEASURED_POINTS = 5
MIN_MEASURED_SHARE = 0.25
#: the specification the cell must never miss: at least 0.5 mm deep (or high) and 5 mm across
GROSS_DEPTH, GROSS_ACROSS = 5e-4, 5e-3

#: the size each defect type's POD is expressed in (key of the injected size; millimetres, or
#: degrees for bends)
POD_SIZE_KEYS = {"bulge": "height", "sink": "depth", "scratch": "depth", "crack": "width", "hole": "diameter",
                 "broken": "radius", "bend": "angle_deg", "hole_position": "offset", "hole_diameter": "change"}


def pod_size(defect: Mapping) -> tuple[str, float]:
    """``(size name, value)`` of an injected defect for its POD curve: millimetres (degrees for
    ``angle_deg``), absolute.
    """
    key = POD_SIZE_KEYS.get(defect["type"])
    if key is None or key not in defect.get("size", {}):
        return "", float("nan")
    v = abs(float(defect["size"][key]))
    return key, v if key.endswith("_deg") else v * 1e3


@dataclass(frozen=True)
class PartRecord:
    """One inspected part of a production run (JSON-friendly).

    Attributes:
        part_id, part_type: the part and its true type.
        method: detector that gave ``verdict``.
        expected, verdict, reason: PASS / FAIL / INCONCLUSIVE.
        classified_as: the type the cell named ("" when it was told the type).
        defect: the injected defect (``DefectRecord.to_dict()``) or None.
        measured: the planned views measured the defect (None for good parts).
        hit: a reported defect lies at the injected one (None for good parts).
        localisation_error: distance [m] of the nearest reported defect to the injected centre.
        object_score, threshold: the detector's.
        defects: reported defects (type, centroid, extent, score, point_count).
        stage_seconds: seconds per stage.
        quality: data quality of the inspection scan.
    """

    part_id: str
    part_type: str
    method: str
    expected: str
    verdict: str
    reason: str
    classified_as: str = ""
    defect: dict | None = None
    measured: bool | None = None
    hit: bool | None = None
    localisation_error: float | None = None
    object_score: float | None = None
    threshold: float | None = None
    defects: list = field(default_factory=list)
    stage_seconds: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.verdict == self.expected

    def to_json(self) -> dict:
        d = asdict(self)
        d["correct"] = self.correct
        if self.defect is not None:
            d["severity"] = severity_of(self.defect)
            d["pod_size"] = dict(zip(("name", "value"), pod_size(self.defect)))
        return _finite(d)


def _finite(x):
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def locate(defect: Mapping, reported: Sequence) -> tuple[bool, float | None]:
    """``(hit, distance [m])``: is a reported defect (objects with ``centroid``) within
    ``max(10 mm, footprint)`` of the injected ``defect``'s centre, and how far the nearest is.
    """
    if not reported:
        return False, None
    c = np.asarray(defect["centre"], dtype=np.float64)
    d = min(float(np.linalg.norm(np.asarray(r.centroid if hasattr(r, "centroid") else r["centroid"]) - c))
            for r in reported)
    return d <= max(0.010, float(defect.get("footprint", 0.0))), d


def _surface(mesh):
    """``mesh`` (trimesh or :class:`~cosarad_ros.core.registration.mesh_reference.MeshReference`)
    as a MeshReference, or None.
    """
    if mesh is None:
        return None
    from cosarad_ros.core.registration.mesh_reference import MeshReference

    return mesh if isinstance(mesh, MeshReference) else MeshReference(mesh)


def _same_surface(surface, a, b) -> np.ndarray:
    """``(N,)`` bool: points ``a[i]`` and ``b[i]`` lie on faces of ``surface`` facing the same way
    (within 60 degrees); all True without a surface.
    """
    if surface is None or not len(a):
        return np.ones(len(a), dtype=bool)
    _, n = surface.closest(np.concatenate([a, b]))
    return np.einsum("ij,ij->i", n[:len(a)], n[len(a):]) >= 0.5


def measured_share(points, defect_points, *, radius: float = 1e-3, mesh=None) -> float:
    """Share of a defect's anomalous-surface samples ``(K, 3)`` with a scan point within ``radius``.

    With ``mesh`` (the defective part, same frame; a trimesh or a ``MeshReference``) the scan
    point must also lie on a face facing the same way as the sample's: the back of a thin wall is
    within a millimetre of a dent in its front but does not measure it.
    """
    if points is None or not len(points) or defect_points is None or not len(defect_points):
        return 0.0
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    samples = np.asarray(defect_points, dtype=np.float64)
    d, idx = cKDTree(pts).query(samples, k=1, distance_upper_bound=radius)
    hit = np.isfinite(d)
    hit[hit] = _same_surface(_surface(mesh), samples[hit], pts[idx[hit]])
    return float(hit.mean())


def measured_points(defect: Mapping, points, defect_points=None, *, radius: float = 1e-3, mesh=None) -> int:
    """Scan points (part frame) on the injected defect: within ``radius`` of its anomalous-surface
    samples (:meth:`~.production.CellPart.defect_points`), or, without those, within its footprint
    (at least 1.5 mm) of its centre. With ``mesh`` (the defective part) a point counts only on a
    face facing the same way as its nearest sample's (see :func:`measured_share`).
    """
    if points is None or not len(points):
        return 0
    pts = np.asarray(points, dtype=np.float64)
    if defect_points is not None and len(defect_points):
        from scipy.spatial import cKDTree

        samples = np.asarray(defect_points, dtype=np.float64)
        d, idx = cKDTree(samples).query(pts, k=1, distance_upper_bound=radius)
        near = np.isfinite(d)
        return int(_same_surface(_surface(mesh), pts[near], samples[idx[near]]).sum())
    c = np.asarray(defect["centre"], dtype=np.float64)
    r = max(0.5 * float(defect.get("footprint", 0.0)), 0.0015)
    return int((np.linalg.norm(pts - c, axis=1) <= r).sum())


@dataclass(frozen=True)
class PodFit:
    """Hit/miss POD model ``POD(a) = 1 / (1 + exp(-(ln a - mu) / sigma))`` (MIL-HDBK-1823A).

    Attributes:
        n, hits: defects in the fit and how many were found.
        mu, sigma: fitted location and scale in ``ln(size)`` (NaN when the data cannot fix them).
        a50, a90: sizes found 50 % / 90 % of the time (NaN when not estimable).
        note: ``""``, ``"all found"`` (a90 <= the smallest size), ``"none found"`` or
            ``"too few"``.
        smallest, largest: size range of the data.
    """

    n: int
    hits: int
    mu: float
    sigma: float
    a50: float
    a90: float
    note: str
    smallest: float
    largest: float

    def pod(self, a) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if not (np.isfinite(self.mu) and np.isfinite(self.sigma)):
            return np.full(a.shape, np.nan)
        return 1.0 / (1.0 + np.exp(-(np.log(a) - self.mu) / self.sigma))


def fit_pod(sizes, hits, *, min_n: int = 4) -> PodFit:
    """Fit the hit/miss POD model by maximum likelihood.

    Args:
        sizes: ``(N,)`` positive defect sizes.
        hits: ``(N,)`` bool, found or not.
        min_n: fewer defects give ``note="too few"``.

    Returns:
        :class:`PodFit`. Perfectly separated data (every defect above some size found, none below)
        has no finite maximum-likelihood fit; then ``a90`` is the smallest size above which all
        were found (``note="separated"``), an optimistic estimate that more data would refine.

    Raises:
        ValueError: mismatched lengths or non-positive sizes.
    """
    from scipy.optimize import minimize

    a = np.asarray(sizes, dtype=np.float64).reshape(-1)
    h = np.asarray(hits, dtype=bool).reshape(-1)
    if a.shape != h.shape:
        raise ValueError(f"sizes and hits differ in length: {a.shape} vs {h.shape}")
    if len(a) and not (np.isfinite(a).all() and (a > 0).all()):
        raise ValueError("sizes must be finite and > 0")
    nan = float("nan")
    lo, hi = (float(a.min()), float(a.max())) if len(a) else (nan, nan)
    base = dict(n=int(len(a)), hits=int(h.sum()), smallest=lo, largest=hi)
    if len(a) < min_n:
        return PodFit(mu=nan, sigma=nan, a50=nan, a90=nan, note="too few", **base)
    if h.all():
        return PodFit(mu=nan, sigma=nan, a50=nan, a90=lo, note="all found", **base)
    if not h.any():
        return PodFit(mu=nan, sigma=nan, a50=nan, a90=nan, note="none found", **base)
    x = np.log(a)
    if x[h].min() > x[~h].max():  # perfectly separated
        return PodFit(mu=nan, sigma=nan, a50=nan, a90=float(a[h].min()), note="separated", **base)

    def nll(theta):
        mu, log_s = theta
        z = (x - mu) / math.exp(log_s)
        # log sigmoid, numerically stable
        lp = -np.logaddexp(0.0, -z)
        lq = -np.logaddexp(0.0, z)
        return -float(np.sum(np.where(h, lp, lq)))

    res = minimize(nll, x0=[float(np.median(x)), math.log(max(float(x.std()), 0.1))], method="Nelder-Mead",
                   options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
    mu, sigma = float(res.x[0]), float(math.exp(min(res.x[1], 10.0)))
    log90 = mu + sigma * math.log(9.0)
    if not (x.min() - 2.3 <= mu <= x.max() + 2.3 and log90 <= x.max() + 2.3):
        # the likelihood is flat (hits and misses mixed at every size): a90 lies far outside the
        # sizes tested (more than 10x), no usable curve
        return PodFit(mu=nan, sigma=nan, a50=nan, a90=nan, note="no trend", **base)
    a50 = math.exp(mu)
    a90 = math.exp(log90)
    return PodFit(mu=mu, sigma=sigma, a50=a50, a90=a90, note="", **base)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def summarize(records: Sequence[PartRecord]) -> dict:
    """The figures of a run (one method): counts and rates, INCONCLUSIVE reasons,
    misclassifications, POD per defect type with ``a90``, localisation error and stage seconds.
    """
    recs = list(records)
    good = [r for r in recs if r.expected == PASS]
    bad = [r for r in recs if r.expected == FAIL]
    seen = [r for r in bad if r.measured]
    unseen = [r for r in bad if r.measured is False]
    gross = [r for r in seen if _is_gross(r.defect)]
    incon = [r for r in recs if r.verdict == INCONCLUSIVE]
    reasons: dict[str, int] = {}
    for r in incon:
        key = r.reason.split(":")[0] + (": " + r.reason.split(":")[1].strip()[:60] if ":" in r.reason else "")
        reasons[key] = reasons.get(key, 0) + 1
    classified = [r for r in recs if r.classified_as]
    miscls = [r for r in classified if r.classified_as not in (r.part_type, "unknown")]
    unknown = [r for r in classified if r.classified_as == "unknown"]
    loc = [r.localisation_error for r in seen if r.hit and r.localisation_error is not None]
    out = {
        "parts": len(recs),
        "part_types": sorted({r.part_type for r in recs}),
        "correct": sum(r.correct for r in recs),
        "verdict_accuracy": _rate(sum(r.correct for r in recs), len(recs)),
        "good_parts": len(good),
        "defective_parts": len(bad),
        "false_rejects": sum(r.verdict == FAIL for r in good),
        "false_reject_rate": _rate(sum(r.verdict == FAIL for r in good), len(good)),
        "escapes": sum(r.verdict == PASS for r in seen),
        "escape_rate": _rate(sum(r.verdict == PASS for r in seen), len(seen)),
        "escapes_gross": sum(r.verdict == PASS for r in gross),
        "gross_defects": len(gross),
        "unmeasured_defects": len(unseen),
        "unmeasured_defect_ids": [r.part_id for r in unseen],
        "inconclusive": len(incon),
        "inconclusive_rate": _rate(len(incon), len(recs)),
        "inconclusive_reasons": reasons,
        "misclassified": len(miscls),
        "misclassification_rate": _rate(len(miscls), len(classified)),
        "classified_unknown": len(unknown),
        "detected_at_defect": sum(bool(r.hit) for r in seen),
        "localisation_error_mm": {"median": float(np.median(loc)) * 1e3, "max": float(np.max(loc)) * 1e3}
        if loc else None,
        "pod": pod_table(seen),
        "stage_seconds": stage_table(recs),
    }
    return _finite(out)


def _is_gross(defect) -> bool:
    if not defect:
        return False
    s = severity_of(defect)
    return s["depth"] >= GROSS_DEPTH and s["across"] >= GROSS_ACROSS


def pod_groups(records: Sequence[PartRecord]) -> dict[str, list[PartRecord]]:
    """Measured defects grouped for POD: one group per defect type, plus ``bulge>=8mm`` /
    ``sink>=8mm`` (those at least 8 mm across).
    """
    groups: dict[str, list[PartRecord]] = {}
    for r in records:
        if not r.defect or not r.measured:
            continue
        kind = r.defect["type"]
        groups.setdefault(kind, []).append(r)
        if kind in ("bulge", "sink") and severity_of(r.defect)["across"] >= 8e-3:
            groups.setdefault(f"{kind}>=8mm", []).append(r)
    return groups


def pod_table(records: Sequence[PartRecord]) -> dict:
    """Per group of :func:`pod_groups`: size name, the :class:`PodFit` and the raw hit/miss data."""
    out = {}
    for name, recs in sorted(pod_groups(records).items()):
        key = POD_SIZE_KEYS[recs[0].defect["type"]]
        sizes = [pod_size(r.defect)[1] for r in recs]
        hits = [bool(r.hit) for r in recs]
        fit = fit_pod(sizes, hits)
        out[name] = {"size": key, "unit": "deg" if key.endswith("_deg") else "mm", **asdict(fit),
                     "data": [[round(s, 4), h] for s, h in sorted(zip(sizes, hits))]}
    return out


def stage_table(records: Sequence[PartRecord]) -> dict:
    """Median seconds per stage over the parts that ran it, and the median compute total."""
    stages: dict[str, list[float]] = {}
    totals = []
    for r in records:
        for k, v in r.stage_seconds.items():
            stages.setdefault(k, []).append(float(v))
        totals.append(sum(float(v) for k, v in r.stage_seconds.items() if k != "move"))
    out = {k: float(np.median(v)) for k, v in stages.items()}
    out["total_median"] = float(np.median(totals)) if totals else None
    return out


# ----------------------------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------------------------
def plot_pod(path, pod: Mapping, *, title: str = "") -> None:
    """POD curves (one panel per defect type): hits at 1, misses at 0, the fitted curve and a90."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(pod)
    if not names:
        return
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        p = pod[name]
        data = np.asarray([d[0] for d in p["data"]], dtype=float)
        hit = np.asarray([d[1] for d in p["data"]], dtype=bool)
        jitter = np.random.default_rng(0).uniform(-0.03, 0.03, len(data))
        ax.scatter(data[hit], 1 + jitter[hit], c="tab:green", s=14, label="found")
        ax.scatter(data[~hit], jitter[~hit], c="tab:red", s=14, label="missed")
        if p.get("mu") is not None and p.get("sigma") is not None:
            a = np.geomspace(max(data.min() * 0.7, 1e-3), data.max() * 1.3, 200)
            fit = PodFit(p["n"], p["hits"], p["mu"], p["sigma"], 0, 0, "", 0, 0)
            ax.plot(a, fit.pod(a), c="k", lw=1.2)
        if p.get("a90") is not None:
            ax.axvline(p["a90"], c="tab:blue", ls="--", lw=1)
            ax.text(p["a90"], 0.5, f" a90 {p['a90']:.2f}", color="tab:blue", fontsize=8)
        ax.set_xscale("log")
        ax.set_ylim(-0.1, 1.1)
        ax.set_title(f"{name} ({p['hits']}/{p['n']} found{', ' + p['note'] if p.get('note') else ''})", fontsize=9)
        ax.set_xlabel(f"{p['size']} [{p['unit']}]", fontsize=8)
        ax.set_ylabel("POD", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(path, records: Sequence[PartRecord], *, title: str = "") -> None:
    """Expected verdict (rows, defective parts split by measured / gross) x given verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["good", "defect >= 0.5 mm & 5 mm", "defect, smaller", "defect, not measured"]
    cols = [PASS, FAIL, INCONCLUSIVE]
    M = np.zeros((len(rows), len(cols)), dtype=int)
    for r in records:
        if r.expected == PASS:
            i = 0
        elif r.measured is False:
            i = 3
        else:
            i = 1 if _is_gross(r.defect) else 2
        M[i, cols.index(r.verdict) if r.verdict in cols else 2] += 1
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    ax.imshow(M, cmap="Blues")
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, str(M[i, j]), ha="center", va="center", fontsize=11)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("verdict")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# running a production run
# ----------------------------------------------------------------------------------------------
def _part_mesh(path):
    """The defective part's mesh (to tell which surface a scan point is on), or None when its
    file is missing or unreadable: the measured test then goes by distance alone.
    """
    from cosarad_ros.core.io import read_mesh

    try:
        return read_mesh(path) if path and Path(path).is_file() else None
    except (ValueError, OSError):
        return None


def record_of(part, run, method: str, *, outcome=None) -> PartRecord:
    """A :class:`PartRecord` from a :class:`~.production.CellPart` and its
    :class:`~.pipeline.InspectionRun` (``outcome`` overrides the run's, for a second method).
    """
    o = outcome if outcome is not None else run.outcome
    defect = part.defect
    measured = hit = err = None
    if defect is not None:
        cloud = run.fused  # the part frame, as the defect's samples
        samples = part.defect_points()
        mesh = _surface(_part_mesh(part.mesh_path))  # one distance structure for both tests
        measured = measured_points(defect, cloud, samples, mesh=mesh) >= MIN_MEASURED_POINTS and (
            samples is None or measured_share(cloud, samples, mesh=mesh) >= MIN_MEASURED_SHARE)
        hit, err = locate(defect, o.defects) if o.verdict == FAIL else (False, None)
        if o.verdict == FAIL and err is None:
            hit = False
    return PartRecord(
        part_id=part.part_id, part_type=part.part_type, method=method, expected=part.expected, verdict=o.verdict,
        reason=o.reason, classified_as=run.classified.label if run.classified is not None else "",
        defect=defect, measured=measured, hit=hit, localisation_error=err,
        object_score=o.object_score, threshold=o.threshold,
        defects=[{"type": d.type, "centroid": list(d.centroid), "extent": list(d.extent), "score": d.score,
                  "point_count": d.point_count} for d in o.defects],
        stage_seconds=dict(o.stage_seconds), quality=dict(o.quality))


def evaluate_production(scenario, cell, *, methods: Sequence[str], tell_type: bool = False, on_record=None,
                        min_fitness: float = 0.5, min_points: int = 200) -> dict[str, list[PartRecord]]:
    """Inspect every part of ``scenario`` in ``cell`` and record the verdicts.

    The first method runs the whole sequence (:func:`~.pipeline.run_inspection`); every other
    method scores the same registered cloud and goes through the same verdict rule
    (``cell.detect(points, part_type, part_id, method=...)``), so methods compare on identical scans.

    Args:
        scenario: :class:`~.production.CellScenario`.
        cell: an :class:`~.inprocess.InProcessCell` (``load_part`` and the ``Cell`` protocol).
        methods: detector names; the first is the cell's.
        tell_type: give the true part type instead of classifying each part.
        on_record: optional ``callback(record: PartRecord, run)`` after each part and method.
        min_fitness, min_points: see :func:`~.pipeline.run_inspection`.

    Returns:
        ``{method: [PartRecord, ...]}`` in the scenario's order.
    """
    from dataclasses import replace

    from .outcome import StageRecord, decide_verdict
    from .pipeline import in_part_frame, run_inspection

    if not methods:
        raise ValueError("at least one method is needed")
    out: dict[str, list[PartRecord]] = {m: [] for m in methods}
    for part in scenario.parts:
        cell.load_part(part.mesh_path, part_id=part.part_id)
        run = run_inspection(cell, part_id=part.part_id, part_type=part.part_type if tell_type else "",
                             min_fitness=min_fitness, min_points=min_points)
        registered = any(r.stage == "register" and r.ok for r in run.clock.records)
        for k, m in enumerate(methods):
            outcome = None
            if k > 0 and registered:
                try:
                    det = in_part_frame(cell.detect(run.registered.points, run.outcome.part_type, part.part_id,
                                                    method=m), run.registered.transform)
                    outcome = replace(det.outcome, part_id=part.part_id, part_type=run.outcome.part_type,
                                      stage_seconds=dict(run.outcome.stage_seconds), quality=run.outcome.quality)
                except Exception as exc:  # noqa: BLE001 - one method's failure is its verdict
                    verdict, reason = decide_verdict(failed_stage=StageRecord("detect", 0.0, False, str(exc)))
                    outcome = replace(run.outcome, verdict=verdict, reason=reason, defects=())
            rec = record_of(part, run, m, outcome=outcome)
            out[m].append(rec)
            if on_record is not None:
                on_record(rec, run)
    return out
