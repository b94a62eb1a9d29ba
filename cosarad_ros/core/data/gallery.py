"""PNG pictures of point clouds with their anomalous points highlighted (matplotlib, Agg)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_clouds"]


def _axes_equal(ax, pts):
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    c, r = (lo + hi) / 2, float((hi - lo).max()) / 2 or 1.0
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_zlim(c[2] - r, c[2] + r)


def plot_clouds(items: Sequence[tuple], path, *, columns: int = 4, max_points: int = 5000,
                seed: int = 0, point_size: float = 0.6, dpi: int = 110) -> Path:
    """Draw several clouds in a grid and save a PNG.

    Args:
        items: ``(title, points (N, 3), mask (N,) bool or None)`` tuples. Normal points are
            drawn grey (shaded by height), anomalous ones red and on top; the view looks at the
            side with the most anomalous points.
        path: output ``.png``.
        columns: grid width.
        max_points: normal points drawn per cloud (random subset); all anomalous points are drawn.
        seed: subset seed.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not items:
        raise ValueError("nothing to plot")
    rng = np.random.default_rng(seed)
    n = len(items)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(3.6 * cols, 3.4 * rows))
    for k, (title, pts, mask) in enumerate(items):
        pts = np.asarray(pts, dtype=np.float64)
        mask = np.zeros(len(pts), bool) if mask is None else np.asarray(mask, bool)
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        good = np.nonzero(~mask)[0]
        if len(good) > max_points:
            good = rng.choice(good, max_points, replace=False)
        bad = np.nonzero(mask)[0]
        g = pts[good]
        ax.scatter(g[:, 0], g[:, 1], g[:, 2], s=point_size, c=g[:, 2], cmap="Greys", vmin=g[:, 2].min() -
                   0.5 * np.ptp(g[:, 2]) if len(g) else 0, depthshade=False, linewidths=0)
        if len(bad):
            b = pts[bad]
            ax.scatter(b[:, 0], b[:, 1], b[:, 2], s=point_size * 4, c="red", depthshade=False, linewidths=0)
            # look from the side of the defect
            d = b.mean(axis=0) - pts.mean(axis=0)
            if np.linalg.norm(d) > 1e-12:
                d /= np.linalg.norm(d)
                ax.view_init(elev=float(np.degrees(np.arcsin(np.clip(d[2], -1, 1)))),
                             azim=float(np.degrees(np.arctan2(d[1], d[0]))))
        _axes_equal(ax, pts)
        ax.set_axis_off()
        ax.set_title(f"{title}\n{len(pts)} pts, {len(bad)} anomalous", fontsize=8)
    fig.tight_layout()
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
