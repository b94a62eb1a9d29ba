"""Evaluation: AUROC metrics, the honest k-fold-over-classes protocol, figures and ``metrics.json``.

* O-AUROC: area under the ROC curve of object scores (defective vs good test scans of a class).
* P-AUROC: area under the ROC curve of point scores over every point of every test scan of the
  class (as Real3D-AD reports it).

AUROC is computed exactly as the Mann-Whitney U statistic with mid-ranks for ties
(Hanley & McNeil, "The meaning and use of the area under a ROC curve", Radiology 1982).

Honest protocol (COSARAD evaluates k-fold over classes): a class is scored only by a feature
extractor that never saw it in training; with several models (one per fold), each class goes to
the first model whose ``classes_seen`` excludes it. ``metrics.json`` lists the classes the models
saw (``classes_seen_in_training``).
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .dataset import ClassData, RegisteredClass, register_class

#: score given to a scan the detector cannot score (fail-safe: it counts as anomalous)
UNSCORABLE = 1e6

__all__ = ["UNSCORABLE", "auroc", "roc_curve", "ClassResult", "evaluate_class", "evaluate_benchmark", "write_metrics",
           "format_table", "plot_roc", "plot_anomaly_map", "assign_models", "fold_classes"]


def auroc(scores, labels) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties count half).

    Returns NaN when only one class is present.
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape} vs {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` arrays of the ROC curve (one point per distinct threshold, from (0,0) to (1,1))."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = np.cumsum(~y)[distinct]
    P, N = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / N], np.r_[0.0, tp / P]


@dataclass(frozen=True)
class ClassResult:
    """Scores of one class.

    Attributes:
        name: class.
        o_auroc, p_auroc: object and point AUROC.
        n_good, n_bad: test scans scored.
        object_scores, object_labels: per test scan.
        sample_names: test scan names.
        model: the model file used (``None`` for FPFH).
        seconds_per_scan: median scoring time per scan (registration excluded when pre-registered).
        point_sample: a thinned sample of ``(scores, labels)`` for the point ROC figure.
        thresholds: ``(object threshold, point threshold)`` calibrated by the detector.
        n_failed: scans the detector could not score (scored :data:`UNSCORABLE`, i.e. anomalous).
    """

    name: str
    o_auroc: float
    p_auroc: float
    n_good: int
    n_bad: int
    object_scores: np.ndarray
    object_labels: np.ndarray
    sample_names: tuple
    model: str | None
    seconds_per_scan: float
    point_sample: tuple = field(default=(np.zeros(0), np.zeros(0, dtype=bool)))
    thresholds: tuple = (float("nan"), float("nan"))
    n_failed: int = 0


def fold_classes(names, fold: int, folds: int) -> list[str]:
    """The held-out classes of fold ``fold`` (0-based) of ``folds``: sorted names, every ``folds``-th."""
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got fold {fold} of {folds}")
    return sorted(names)[fold::folds]


def assign_models(class_names, model_infos: dict) -> dict:
    """Map each class to the first model (path) that did not see it in training, or ``None``.

    Args:
        class_names: classes to score.
        model_infos: ``{path: classes_seen}``.
    """
    out = {}
    for c in class_names:
        out[c] = next((p for p, seen in model_infos.items() if c not in set(seen)), None)
    return out


def plot_anomaly_map(points, scores, labels, path: str, *, title: str = "", threshold: float | None = None) -> None:
    """Two panels (ground truth, predicted scores) of a scan projected on its two main axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = np.asarray(points, dtype=np.float64)
    c = pts - pts.mean(0)
    _, _, vt = np.linalg.svd(c[:: max(1, len(c) // 5000)], full_matrices=False)
    uv = c @ vt[:2].T
    depth = c @ vt[2]
    order = np.argsort(depth)  # far first, near last
    sc = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels, dtype=bool) if labels is not None else np.zeros(len(pts), dtype=bool)
    fig, ax = plt.subplots(1, 2, figsize=(11, 5))
    ax[0].scatter(uv[order, 0], uv[order, 1], s=1.5, c=np.where(lab[order], "red", "lightsteelblue"))
    ax[0].set_title(f"ground truth ({int(lab.sum())} defect points)")
    vmax = np.nanpercentile(sc, 99.5) if threshold is None else max(2 * threshold, np.nanpercentile(sc, 99.5))
    im = ax[1].scatter(uv[order, 0], uv[order, 1], s=1.5, c=sc[order], cmap="jet",
                       vmin=float(np.nanmin(sc)), vmax=float(vmax))
    ax[1].set_title("point anomaly score" + (f" (threshold {threshold:.2f})" if threshold is not None else ""))
    fig.colorbar(im, ax=ax[1], shrink=0.8)
    for a in ax:
        a.set_aspect("equal")
        a.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_roc(results: list[ClassResult], path: str, *, title: str = "") -> None:
    """Object- and point-level ROC curves of every class in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 5))
    for r in results:
        if np.isfinite(r.o_auroc):
            f, t = roc_curve(r.object_scores, r.object_labels)
            ax[0].plot(f, t, lw=1, label=f"{r.name} {r.o_auroc:.3f}")
        ps, pl = r.point_sample
        if len(ps) and np.isfinite(r.p_auroc):
            f, t = roc_curve(ps, pl)
            ax[1].plot(f, t, lw=1, label=f"{r.name} {r.p_auroc:.3f}")
    for a, name in zip(ax, ("object level (O-AUROC)", "point level (P-AUROC)")):
        a.plot([0, 1], [0, 1], "k:", lw=0.8)
        a.set_xlabel("false positive rate")
        a.set_ylabel("true positive rate")
        a.set_title(name)
        a.legend(fontsize=7, loc="lower right")
        a.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate_class(detector, cls: ClassData, *, registered: RegisteredClass | None = None,
                   bank_cache: str | None = None, map_dir: str | None = None, n_maps: int = 2,
                   progress: bool = False, max_point_sample: int = 200_000, seed: int = 0) -> ClassResult:
    """Fit ``detector`` on the class templates and score every test scan.

    Args:
        detector: an :class:`~cosarad_ros.core.anomaly.AnomalyDetector`.
        cls: the class.
        registered: pre-computed registrations (:func:`register_class`); scans are then scored
            with their known transforms, otherwise the detector registers them itself.
        bank_cache: memory-bank cache folder.
        map_dir: write anomaly-map PNGs of the ``n_maps`` highest-scoring defective scans and
            the highest-scoring good scan here.
    """
    from tqdm.auto import tqdm

    if registered is not None:
        ok = [t for t, good in zip(registered.templates, registered.template_ok) if good]
        detector.fit(cls.name, ok, cache_dir=bank_cache, aligned=True)
    else:
        detector.fit(cls.name, list(cls.templates), cache_dir=bank_cache)
    obj, lab, names, times = [], [], [], []
    pscores, plabels = [], []
    kept = {}
    failed = 0
    for i, s in enumerate(tqdm(cls.tests, desc=f"score {cls.name}", disable=not progress, leave=False)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if registered is not None:
                    r = detector.score(s.points, cls.name, transform=registered.test_transforms[i])
                else:
                    r = detector.score(s.points, cls.name)
                ps_i, o_i, thr_i = r.point_scores, r.object_score, r.point_threshold
            except ValueError as exc:  # e.g. a scan that registered nowhere near the templates
                warnings.warn(f"{cls.name}/{s.name} could not be scored ({exc}); counted as anomalous")
                failed += 1
                ps_i, o_i, thr_i = np.full(len(s.points), UNSCORABLE), UNSCORABLE, float("nan")
        times.append(time.perf_counter() - t0)
        obj.append(o_i)
        lab.append(s.is_anomalous)
        names.append(s.name)
        pscores.append(ps_i)
        plabels.append(s.labels)
        kept[i] = (ps_i, o_i, thr_i)
    obj = np.asarray(obj)
    lab = np.asarray(lab, dtype=bool)
    ps = np.concatenate(pscores)
    pl = np.concatenate(plabels).astype(bool)
    p_auc = auroc(ps, pl) if pl.any() else float("nan")
    rng = np.random.default_rng(seed)
    sel = rng.choice(len(ps), min(len(ps), max_point_sample), replace=False)
    pb = detector.part_bank(cls.name)
    if map_dir:
        from ..geometry import transform_points

        bad = [i for i in np.argsort(-obj) if lab[i]][:n_maps]
        good = [i for i in np.argsort(-obj) if not lab[i]][:1]
        for i in bad + good:
            s = cls.tests[i]
            pts = s.points if registered is None else transform_points(registered.test_transforms[i], s.points)
            sc, o, thr = kept[i]
            plot_anomaly_map(pts, sc, s.labels, os.path.join(map_dir, f"{cls.name}_{s.name}.png"),
                             title=f"{cls.name}/{s.name}: object score {o:.2f} (threshold {pb.threshold:.2f})",
                             threshold=thr)
    model = getattr(getattr(detector, "extractor", None), "path", None)  # None: no learned model
    return ClassResult(cls.name, auroc(obj, lab), p_auc, int((~lab).sum()), int(lab.sum()), obj, lab, tuple(names),
                       model, float(np.median(times)), (ps[sel], pl[sel]),
                       (pb.threshold, getattr(pb, "patch_threshold", pb.threshold)), failed)


def format_table(results: list[ClassResult], *, method: str = "") -> str:
    """A per-class text table (class, O-AUROC, P-AUROC, good, bad, s/scan) with the mean."""
    lines = [f"{'class':<24} {'O-AUROC':>8} {'P-AUROC':>8} {'good':>5} {'bad':>5} {'s/scan':>7}  {method}"]
    for r in results:
        lines.append(f"{r.name:<24} {r.o_auroc:8.3f} {r.p_auroc:8.3f} {r.n_good:5d} {r.n_bad:5d} "
                     f"{r.seconds_per_scan:7.2f}")
    if results:
        o = np.nanmean([r.o_auroc for r in results])
        p = np.nanmean([r.p_auroc for r in results])
        lines.append(f"{'mean':<24} {o:8.3f} {p:8.3f}")
    return "\n".join(lines)


def write_metrics(path: str, results: list[ClassResult], *, method: str, models: list[str],
                  classes_seen: list[str], folds: list[dict] | None = None) -> dict:
    """Write ``metrics.json`` and return it.

    Its keys::

        {"classes": {"<class>": {"o_auroc", "p_auroc", "n_good", "n_bad"}},
         "mean": {"o_auroc", "p_auroc"}, "method", "model", "classes_seen_in_training"}

    ``model`` is the model path (``null`` for FPFH; a list when several fold models were used,
    in which case ``folds`` records which model scored which classes). Each class also lists its
    scans' object scores (``"scans": {name: {"score", "anomalous"}}``) and, when calibrated,
    the detector's object threshold, so misses can be looked up without rerunning.
    """
    def num(x):
        return None if not np.isfinite(x) else round(float(x), 6)

    doc = {
        "classes": {r.name: {"o_auroc": num(r.o_auroc), "p_auroc": num(r.p_auroc), "n_good": r.n_good,
                             "n_bad": r.n_bad, "threshold": num(r.thresholds[0]),
                             "scans": {str(n): {"score": num(sc), "anomalous": bool(lab)} for n, sc, lab in
                                       zip(r.sample_names, r.object_scores, r.object_labels)}}
                    for r in results},
        "mean": {"o_auroc": num(np.nanmean([r.o_auroc for r in results])) if results else None,
                 "p_auroc": num(np.nanmean([r.p_auroc for r in results])) if results else None},
        "method": method,
        "model": (models[0] if len(models) == 1 else (models or None)),
        "classes_seen_in_training": sorted(set(classes_seen)),
    }
    if folds:
        doc["folds"] = folds
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    return doc


def evaluate_benchmark(classes: list[ClassData], *, method: str, models: list[str | None] | None = None,
                       out_dir: str, detector_config: dict | None = None, allow_seen: bool = False,
                       cache_dir: str | None = None, registration_attempts: int = 3, progress: bool = True,
                       n_maps: int = 2, print_fn=print) -> tuple[dict, list[ClassResult]]:
    """Evaluate ``method`` on ``classes`` under the honest protocol; write metrics, ROC and maps.

    Args:
        classes: the benchmark classes.
        method: ``cosarad``, ``fpfh`` or ``global-bank``.
        models: model files (one per fold) for the learned methods; ``None``/``[None]``: shipped default.
        out_dir: output folder (``metrics.json``, ``roc.png``, ``maps/``).
        detector_config: extra detector arguments.
        allow_seen: also score classes every model saw (reported in ``classes_seen_in_training``);
            otherwise such classes are skipped with a warning.
        cache_dir: registrations and banks (default ``out_dir/_cache``).
        registration_attempts: attempts per scan registration.

    Returns:
        ``(metrics dict, per-class results)``.
    """
    from tqdm.auto import tqdm

    from . import make_detector
    from .model import default_model_path, load_model

    cache_dir = cache_dir or os.path.join(out_dir, "_cache")
    cfg = dict(detector_config or {})
    cfg["registration_attempts"] = registration_attempts
    learned = method in ("cosarad", "global-bank")
    names = [c.name for c in classes]
    if learned:
        paths = [default_model_path() if m is None else os.path.abspath(m) for m in (models or [None])]
        infos = {p: load_model(p)[1].classes_seen for p in paths}
        assign = assign_models(names, infos)
        for c, p in list(assign.items()):
            if p is None:
                if allow_seen:
                    assign[c] = paths[0]
                    warnings.warn(f"class {c} was seen in training by every model; scored anyway (--allow-seen)")
                else:
                    warnings.warn(f"class {c} was seen in training by every model given; skipped "
                                  f"(give a model that did not see it, or --allow-seen)")
    else:
        paths, infos = [], {}
        assign = {c: None for c in names}
    dets = {}
    results = []
    for cls in tqdm(classes, desc=f"eval {method}", disable=not progress):
        if learned and assign.get(cls.name) is None:
            continue
        key = assign[cls.name]
        if key not in dets:
            dets[key] = make_detector({**cfg, "method": method, "model": key})
        reg = register_class(cls, attempts=registration_attempts, cache_dir=os.path.join(cache_dir, "registration"),
                             progress=progress)
        r = evaluate_class(dets[key], cls, registered=reg, bank_cache=os.path.join(cache_dir, "banks"),
                           map_dir=os.path.join(out_dir, "maps"), n_maps=n_maps, progress=progress)
        results.append(r)
        if progress:
            tqdm.write(f"{cls.name}: O-AUROC {r.o_auroc:.3f} P-AUROC {r.p_auroc:.3f}")
    used = sorted({assign[r.name] for r in results if assign[r.name]})
    seen = sorted({c for p in used for c in infos[p]})
    folds = None
    if len(used) > 1:
        folds = [{"model": p, "classes_seen": sorted(infos[p]),
                  "classes_scored": sorted(r.name for r in results if assign[r.name] == p)} for p in used]
    doc = write_metrics(os.path.join(out_dir, "metrics.json"), results, method=method, models=used,
                        classes_seen=seen, folds=folds)
    plot_roc(results, os.path.join(out_dir, "roc.png"), title=f"{method}: mean O-AUROC "
             f"{doc['mean']['o_auroc']}, P-AUROC {doc['mean']['p_auroc']}")
    if print_fn:
        print_fn(format_table(results, method=method))
    return doc, results
