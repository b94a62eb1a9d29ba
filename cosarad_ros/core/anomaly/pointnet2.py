"""PointNet++ multi-scale-grouping (MSG) backbone in pure PyTorch (CPU or GPU, no CUDA extensions).

Qi, Yi, Su, Guibas, "PointNet++: Deep Hierarchical Feature Learning on Point Sets in a Metric
Space", NeurIPS 2017, section 3.3 (multi-scale grouping). The backbone maps a batch of point
patches ``(B, N, 3)`` to one global descriptor ``h`` of ``out_dim`` (1024) channels, as used by
COSARAD (Tarvo, Wan, Chen) as the input of its contrastive head.

Sampling, grouping and the shared MLPs are written with dense tensor operations only:

* farthest point sampling iterates ``npoint`` times over ``(B, N)`` distance tensors,
* the ball query keeps the ``nsample`` nearest neighbours inside the radius and pads missing
  slots with the nearest neighbour (always the centroid itself, which is a member of the set),
* the shared MLPs are ``Linear + BatchNorm1d + ReLU`` applied to the flattened
  ``(B * S * K, C)`` rows, which runs as one GEMM per layer on the CPU.

Two presets are provided (:data:`BACKBONE_PRESETS`): ``"paper"`` with the centroid counts, radii
and widths of the PointNet++ MSG classifier (radii scaled by 2 because COSARAD patches have radius
``R = 2`` instead of the unit sphere), and the default ``"small"`` that keeps the three-level MSG
structure and the 1024-d output but uses fewer centroids and narrower MLPs so that training fits
on a 2-core CPU (see ``docs/anomaly.md`` for the measured cost).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = [
    "SALevelConfig",
    "BackboneConfig",
    "BACKBONE_PRESETS",
    "square_distance",
    "farthest_point_sample",
    "index_points",
    "ball_query",
    "SharedMLP",
    "SetAbstractionMSG",
    "SetAbstractionAll",
    "PointNet2MSG",
]


@dataclass(frozen=True)
class SALevelConfig:
    """One multi-scale set-abstraction level.

    Attributes:
        npoint: number of centroids chosen by farthest point sampling.
        radii: ball radius per scale (patch units, patch radius is 2).
        nsamples: neighbours kept per ball, one per scale.
        mlps: hidden widths of the shared MLP of each scale.
    """

    npoint: int
    radii: tuple[float, ...]
    nsamples: tuple[int, ...]
    mlps: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if not (len(self.radii) == len(self.nsamples) == len(self.mlps)) or not self.radii:
            raise ValueError("radii, nsamples and mlps must have the same non-zero length")
        if self.npoint < 1 or any(r <= 0 for r in self.radii) or any(k < 1 for k in self.nsamples):
            raise ValueError(f"invalid set-abstraction level {self}")

    @property
    def out_channels(self) -> int:
        return sum(m[-1] for m in self.mlps)


@dataclass(frozen=True)
class BackboneConfig:
    """Architecture of :class:`PointNet2MSG`: MSG levels followed by one group-all level."""

    levels: tuple[SALevelConfig, ...]
    global_mlp: tuple[int, ...] = (256, 512, 1024)

    @property
    def out_dim(self) -> int:
        return self.global_mlp[-1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneConfig":
        try:
            levels = tuple(
                SALevelConfig(int(lv["npoint"]), tuple(float(r) for r in lv["radii"]),
                              tuple(int(k) for k in lv["nsamples"]),
                              tuple(tuple(int(c) for c in m) for m in lv["mlps"]))
                for lv in d["levels"])
            return cls(levels=levels, global_mlp=tuple(int(c) for c in d["global_mlp"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed backbone config {d!r}: {exc}") from exc


BACKBONE_PRESETS: dict[str, BackboneConfig] = {
    # PointNet++ MSG classification widths and centroid counts; radii x2 for R = 2 patches.
    "paper": BackboneConfig(levels=(
        SALevelConfig(512, (0.2, 0.4, 0.8), (16, 32, 128),
                      ((32, 32, 64), (64, 64, 128), (64, 96, 128))),
        SALevelConfig(128, (0.4, 0.8, 1.6), (32, 64, 128),
                      ((64, 64, 128), (128, 128, 256), (128, 128, 256))),
    ), global_mlp=(256, 512, 1024)),
    # CPU-sized default: 64 / 16 centroids, narrower MLPs, same 1024-d output.
    "small": BackboneConfig(levels=(
        SALevelConfig(64, (0.3, 0.6, 1.2), (8, 16, 32),
                      ((16, 16, 32), (32, 32, 64), (32, 48, 64))),
        SALevelConfig(16, (0.8, 1.6), (16, 32),
                      ((64, 64, 128), (64, 96, 128))),
    ), global_mlp=(256, 512, 1024)),
    # Lighter still for a shared 2-core CPU (about 4x fewer multiply-adds than "small").
    "cpu": BackboneConfig(levels=(
        SALevelConfig(32, (0.4, 0.8, 1.6), (8, 16, 32),
                      ((16, 16, 32), (16, 24, 32), (24, 32, 48))),
        SALevelConfig(8, (1.0, 2.0), (16, 24),
                      ((48, 64, 96), (48, 64, 96))),
    ), global_mlp=(128, 256, 1024)),
    # For unit tests: tiny and fast.
    "tiny": BackboneConfig(levels=(
        SALevelConfig(16, (0.5, 1.0), (8, 16), ((16, 32), (16, 32))),
        SALevelConfig(4, (1.5,), (8,), ((64,),)),
    ), global_mlp=(64, 128)),
}


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(B, N, M)`` between ``a (B, N, 3)`` and ``b (B, M, 3)``."""
    d = (a * a).sum(-1, keepdim=True) - 2.0 * a @ b.transpose(1, 2) + (b * b).sum(-1).unsqueeze(1)
    return d.clamp_min_(0.0)


def farthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """Farthest point sampling, deterministic (starts at point 0 of each set).

    Args:
        xyz: ``(B, N, 3)``.
        npoint: number of samples (``<= N``).

    Returns:
        ``(B, npoint)`` long indices.
    """
    B, N, _ = xyz.shape
    if npoint > N:
        raise ValueError(f"cannot sample {npoint} points from sets of {N}")
    idx = torch.zeros(B, npoint, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float("inf"), device=xyz.device, dtype=xyz.dtype)
    far = torch.zeros(B, dtype=torch.long, device=xyz.device)
    batch = torch.arange(B, device=xyz.device)
    for i in range(npoint):
        idx[:, i] = far
        c = xyz[batch, far].unsqueeze(1)  # (B, 1, 3)
        dist = torch.minimum(dist, ((xyz - c) ** 2).sum(-1))
        far = dist.argmax(-1)
    return idx


def index_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather ``points (B, N, C)`` with ``idx (B, ...)`` -> ``(B, ..., C)``."""
    B = points.shape[0]
    flat = idx.reshape(B, -1)
    out = torch.gather(points, 1, flat.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
    return out.reshape(*idx.shape, points.shape[-1])


def ball_query(radius: float, nsample: int, xyz: torch.Tensor, new_xyz: torch.Tensor) -> torch.Tensor:
    """Indices of up to ``nsample`` nearest points of ``xyz (B, N, 3)`` within ``radius`` of each
    ``new_xyz (B, S, 3)``; empty slots repeat the nearest point. Returns ``(B, S, nsample)``.
    """
    d = square_distance(new_xyz, xyz)  # (B, S, N)
    k = min(nsample, xyz.shape[1])
    dk, ik = torch.topk(d, k, dim=-1, largest=False)
    outside = dk > radius * radius
    ik = torch.where(outside, ik[..., :1].expand_as(ik), ik)
    if k < nsample:  # fewer points than requested: pad with the nearest one
        ik = torch.cat([ik, ik[..., :1].expand(*ik.shape[:-1], nsample - k)], dim=-1)
    return ik


class SharedMLP(nn.Module):
    """Per-row ``Linear -> BatchNorm1d -> ReLU`` stack applied to the last dimension."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Linear(c, w, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            c = w
        self.net = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return self.net(x.reshape(-1, shape[-1])).reshape(*shape[:-1], self.out_channels)


class SetAbstractionMSG(nn.Module):
    """Multi-scale grouping set abstraction (PointNet++ section 3.3)."""

    def __init__(self, cfg: SALevelConfig, in_channels: int):
        super().__init__()
        self.cfg = cfg
        self.mlps = nn.ModuleList(SharedMLP(in_channels + 3, m) for m in cfg.mlps)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None, *, presorted: bool = False):
        """``xyz (B, N, 3)``, ``feats (B, N, C) | None`` -> ``(new_xyz (B, S, 3), (B, S, C'))``.

        With ``presorted`` the points are already in farthest-point order, so the centroids are
        the first ``npoint`` points (the FPS prefix property) and no sampling is run here.
        """
        S = min(self.cfg.npoint, xyz.shape[1])
        if presorted:
            new_xyz = xyz[:, :S]
        else:
            new_xyz = index_points(xyz, farthest_point_sample(xyz, S))
        # one sorted k-NN query serves every scale: the nearest k of a ball are a prefix
        d = square_distance(new_xyz, xyz)
        kmax = min(max(self.cfg.nsamples), xyz.shape[1])
        dk, ik = torch.topk(d, kmax, dim=-1, largest=False, sorted=True)
        # features and coordinates gathered together, the coordinates then made local in place
        both = xyz if feats is None else torch.cat([feats, xyz], dim=-1)
        c = both.shape[-1] - 3
        outs = []
        for radius, nsample, mlp in zip(self.cfg.radii, self.cfg.nsamples, self.mlps):
            k = min(nsample, kmax)
            idx = torch.where(dk[..., :k] > radius * radius, ik[..., :1].expand(-1, -1, k), ik[..., :k])
            if k < nsample:
                idx = torch.cat([idx, idx[..., :1].expand(-1, -1, nsample - k)], dim=-1)
            grouped = index_points(both, idx)  # (B, S, K, C + 3)
            grouped[..., c:] = (grouped[..., c:] - new_xyz.unsqueeze(2)) / radius  # local, ~unit ball
            outs.append(mlp(grouped).amax(dim=2))  # (B, S, C_s)
        return new_xyz, torch.cat(outs, dim=-1)


class SetAbstractionAll(nn.Module):
    """Group-all level: one shared MLP over every point, then a max pool to a global vector."""

    def __init__(self, widths: tuple[int, ...], in_channels: int):
        super().__init__()
        self.mlp = SharedMLP(in_channels + 3, widths)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([feats, xyz], dim=-1)).amax(dim=1)


class PointNet2MSG(nn.Module):
    """PointNet++ MSG encoder: ``(B, N, 3 + C)`` patches (radius ~2, centred) -> ``(B, out_dim)``.

    Args:
        config: a preset name or a :class:`BackboneConfig`.
        in_channels: ``C``, per-point input features after the coordinates (PointNet++'s optional
            point features, e.g. the deviation from the templates); 0 for coordinates only.
    """

    def __init__(self, config: BackboneConfig | str = "small", in_channels: int = 0):
        super().__init__()
        if in_channels < 0:
            raise ValueError(f"in_channels must be >= 0, got {in_channels}")
        self.in_channels = int(in_channels)
        if isinstance(config, str):
            if config not in BACKBONE_PRESETS:
                raise ValueError(f"unknown backbone preset {config!r}; choose from {sorted(BACKBONE_PRESETS)}")
            config = BACKBONE_PRESETS[config]
        self.config = config
        levels = []
        c = self.in_channels
        for lv in config.levels:
            levels.append(SetAbstractionMSG(lv, c))
            c = lv.out_channels
        self.levels = nn.ModuleList(levels)
        self.global_sa = SetAbstractionAll(config.global_mlp, c)
        self.out_dim = config.out_dim

    def forward(self, xyz: torch.Tensor, *, presorted: bool = False) -> torch.Tensor:
        """``(B, N, 3 + C) -> (B, out_dim)``. ``presorted``: points are in farthest-point order
        (see :func:`cosarad_ros.core.anomaly.patches.fps_order`), which skips sampling.
        """
        if xyz.ndim != 3 or xyz.shape[-1] != 3 + self.in_channels:
            raise ValueError(f"expected patches of shape (B, N, {3 + self.in_channels}), got {tuple(xyz.shape)}")
        feats = xyz[..., 3:] if self.in_channels else None
        pos = xyz[..., :3]
        for level in self.levels:
            pos, feats = level(pos, feats, presorted=presorted)
        return self.global_sa(pos / 2.0, feats)
