"""Coverage picture of a view plan (matplotlib, Agg backend; no display needed).

Left and middle: the part seen from two sides, every face coloured by how many planned views
measure it (grey: none). Right: the views around the part (sensor positions numbered in
execution order, optical axes as arrows), in the part frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["face_view_counts", "save_coverage_png"]


def face_view_counts(mesh, plan) -> np.ndarray:
    """``(F,)`` number of planned views measuring each mesh face (the most any of its samples
    gets; faces without a sample take the nearest sample's count).
    """
    from scipy.spatial import cKDTree

    counts = plan.coverage_counts()
    faces = plan.samples.faces
    out = np.full(len(mesh.faces), -1, dtype=int)
    np.maximum.at(out, faces, counts)
    missing = out < 0
    if missing.any():
        tree = cKDTree(plan.samples.points)
        _, nn = tree.query(np.asarray(mesh.triangles_center)[missing])
        out[missing] = counts[nn]
    return out


def save_coverage_png(mesh, plan, path, *, title: str = "", max_faces: int = 20000, dpi: int = 110) -> Path:
    """Write the coverage picture of ``plan`` for ``mesh`` to ``path`` (PNG).

    Args:
        mesh: the planned part (trimesh, part frame).
        plan: its :class:`~cosarad_ros.core.planning.views.ViewPlan`.
        path: output file; parent folders are created.
        title: first line of the figure title.
        max_faces: above this, samples are drawn as points instead of faces.
        dpi: resolution.

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import colors as mcolors
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_views = max(1, len(plan.views))
    cmap = plt.get_cmap("viridis", n_views)
    palette = np.vstack([[0.75, 0.75, 0.75, 1.0], cmap(np.arange(n_views))])   # 0 -> grey
    norm = mcolors.BoundaryNorm(np.arange(-0.5, n_views + 1.5), len(palette))
    listed = mcolors.ListedColormap(palette)

    verts = np.asarray(mesh.vertices)
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    centre, half = (lo + hi) / 2, float(np.max(hi - lo)) / 2 or 1.0
    fig = plt.figure(figsize=(16, 5.6))
    fig.subplots_adjust(left=0.0, right=0.9, bottom=0.02, top=0.88, wspace=0.02)
    use_faces = len(mesh.faces) <= max_faces
    if use_faces:
        fc = np.clip(face_view_counts(mesh, plan), 0, n_views)
        face_colors = listed(norm(fc))
        # simple Lambert shading so the shape reads
        light = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
        shade = 0.55 + 0.45 * np.abs(np.asarray(mesh.face_normals) @ light)
        face_colors[:, :3] *= shade[:, None]
    else:
        sc = np.clip(plan.coverage_counts(), 0, n_views)
    for k, (elev, azim) in enumerate(((30, -60), (30, 120))):
        ax = fig.add_subplot(1, 3, k + 1, projection="3d")
        if use_faces:
            poly = Poly3DCollection(np.asarray(mesh.triangles), facecolors=face_colors, edgecolors="none")
            ax.add_collection3d(poly)
        else:
            p = plan.samples.points
            ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=listed(norm(sc)), s=2, depthshade=False)
        for a, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
            a(c - half, c + half)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=elev, azim=azim)
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
        ax.set_zlabel("z [m]")
        ax.set_title(f"part frame, azimuth {azim} deg")
    # views around the part
    ax = fig.add_subplot(1, 3, 3, projection="3d")
    p = plan.samples.points
    counts = np.clip(plan.coverage_counts(), 0, n_views)
    ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=listed(norm(counts)), s=1, depthshade=False)
    eyes = []
    for i, v in enumerate(plan.views):
        T = v.sensor_pose_in_part()
        e, z = T[:3, 3], T[:3, 2]
        eyes.append(e)
        ax.quiver(e[0], e[1], e[2], z[0], z[1], z[2], length=0.12, color="tab:red", normalize=True)
        ax.text(e[0], e[1], e[2], str(i), color="tab:red")
    if eyes:
        E = np.asarray(eyes)
        ax.plot(E[:, 0], E[:, 1], E[:, 2], "--", color="tab:red", lw=0.8)
        allp = np.vstack([E, p])
    else:
        allp = p
    lo2, hi2 = allp.min(axis=0), allp.max(axis=0)
    c2, h2 = (lo2 + hi2) / 2, float(np.max(hi2 - lo2)) / 2 or 1.0
    for a, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), c2):
        a(c - h2, c + h2)
    ax.set_box_aspect((1, 1, 1))
    ax.set_title("views in execution order")
    sm = plt.cm.ScalarMappable(cmap=listed, norm=norm)
    cb = fig.colorbar(sm, ax=fig.axes, shrink=0.6, ticks=np.arange(0, n_views + 1), pad=0.02)
    cb.set_label("views measuring the surface")
    head = title or "view plan coverage"
    fig.suptitle(f"{head}: {len(plan.views)} views, {100 * plan.coverage:.1f} % of the visible surface "
                 f"({100 * plan.surface_coverage:.1f} % of all), planned in {plan.planning_time:.1f} s")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
