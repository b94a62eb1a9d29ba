"""Training augmentations of COSARAD patch triplets (patch units: radius ``R = 2``).

From the COSARAD paper (Tarvo, Wan, Chen): a *shared* global rotation within +-90 degrees applied
to all three patches of a triplet (so the triplet stays consistent), an *independent* rotation
within +-3 degrees per patch, translation within +-0.03, Gaussian noise with sigma 0.005, and
an *edge crop* that removes small spheres of radius ``r in (0.05 R, 0.15 R)`` centred near the
patch edge (mimics partial coverage at the border of a scan). After cropping, each patch is
resampled back to its point count and put in farthest-point order again. Patches may carry
per-point channels after x, y, z (``(n, 3 + C)``): geometric augmentations move the coordinates
only, and the channels travel with their points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import random_rotation
from .patches import PATCH_UNITS_RADIUS, fps_order, resample_patch
from .surfaces import DEVIATION_CLIP, DEVIATION_GAIN

__all__ = ["AugmentConfig", "augment_triplets", "edge_crop", "synthetic_defect", "SYNTHETIC_DEFECTS"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation magnitudes (patch units, degrees).

    Attributes:
        shared_rotation_deg: bound of the rotation shared by the patches of one triplet.
        own_rotation_deg: bound of each patch's independent rotation.
        translation: bound of each patch's uniform per-axis shift.
        noise_std: Gaussian jitter per point.
        crop_probability: chance that a patch gets edge crops.
        crop_max_spheres: at most this many spheres removed per cropped patch.
        crop_radius: ``(min, max)`` sphere radius as a fraction of ``R``.
        crop_edge: sphere centres are patch points farther than ``crop_edge * R`` from the centre.
        fps_prefix: points put back in farthest-point order after cropping.
    """

    shared_rotation_deg: float = 90.0
    own_rotation_deg: float = 3.0
    translation: float = 0.03
    noise_std: float = 0.005
    crop_probability: float = 0.5
    crop_max_spheres: int = 2
    crop_radius: tuple[float, float] = (0.05, 0.15)
    crop_edge: float = 0.8
    fps_prefix: int = 64


def edge_crop(patch: np.ndarray, rng: np.random.Generator, *, n_spheres: int, radius=(0.05, 0.15),
              edge: float = 0.8, R: float = PATCH_UNITS_RADIUS) -> np.ndarray:
    """Remove ``n_spheres`` spheres (radius in ``radius * R``) centred on points near the patch
    edge (farther than ``edge * R`` from the origin). Returns the kept rows ``(m, 3 + C)``;
    never removes more than half of the points.
    """
    pts = patch
    for _ in range(n_spheres):
        r = np.linalg.norm(pts[:, :3], axis=1)
        cand = np.nonzero(r > edge * R)[0]
        if cand.size == 0:
            break
        c = pts[rng.choice(cand), :3]
        rad = rng.uniform(radius[0], radius[1]) * R
        keep = np.linalg.norm(pts[:, :3] - c, axis=1) > rad
        if keep.sum() < 0.5 * len(patch):
            break
        pts = pts[keep]
    return pts


def augment_triplets(triplets: np.ndarray, rng: np.random.Generator,
                     cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Augment a batch of triplets.

    Args:
        triplets: ``(B, 3, n, 3 + C)`` float32 (anchor, positive, negative) patches in patch units.
        rng: random generator.
        cfg: magnitudes.

    Returns:
        ``(B, 3, n, 3 + C)`` float32 augmented patches, each in farthest-point order.
    """
    t = np.asarray(triplets, dtype=np.float64)
    if t.ndim != 4 or t.shape[1] != 3 or t.shape[3] < 3:
        raise ValueError(f"triplets must have shape (B, 3, n, 3 + C), got {t.shape}")
    B, _, n, D = t.shape
    out = np.empty_like(t)
    for b in range(B):
        Rs = random_rotation(rng, cfg.shared_rotation_deg)
        for k in range(3):
            p = t[b, k]
            if cfg.crop_probability > 0 and rng.random() < cfg.crop_probability:
                kept = edge_crop(p, rng, n_spheres=int(rng.integers(1, cfg.crop_max_spheres + 1)),
                                 radius=cfg.crop_radius, edge=cfg.crop_edge)
                if len(kept) < n:
                    p = resample_patch(kept, n, rng)
            Ro = random_rotation(rng, cfg.own_rotation_deg)
            xyz = p[:, :3] @ (Ro @ Rs).T + rng.uniform(-cfg.translation, cfg.translation, size=3)
            if cfg.noise_std > 0:
                xyz = xyz + rng.normal(scale=cfg.noise_std, size=xyz.shape)
            out[b, k, :, :3] = xyz
            out[b, k, :, 3:] = p[:, 3:]
    out = out.astype(np.float32)
    if cfg.fps_prefix > 0:
        out = fps_order(out.reshape(B * 3, n, D), cfg.fps_prefix).reshape(B, 3, n, D)
    return out


SYNTHETIC_DEFECTS = ("bump", "dent", "scratch", "hole")


def synthetic_defect(patch: np.ndarray, rng: np.random.Generator, *, kind: str | None = None,
                     height: tuple[float, float] = (0.04, 0.5), radius: tuple[float, float] = (0.3, 1.0),
                     R: float = PATCH_UNITS_RADIUS, channel_gain: float = DEVIATION_GAIN,
                     channel_clip: float = DEVIATION_CLIP) -> np.ndarray:
    """A geometric defect made in a good patch (patch units), for the weak training objective.

    ``bump`` / ``dent``: points within ``r`` of a spot near the centre move along the local surface
    normal by ``+-h (1 - (d / r)^2)^2``; ``scratch``: a groove of width ``r / 3`` and depth ``h``
    along a random tangent line; ``hole``: points within ``r`` of the spot are removed (the patch is
    resampled back to its size). ``h`` is log-uniform in ``height``, ``r`` uniform in ``radius``;
    the spot lies within ``0.5 R`` of the centre so the defect is inside the patch.

    A patch with a deviation channel (``(n, 4)``, see :mod:`.surfaces`) gets the channel raised by
    the displacement (``channel_gain x |displacement|``, clipped at ``channel_clip``): the moved
    points now deviate from the templates by that much more.

    Returns ``(n, 3 + C)``.
    """
    full = np.asarray(patch, dtype=np.float64)
    p = full[:, :3]
    extra = full[:, 3:]
    n = len(p)
    kind = kind or SYNTHETIC_DEFECTS[int(rng.integers(len(SYNTHETIC_DEFECTS)))]
    if kind not in SYNTHETIC_DEFECTS:
        raise ValueError(f"unknown synthetic defect {kind!r}; choose from {SYNTHETIC_DEFECTS}")
    near = np.nonzero(np.linalg.norm(p, axis=1) < 0.5 * R)[0]
    c = p[rng.choice(near)] if near.size else p[int(np.argmin(np.linalg.norm(p, axis=1)))]
    r = rng.uniform(*radius)
    h = float(np.exp(rng.uniform(np.log(height[0]), np.log(height[1]))))
    local = p[np.linalg.norm(p - c, axis=1) < max(r, 0.4)]
    q = local - local.mean(0) if len(local) >= 3 else p - p.mean(0)
    normal = np.linalg.svd(q, full_matrices=False)[2][-1]
    def moved(disp: np.ndarray) -> np.ndarray:
        out = np.concatenate([p + disp[:, None] * normal, extra], axis=1)
        if extra.shape[1]:
            out[:, 3] = np.minimum(out[:, 3] + channel_gain * np.abs(disp), channel_clip)
        return out

    if kind == "hole":
        keep = np.linalg.norm(p - c, axis=1) > r
        kept = full[keep] if keep.sum() >= 0.3 * n else full
        return resample_patch(kept, n, rng)
    if kind == "scratch":
        t = np.cross(normal, rng.normal(size=3))
        t /= max(np.linalg.norm(t), 1e-12)
        rel = p - c
        along = rel @ t
        across = np.linalg.norm(rel - np.outer(along, t) - np.outer(rel @ normal, normal), axis=1)
        w = max(r / 3.0, 0.08)
        prof = np.clip(1.0 - (across / w) ** 2, 0.0, None) * (np.abs(along) < 2.0 * r)
        return moved(-h * prof)
    d = np.linalg.norm(p - c, axis=1)
    prof = np.clip(1.0 - (d / r) ** 2, 0.0, None) ** 2
    sign = 1.0 if kind == "bump" else -1.0
    return moved(sign * h * prof)
