"""Memory banks of template patch features.

* :class:`LocalBank` -- COSARAD's location-aware banks: one bank per patch location ``j`` holding
  the ``G`` template features at that location; a test patch is compared only with the templates'
  patches at the same place, scored by Cohen's effect size (:mod:`.scoring`).
* :class:`GlobalBank` -- the PatchCore-style ablation (Roth et al., "Towards Total Recall in
  Industrial Anomaly Detection", CVPR 2022): every template patch feature in one bank, a test
  patch scored by the distance to its nearest neighbour, wherever that neighbour came from.

Both expose the same interface, so the detector code path is shared:
``score(test_features (P, d), test_valid (P,)) -> (P,)`` (NaN where not scored) and
``leave_one_out() -> (G, P)``, the scores each template gets against the others (good-patch
scores for threshold calibration without defective examples).
"""
from __future__ import annotations

import abc

import numpy as np

from .scoring import local_effect_sizes, pairwise_distances

__all__ = ["MemoryBank", "LocalBank", "GlobalBank", "BANKS", "make_bank"]


class MemoryBank(abc.ABC):
    """Template features ``(P, G, d)`` with a validity mask ``(P, G)``."""

    kind: str = ""

    def __init__(self, features: np.ndarray, valid: np.ndarray | None = None):
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 3:
            raise ValueError(f"bank features must have shape (P, G, d), got {f.shape}")
        if f.shape[1] < 2:
            raise ValueError(f"a memory bank needs at least 2 templates, got {f.shape[1]}")
        v = np.ones(f.shape[:2], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        if v.shape != f.shape[:2]:
            raise ValueError(f"valid mask shape {v.shape} != {f.shape[:2]}")
        self.features = f
        self.valid = v

    @property
    def num_locations(self) -> int:
        return self.features.shape[0]

    @property
    def num_templates(self) -> int:
        return self.features.shape[1]

    def _check(self, test, test_valid):
        t = np.asarray(test, dtype=np.float32)
        if t.shape != (self.num_locations, self.features.shape[2]):
            raise ValueError(f"test features must have shape {(self.num_locations, self.features.shape[2])}, "
                             f"got {t.shape}")
        tv = np.ones(len(t), dtype=bool) if test_valid is None else np.asarray(test_valid, dtype=bool)
        return t, tv

    @abc.abstractmethod
    def score(self, test, test_valid=None) -> np.ndarray:
        """Patch scores ``(P,)``; NaN where the test patch is invalid or the location unscorable."""

    @abc.abstractmethod
    def leave_one_out(self) -> np.ndarray:
        """``(G, P)`` scores of each template against a bank of the other templates."""


class LocalBank(MemoryBank):
    """One bank per location; Cohen's d of test-to-template vs template-to-template distances.

    Args:
        min_std: floor of the pooled standard deviation in feature-distance units.
        std_prior_weight: shrinkage of each location's pooled variance toward the median over
            locations (:func:`.scoring.local_effect_sizes`, ``prior_weight``; 0 = the paper).
    """

    kind = "local"

    def __init__(self, features, valid=None, *, min_std: float = 0.02, std_prior_weight: float = 0.0):
        super().__init__(features, valid)
        self.min_std = float(min_std)
        self.std_prior_weight = float(std_prior_weight)
        if not (np.isfinite(self.std_prior_weight) and self.std_prior_weight >= 0):
            raise ValueError(f"std_prior_weight must be >= 0, got {std_prior_weight}")

    def score(self, test, test_valid=None) -> np.ndarray:
        t, tv = self._check(test, test_valid)
        d = local_effect_sizes(self.features, t, bank_valid=self.valid, min_std=self.min_std,
                               prior_weight=self.std_prior_weight)
        d[~tv] = np.nan
        return d

    def leave_one_out(self) -> np.ndarray:
        G = self.num_templates
        out = np.full((G, self.num_locations), np.nan)
        if G < 3:  # Cohen's d needs two templates left in the bank
            return out
        for g in range(G):
            rest = [i for i in range(G) if i != g]
            d = local_effect_sizes(self.features[:, rest], self.features[:, g], bank_valid=self.valid[:, rest],
                                   min_std=self.min_std, prior_weight=self.std_prior_weight)
            d[~self.valid[:, g]] = np.nan
            out[g] = d
        return out


class GlobalBank(MemoryBank):
    """All template patches in one bank; score = distance to the nearest bank feature."""

    kind = "global"

    def _nn(self, bank: np.ndarray, query: np.ndarray) -> np.ndarray:
        out = np.empty(len(query))
        for s in range(0, len(query), 512):
            out[s:s + 512] = pairwise_distances(query[s:s + 512], bank).min(1)
        return out

    def score(self, test, test_valid=None) -> np.ndarray:
        t, tv = self._check(test, test_valid)
        bank = self.features[self.valid]
        out = np.full(len(t), np.nan)
        if tv.any():
            out[tv] = self._nn(bank.astype(np.float64), t[tv].astype(np.float64))
        return out

    def leave_one_out(self) -> np.ndarray:
        G = self.num_templates
        out = np.full((G, self.num_locations), np.nan)
        for g in range(G):
            keep = self.valid.copy()
            keep[:, g] = False
            q = self.valid[:, g]
            if q.any():
                out[g, q] = self._nn(self.features[keep].astype(np.float64), self.features[q, g].astype(np.float64))
        return out


BANKS = {"local": LocalBank, "global": GlobalBank}


def make_bank(kind: str, features, valid=None, **kwargs) -> MemoryBank:
    """Bank by name: ``"local"`` (COSARAD) or ``"global"`` (PatchCore-style ablation)."""
    if kind not in BANKS:
        raise ValueError(f"unknown memory bank {kind!r}; choose from {sorted(BANKS)}")
    if kind == "global":
        kwargs.pop("min_std", None)
        kwargs.pop("std_prior_weight", None)
    return BANKS[kind](features, valid, **kwargs)
