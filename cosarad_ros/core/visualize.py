"""Pictures people would rather look at than read: scored clouds as colours and PNGs.

Matplotlib with the Agg backend (no display needed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["scores_to_rgb", "render_scored_cloud"]


def scores_to_rgb(scores, *, vmin: float | None = None, vmax: float | None = None,
                  cmap: str = "turbo") -> np.ndarray:
    """Map ``(N,)`` scores to ``(N, 3)`` uint8 colours (low = blue, high = red with ``turbo``).

    ``vmin``/``vmax`` default to the 1st and 99th percentile; non-finite scores are grey.
    """
    import matplotlib

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = np.isfinite(s)
    if vmin is None:
        vmin = float(np.percentile(s[finite], 1)) if finite.any() else 0.0
    if vmax is None:
        vmax = float(np.percentile(s[finite], 99)) if finite.any() else 1.0
    if vmax <= vmin:
        vmax = vmin + 1e-12
    t = np.clip((np.where(finite, s, vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    rgb = (matplotlib.colormaps[cmap](t)[:, :3] * 255.0).round().astype(np.uint8)
    rgb[~finite] = 128
    return rgb


def render_scored_cloud(path: str | Path, points, scores, *, threshold: float | None = None,
                        boxes: Sequence[tuple[np.ndarray, np.ndarray]] = (), title: str = "",
                        max_points: int = 40000, views: Sequence[tuple[float, float]] = ((25, -60), (25, 120)),
                        seed: int = 0) -> Path:
    """Write a PNG of a point cloud coloured by score, from a few viewing angles.

    Args:
        path: output ``.png``.
        points: ``(N, 3)``; scores: ``(N,)``.
        threshold: drawn on the colour bar when given.
        boxes: ``(centre (3,), extent (3,))`` of defects, drawn as wire boxes.
        title: figure title.
        max_points: random subset drawn for speed.
        views: ``(elevation, azimuth)`` in degrees, one panel each.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = np.asarray(points, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) != len(sc):
        raise ValueError(f"points (N, 3) and scores (N,) must match, got {pts.shape} and {sc.shape}")
    if len(pts) == 0:
        raise ValueError("nothing to render: 0 points")
    if len(pts) > max_points:
        idx = np.random.default_rng(seed).choice(len(pts), max_points, replace=False)
        pts, sc = pts[idx], sc[idx]
    order = np.argsort(np.nan_to_num(sc, nan=-np.inf))  # high scores drawn last (on top)
    pts, sc = pts[order], sc[order]
    finite = np.isfinite(sc)
    vmin = float(np.percentile(sc[finite], 1)) if finite.any() else 0.0
    vmax = float(max(np.percentile(sc[finite], 99.5), threshold or -np.inf)) if finite.any() else 1.0
    fig = plt.figure(figsize=(5.5 * len(views), 5.2))
    lo, hi = pts.min(0), pts.max(0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2
    sm = None
    for k, (elev, azim) in enumerate(views):
        ax = fig.add_subplot(1, len(views), k + 1, projection="3d")
        sm = ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=sc, cmap="turbo", vmin=vmin, vmax=vmax,
                        s=1.0, linewidths=0)
        for c, e in boxes:
            _wire_box(ax, np.asarray(c, float), np.asarray(e, float))
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_zlim(centre[2] - half, centre[2] + half)
        ax.view_init(elev=elev, azim=azim)
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
        ax.set_zlabel("z [m]")
        ax.tick_params(labelsize=6)
    cb = fig.colorbar(sm, ax=fig.axes, shrink=0.7, label="anomaly score")
    if threshold is not None and np.isfinite(threshold):
        cb.ax.axhline(threshold, color="k", lw=2)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _wire_box(ax, centre, extent):
    h = np.maximum(extent, 1e-4) / 2
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * h + centre
    for i in range(8):
        for j in range(i + 1, 8):
            if np.sum(np.abs(np.array(divmod(i, 4)[0:1] + divmod(i % 4, 2))
                             - np.array(divmod(j, 4)[0:1] + divmod(j % 4, 2)))) == 1:
                ax.plot(*zip(corners[i], corners[j]), color="k", lw=1.2)
