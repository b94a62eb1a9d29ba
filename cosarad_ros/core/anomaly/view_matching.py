"""Template banks cut to what a scan shows (``config.banks.view_matching``) for
:meth:`.detector.AnomalyDetector.score`: each full template is cut to its points within
``support_tolerance x R`` of a scan point (an addition to the paper).

Its ``_view_matched_bank``, ``_cropped_template_patches``, ``_fill_features``, ``_membership`` and
``_support_bank`` methods, as module functions that take the detector as ``self``.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .memory_bank import MemoryBank, make_bank
from .parts import PartBank


def _view_matched_bank(self, pb: PartBank, reg: np.ndarray, test_valid: np.ndarray, *,
                       reg_tree: cKDTree | None = None):
    """The bank of template patches cut to the scan's support (:func:`_support_bank`) and the
    share of the reference the scan covers (points of ``pb.view_reference`` within ``R / 4`` of
    a scan point). Returns ``(bank, coverage)``.
    """
    from .visibility import coverage_mask

    reg_tree = reg_tree if reg_tree is not None else cKDTree(reg)
    cov = coverage_mask(pb.view_reference, reg, 0.25 * pb.radius, scan_tree=reg_tree)
    return self._support_bank(pb, reg, test_valid, reg_tree=reg_tree), float(cov.mean())


def _cropped_template_patches(self, pb: PartBank, g: int, keep: np.ndarray, cols: np.ndarray):
    """Patches of template ``g`` cut to its points ``keep`` at the locations ``cols``,
    resampled with the template's own point keys (a patch the cut leaves whole is the fitted one).
    """
    return self._cut(pb.templates[g][keep], pb.centres[cols], radius=pb.radius,
                     num_points=self.config.patches.patch_points, min_points=0,
                     point_keys=self._template_keys(pb, g, len(pb.templates[g]))[keep],
                     point_features=self._channel(pb.template_dev[g] if pb.template_dev else None,
                                                  pb.radius, keep))


def _fill_features(self, F: np.ndarray, todo: list, where: list, V: np.ndarray | None = None) -> None:
    """One feature pass over the patch arrays ``todo``; the features of ``todo[i]`` go to
    ``F[js, g]`` (and ``V[js, g] = True``) for ``(js, g) = where[i]``.
    """
    if not todo:
        return
    new = self.extractor(np.concatenate(todo))
    o = 0
    for js, g in where:
        F[js, g] = new[o:o + len(js)]
        if V is not None:
            V[js, g] = True
        o += len(js)


def _membership(self, pb: PartBank, g: int):
    """Sparse ``(P, N_g)`` matrix: which points of template ``g`` lie in each patch of ``pb``
    (built once per template array, kept in memory).
    """
    from scipy.sparse import csr_matrix

    t = pb.templates[g]
    hit = self._member_cache.get(id(t))
    if hit is not None and hit[0] is t and hit[1] == (pb.radius, len(pb.centres)):
        return hit[2]
    groups = cKDTree(t).query_ball_point(pb.centres, r=pb.radius, return_sorted=True)
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in groups])])
    idx = np.concatenate([np.asarray(x, dtype=np.int64) for x in groups]) if indptr[-1] else np.zeros(0, np.int64)
    M = csr_matrix((np.ones(len(idx), dtype=np.int32), idx, indptr), shape=(len(pb.centres), len(t)))
    if len(self._member_cache) >= 64:
        self._member_cache.clear()
    self._member_cache[id(t)] = (t, (pb.radius, len(pb.centres)), M)
    return M


def _support_bank(self, pb: PartBank, reg: np.ndarray, test_valid: np.ndarray, *,
                  reg_tree: cKDTree | None = None) -> MemoryBank:
    """A bank of the ``G`` full templates, each cut to its points within ``support_tolerance
    x R`` of a scan point, at the locations the scan shows (an addition to the paper).

    A test patch and its template patches then cover the same surface, whatever the view left
    out, so a patch that a view crops to a sliver is compared with slivers of the templates;
    material a defect moved by less than the tolerance stays in the templates. Template
    patches with fewer than 8 points are left out of their location's bank. A template patch
    the cut leaves whole keeps its feature from fitting: a template's points keep their
    resampling keys, so cutting it again would give the same patch.
    """
    G = len(pb.templates)
    P, d = pb.bank.features.shape[0], pb.bank.features.shape[2]
    F = np.zeros((P, G, d), dtype=np.float32)
    V = np.zeros((P, G), dtype=bool)
    cols = np.nonzero(test_valid)[0]
    tree = reg_tree if reg_tree is not None else cKDTree(reg)
    todo, where = [], []
    for g, t in enumerate(pb.templates):
        dist, _ = tree.query(t, k=1, distance_upper_bound=self.config.banks.support_tolerance * pb.radius, workers=-1)
        keep = np.isfinite(dist)
        if not keep.any():
            continue
        M = self._membership(pb, g)
        full = np.diff(M.indptr)[cols]
        kept = (M[cols] @ keep.astype(np.int32)).astype(np.int64)
        whole = (kept == full) & pb.bank.valid[cols, g]
        F[cols[whole], g] = pb.bank.features[cols[whole], g]
        V[cols[whole], g] = True
        cut = cols[~whole & (kept >= 8)]
        if cut.size:
            ps = self._cropped_template_patches(pb, g, keep, cut)
            todo.append(ps.patches)
            where.append((cut, g))
    if not V.any() and not todo:  # no template surface near the scan: compare with the full templates
        return pb.bank
    self._fill_features(F, todo, where, V)
    return make_bank(self.bank_kind, F, V, **self._bank_args())
