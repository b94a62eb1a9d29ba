"""Memory-bank fitting and the on-disk bank cache of :class:`~.detector.AnomalyDetector`.

Its ``_cache_key``, ``_build``, ``_partial_loo``, ``_save_bank`` and ``_load_bank`` methods, as
module functions that take the detector as ``self``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from .memory_bank import make_bank
from .parts import MIN_SCAN_POINTS, PartBank
from .patches import farthest_point_sampling, resolve_patch_radius

#: the modules whose source keys a cached bank (with the configuration and the templates): any
#: change to them makes every cached bank be fitted again
BANK_CODE = ("cosarad_ros.core.anomaly", "cosarad_ros.core.registration", "cosarad_ros.core.geometry")

#: points of the thinned reference (``PartBank.view_reference``) on which a scan's coverage is measured
COVERAGE_POINTS = 2000


def _cache_key(self, templates: list[np.ndarray]) -> str:
    from ..cachekey import source_fingerprint

    c = self.config
    pc, sc = c.patches, c.scoring
    h = hashlib.sha1()
    params = {"code": source_fingerprint(*BANK_CODE), "method": self.method,
              "extractor": self.extractor.fingerprint(),
              "patch_radius": pc.patch_radius, "patch_radius_rel": pc.patch_radius_rel,
              "num_patches": pc.num_patches, "patch_points": pc.patch_points, "min_std": sc.min_std,
              "aggregator": sc.aggregator, "top_k": sc.top_k, "far": c.calibration.false_alarm_rate,
              "partial": pc.partial_scans, "reg": self.registration_attempts, "register": self.register,
              "max_pts": self.max_template_points, "seed": self.seed,
              "calibration_views": c.calibration.calibration_views, "coverage_points": COVERAGE_POINTS,
              "support_tolerance": c.banks.support_tolerance, "std_prior_weight": sc.std_prior_weight}
    h.update(json.dumps(params, sort_keys=True).encode())
    for t in templates:
        h.update(np.ascontiguousarray(t, dtype=np.float32).tobytes())
    return h.hexdigest()


def _build(self, part_type: str, tmpl: list[np.ndarray], key: str, *, progress: bool,
           aligned: bool = False) -> PartBank:
    from tqdm.auto import tqdm

    pc = self.config.patches
    ref = tmpl[0]
    radius = resolve_patch_radius(ref, patch_radius=pc.patch_radius, patch_radius_rel=pc.patch_radius_rel)
    sub = ref if len(ref) <= 20_000 else ref[self._rng(7).choice(len(ref), 20_000, replace=False)]
    centres = sub[farthest_point_sampling(sub, pc.num_patches)]
    feats, valid, counts, regs = [], [], [], []
    on_ref = self._templates_on_reference(part_type, tmpl, aligned=aligned)
    for g, t in tqdm(on_ref, total=len(tmpl), desc=f"register {part_type}", disable=not progress, leave=False):
        regs.append(t.astype(np.float32))
    need = 3 if self.bank_kind == "local" else 2
    if len(regs) < need:
        raise ValueError(f"only {len(regs)} template(s) of '{part_type}' registered onto the reference; "
                         f"need {need}")
    from .visibility import estimate_normals

    normals = ([estimate_normals(t) for t in regs] if pc.partial_scans or self.uses_deviation
               else [None] * len(regs))
    tdev = ()
    if self.uses_deviation:
        from .surfaces import TemplateSurfaces

        tdev = tuple(d.astype(np.float32) for d in TemplateSurfaces.build(regs, normals).leave_one_out())
    for g, t in enumerate(regs):
        ps = self._cut(t, centres, radius=radius, num_points=pc.patch_points, min_points=8,
                       point_keys=self._template_keys(None, g, len(t)),
                       point_features=self._channel(tdev[g] if tdev else None, radius))
        feats.append(self._features(ps))
        valid.append(ps.valid)
        counts.append(ps.counts)
    groups = list(range(len(regs)))
    F = np.stack(feats, axis=1)  # (P, G, d)
    V = np.stack(valid, axis=1)
    bank = make_bank(self.bank_kind, F, V, **self._bank_args())
    loo = bank.leave_one_out()
    vref = sub[farthest_point_sampling(sub, COVERAGE_POINTS)].astype(np.float32)
    tnorm = tuple(normals) if pc.partial_scans else ()
    pb = PartBank(part_type, ref.astype(np.float32), centres, float(radius), bank, np.nan, np.nan, loo, key,
                  tuple(regs), np.stack(counts, axis=1), vref, np.asarray(groups), tnorm, tdev)
    n_eff = pc.num_patches // 2 if pc.partial_scans else pc.num_patches
    if pc.partial_scans and self.config.calibration.calibration_views > 0 and len(regs) >= need + 1:
        loo, n_eff = self._partial_loo(pb)
    thr, pthr = self._calibrate(loo, n_eff)
    return dataclasses.replace(pb, threshold=thr, patch_threshold=pthr, loo_scores=loo)


def _partial_loo(self, pb: PartBank) -> tuple[np.ndarray, int]:
    """Good-patch scores of simulated partial views of each template (hidden point removal from
    ``calibration_views`` random directions) against a bank of the other templates, scored
    exactly like a test scan (view matching included). Returns ``(scores (G * V, P), n_eff)``.
    """
    from .visibility import fibonacci_directions, visible_from

    pc = self.config.patches
    views = self.config.calibration.calibration_views
    rng = self._rng(4242)
    G = len(pb.templates)
    groups = pb.groups if pb.groups is not None else np.arange(G)
    rows, n_valid = [], []
    for g in range(G):
        keep = [i for i in range(G) if i != g]
        sub = dataclasses.replace(
            pb, bank=make_bank(self.bank_kind, pb.bank.features[:, keep], pb.bank.valid[:, keep],
                               **self._bank_args()),
            templates=tuple(pb.templates[i] for i in keep), counts=pb.counts[:, keep], groups=groups[keep],
            template_normals=tuple(pb.template_normals[i] for i in keep) if pb.template_normals else (),
            template_dev=tuple(pb.template_dev[i] for i in keep) if pb.template_dev else ())
        t = pb.templates[g]
        centre = 0.5 * (t.max(0) + t.min(0))
        diag = float(np.linalg.norm(t.max(0) - t.min(0)))
        dirs = fibonacci_directions(64)[rng.choice(64, views, replace=False)]
        for d in dirs:
            nrm = pb.template_normals[g] if pb.template_normals else None
            seen = visible_from(t, nrm, centre + 1.5 * diag * d)
            view = t[seen].astype(np.float64)
            if len(view) < MIN_SCAN_POINTS:
                continue
            ps = self._cut(view, pb.centres, radius=pb.radius, num_points=pc.patch_points,
                           min_points="partial", rng=rng,
                           point_features=self._channel(pb.template_dev[g] if pb.template_dev else None,
                                                        pb.radius, seen))
            if not ps.valid.any():
                continue
            feats = self._features(ps)
            bank = self._view_matched_bank(sub, view, ps.valid)[0] if self.config.banks.view_matching else sub.bank
            rows.append(bank.score(feats, ps.valid))
            n_valid.append(int(ps.valid.sum()))
    if not rows:
        return pb.loo_scores, pc.num_patches // 2
    return np.stack(rows), int(np.median(n_valid))


def _save_bank(self, path: str, pb: PartBank) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = {"part_type": pb.part_type, "key": pb.key, "radius": pb.radius,
            "threshold": pb.threshold, "patch_threshold": pb.patch_threshold, "bank_kind": pb.bank.kind}
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), reference=pb.reference, centres=pb.centres,
                        features=pb.bank.features, valid=pb.bank.valid, loo=pb.loo_scores,
                        templates=np.concatenate(pb.templates),
                        template_len=np.array([len(t) for t in pb.templates]), counts=pb.counts,
                        view_reference=pb.view_reference, groups=pb.groups,
                        template_normals=(np.concatenate(pb.template_normals) if pb.template_normals
                                          else np.zeros((0, 3), np.float32)),
                        template_dev=(np.concatenate(pb.template_dev) if pb.template_dev
                                      else np.zeros(0, np.float32)))
    os.replace(tmp, path)


def _load_bank(self, path: str, part_type: str, key: str) -> PartBank:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            # files written before the views crop's removal also hold template_nn and view_normals (unused)
            arrays = {k: z[k] for k in ("reference", "centres", "features", "valid", "loo", "templates",
                                        "template_len", "counts", "view_reference", "groups", "template_normals")}
            # written since the deviation inputs; absent in older files (xyz / FPFH banks)
            arrays["template_dev"] = z["template_dev"] if "template_dev" in z.files else np.zeros(0, np.float32)
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from exc
    if meta.get("key") != key:
        raise ValueError("cache key mismatch")
    bank = make_bank(meta["bank_kind"], arrays["features"], arrays["valid"], **self._bank_args())
    thr, pthr = float(meta["threshold"]), float(meta["patch_threshold"])
    cut = np.cumsum(arrays["template_len"])[:-1]
    return PartBank(part_type, arrays["reference"], arrays["centres"], float(meta["radius"]), bank, thr, pthr,
                    arrays["loo"], key, tuple(np.split(arrays["templates"], cut)), arrays["counts"],
                    arrays["view_reference"], arrays["groups"],
                    tuple(np.split(arrays["template_normals"], cut)) if len(arrays["template_normals"]) else (),
                    tuple(np.split(arrays["template_dev"], cut)) if len(arrays["template_dev"]) else ())
