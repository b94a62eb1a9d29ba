"""Triplet mining and margin control of COSARAD training.

Definitions for a triplet (anchor ``a``, positive ``p``, negative ``n``) with feature distances
``d_ap``, ``d_an`` and margin ``m`` (Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015, sec. 3.2):

* *hard*:      ``d_an < d_ap``
* *semi-hard*: ``d_ap <= d_an < d_ap + m``
* *easy*:      ``d_an >= d_ap + m`` (zero loss)

COSARAD's miner keeps all semi-hard triplets of a batch and, when they are fewer than
``min_yield`` of the batch, tops the selection up with hard triplets (hardest first) and then
with easy ones (those closest to the margin first). The *yield* is the fraction of a batch that
is semi-hard. Mining distances come from an exponential-moving-average copy of the network
(momentum 0.99, as in MoCo: He et al., CVPR 2020), which changes slowly and so classifies
triplets more stably than the network being trained. The margin starts at 0.6 and is adapted
after each epoch so that the epoch's mean yield stays inside ``[0.5, 0.75]``: a low yield means
most triplets already clear the margin (raise it), a high yield means the margin is loose for
too many triplets (lower it).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["MiningResult", "select_triplets", "EmaMiner", "MarginController", "triplet_loss"]


@dataclass(frozen=True)
class MiningResult:
    """Which triplets of a batch to train on.

    Attributes:
        selected: ``(K,)`` indices into the batch.
        n_hard, n_semi, n_easy: counts of each kind in the batch.
        yield_: semi-hard fraction of the batch.
    """

    selected: np.ndarray
    n_hard: int
    n_semi: int
    n_easy: int
    yield_: float


def select_triplets(d_ap, d_an, margin: float, *, min_yield: float = 0.5) -> MiningResult:
    """Semi-hard triplets, topped up with hard then easy ones to at least ``min_yield`` of the batch.

    Args:
        d_ap, d_an: ``(B,)`` anchor-positive and anchor-negative distances.
        margin: triplet margin ``m``.
        min_yield: least fraction of the batch selected.
    """
    d_ap = np.asarray(d_ap, dtype=np.float64).ravel()
    d_an = np.asarray(d_an, dtype=np.float64).ravel()
    if d_ap.shape != d_an.shape or d_ap.size == 0:
        raise ValueError("d_ap and d_an must be non-empty and of equal length")
    gap = d_an - d_ap
    hard = gap < 0
    semi = (gap >= 0) & (gap < margin)
    easy = ~(hard | semi)
    B = d_ap.size
    need = int(np.ceil(min_yield * B))
    sel = list(np.nonzero(semi)[0])
    if len(sel) < need:
        h = np.nonzero(hard)[0]
        h = h[np.argsort(gap[h])]  # most negative gap (hardest) first
        sel += list(h[: need - len(sel)])
    if len(sel) < need:
        e = np.nonzero(easy)[0]
        e = e[np.argsort(gap[e])]  # closest to the margin first
        sel += list(e[: need - len(sel)])
    return MiningResult(np.sort(np.asarray(sel, dtype=np.int64)), int(hard.sum()), int(semi.sum()),
                        int(easy.sum()), float(semi.sum()) / B)


class EmaMiner:
    """Mines with an exponential-moving-average copy of ``model`` (``momentum`` 0.99).

    Call :meth:`update` after every optimiser step; :meth:`distances` returns ``(d_ap, d_an)``
    computed by the EMA network in eval mode without gradients.
    """

    def __init__(self, model: nn.Module, *, momentum: float = 0.99):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        m = self.momentum
        for pe, p in zip(self.ema.parameters(), model.parameters()):
            pe.mul_(m).add_(p.detach(), alpha=1.0 - m)
        for be, b in zip(self.ema.buffers(), model.buffers()):
            if be.dtype.is_floating_point:
                be.mul_(m).add_(b.detach(), alpha=1.0 - m)
            else:
                be.copy_(b)

    @torch.no_grad()
    def distances(self, triplets: torch.Tensor, *, presorted: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``triplets (B, 3, n, 3)`` -> EMA-feature distances ``(d_ap (B,), d_an (B,))``."""
        B = triplets.shape[0]
        z = self.ema(triplets.reshape(B * 3, *triplets.shape[2:]), presorted=presorted).reshape(B, 3, -1)
        d_ap = (z[:, 0] - z[:, 1]).norm(dim=-1)
        d_an = (z[:, 0] - z[:, 2]).norm(dim=-1)
        return d_ap.cpu().numpy(), d_an.cpu().numpy()

    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict(), "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state["ema"])
        self.momentum = float(state["momentum"])


@dataclass
class MarginController:
    """Keeps the epoch yield inside ``[low, high]`` by scaling the margin by ``step``."""

    margin: float = 0.6
    low: float = 0.5
    high: float = 0.75
    step: float = 1.15
    min_margin: float = 0.05
    max_margin: float = 2.0

    def update(self, epoch_yield: float) -> float:
        """Adapt and return the margin for the next epoch."""
        if epoch_yield < self.low:
            self.margin = min(self.margin * self.step, self.max_margin)
        elif epoch_yield > self.high:
            self.margin = max(self.margin / self.step, self.min_margin)
        return self.margin


def triplet_loss(z: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean triplet loss ``max(0, d_ap - d_an + m)`` of ``z (K, 3, d)`` (anchor, positive, negative)."""
    d_ap = (z[:, 0] - z[:, 1]).norm(dim=-1)
    d_an = (z[:, 0] - z[:, 2]).norm(dim=-1)
    return torch.relu(d_ap - d_an + margin).mean()
