"""Shared fixtures of the CAD tests (no tests here): procedural parts made with manifold3d CSG
through trimesh, and a small Open3D ray-casting scanner for partial views."""
from __future__ import annotations

import numpy as np
import trimesh

from cosarad_ros.core.geometry import look_at, random_rotation

MM = 0.001


def box(w, h, l):
    """Box of extents (w, h, l) [m] centred at the origin."""
    return trimesh.creation.box((w, h, l))


def drilled_block(w, h, l, holes, *, through=True):
    """Block with vertical holes [(x, y, d)] (m) drilled from the top face (z = l / 2).

    Returns (mesh, metadata dict in metres with the holes)."""
    m = box(w, h, l)
    depth = l * 1.5 if through else l / 2
    meta_holes = []
    for x, y, d in holes:
        cyl = trimesh.creation.cylinder(radius=d / 2, height=depth, sections=64)
        z0 = l / 2 - (depth / 2 if not through else 0.0)
        cyl.apply_translation((x, y, z0 if not through else 0.0))
        m = m.difference(cyl, engine="manifold")
        meta_holes.append({"centre": [x, y, l / 2], "diameter": d, "axis": [0, 0, 1],
                           "depth": float(l if through else l / 2)})
    return m, {"holes": meta_holes}


def l_bracket(a, b, t, width):
    """L-shaped bracket: legs a and b long, t thick, `width` wide."""
    leg1 = box(a, width, t)
    leg1.apply_translation((a / 2, 0, t / 2))
    leg2 = box(t, width, b)
    leg2.apply_translation((t / 2, 0, b / 2))
    return leg1.union(leg2, engine="manifold")


def flange(d_out, d_in, thickness):
    outer = trimesh.creation.cylinder(radius=d_out / 2, height=thickness, sections=96)
    inner = trimesh.creation.cylinder(radius=d_in / 2, height=thickness * 2, sections=96)
    return outer.difference(inner, engine="manifold")


def catalogue() -> dict[str, tuple[trimesh.Trimesh, dict]]:
    """30+ part types in metres, incl. near-duplicates differing by 1-2 mm and equal-box pairs."""
    parts: dict[str, tuple[trimesh.Trimesh, dict]] = {}
    dims = [(20, 40, 60), (25, 40, 60), (30, 45, 70), (15, 50, 90), (35, 35, 80), (10, 60, 60)]
    for i, (w, h, l) in enumerate(dims):
        parts[f"block_{i}"] = (box(w * MM, h * MM, l * MM), {})
    # near duplicates of block_0 and block_2 (1 and 2 mm)
    parts["block_0_l61"] = (box(20 * MM, 40 * MM, 61 * MM), {})
    parts["block_0_w22"] = (box(22 * MM, 40 * MM, 60 * MM), {})
    parts["block_2_h46"] = (box(30 * MM, 46 * MM, 70 * MM), {})
    # equal box to block_2 but with holes; and with different hole sizes
    for name, holes in [("plate_a", [(0, 0, 8 * MM)]), ("plate_b", [(0, 0, 10 * MM)]),
                        ("plate_c", [(-8 * MM, 10 * MM, 6 * MM), (8 * MM, -10 * MM, 6 * MM)])]:
        m, meta = drilled_block(30 * MM, 45 * MM, 70 * MM, [(x, y, d) for x, y, d in holes])
        parts[name] = (m, meta)
    m, meta = drilled_block(40 * MM, 60 * MM, 12 * MM, [(-10 * MM, -15 * MM, 6 * MM), (10 * MM, 15 * MM, 8 * MM)])
    parts["insert_a"] = (m, meta)
    m, meta = drilled_block(40 * MM, 60 * MM, 13 * MM, [(-10 * MM, -15 * MM, 6 * MM), (10 * MM, 15 * MM, 8 * MM)])
    parts["insert_a_t13"] = (m, meta)
    for i, (a, b, t, wd) in enumerate([(50, 40, 5, 30), (60, 40, 5, 30), (50, 50, 6, 25), (70, 30, 4, 40)]):
        parts[f"bracket_{i}"] = (l_bracket(a * MM, b * MM, t * MM, wd * MM), {})
    parts["bracket_0_a52"] = (l_bracket(52 * MM, 40 * MM, 5 * MM, 30 * MM), {})
    for i, (do, di, t) in enumerate([(60, 20, 10), (60, 30, 10), (80, 30, 12), (50, 20, 15)]):
        parts[f"flange_{i}"] = (flange(do * MM, di * MM, t * MM), {})
    parts["flange_0_t11"] = (flange(60 * MM, 20 * MM, 11 * MM), {})
    for i, (r, hgt) in enumerate([(15, 40), (20, 30), (12, 70)]):
        parts[f"pin_{i}"] = (trimesh.creation.cylinder(radius=r * MM, height=hgt * MM, sections=96), {})
    parts["pin_1_h32"] = (trimesh.creation.cylinder(radius=20 * MM, height=32 * MM, sections=96), {})
    for i, (w, h, l, ch) in enumerate([(30, 45, 70, 4), (20, 40, 60, 5)]):
        m = box(w * MM, h * MM, l * MM)
        cut = box(ch * 2 * MM, h * 2 * MM, ch * 2 * MM)
        cut.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 4, (0, 1, 0)))
        cut.apply_translation((w / 2 * MM, 0, l / 2 * MM))
        parts[f"chamfered_{i}"] = (m.difference(cut, engine="manifold"), {})
    return parts


def raycast_scan(mesh, *, views: int = 3, resolution: int = 160, noise: float = 3e-5, elevation_deg=(35, 65),
                 distance: float = 0.35, fov_deg: float = 30.0, seed: int = 0, pose=True):
    """Partial scan of `mesh` from `views` viewpoints above it (bottom never seen).

    Returns (points (N, 3) in a random frame when `pose`, T (4, 4) mesh -> scan frame)."""
    import open3d as o3d

    rng = np.random.default_rng(seed)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
    centre = mesh.bounds.mean(axis=0)
    out = []
    az0 = rng.uniform(0, 2 * np.pi)
    for v in range(views):
        az = az0 + 2 * np.pi * v / views + rng.uniform(-0.3, 0.3)
        el = np.deg2rad(rng.uniform(*elevation_deg))
        eye = centre + distance * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        T = look_at(eye, centre)
        f = 0.5 * resolution / np.tan(np.deg2rad(fov_deg) / 2)
        u, w = np.meshgrid(np.arange(resolution), np.arange(resolution))
        dirs = np.stack([(u.ravel() - resolution / 2) / f, (w.ravel() - resolution / 2) / f,
                         np.ones(u.size)], axis=1)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        dirs_w = dirs @ T[:3, :3].T
        rays = np.hstack([np.repeat(eye[None], len(dirs_w), 0), dirs_w]).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy()
        ok = np.isfinite(t)
        tt = t[ok] + rng.normal(scale=noise, size=ok.sum())
        out.append(eye + dirs_w[ok] * tt[:, None])
    pts = np.vstack(out)
    Tp = np.eye(4)
    if pose:
        Tp[:3, :3] = random_rotation(rng)
        Tp[:3, 3] = rng.uniform(-0.2, 0.2, 3)
    return pts @ Tp[:3, :3].T + Tp[:3, 3], Tp


def write_library(folder, parts) -> None:
    """Write (mesh, metadata) parts as <label>.stl (+ .yaml) into `folder`."""
    import yaml

    for label, (mesh, meta) in parts.items():
        mesh.export(folder / f"{label}.stl")
        if meta:
            (folder / f"{label}.yaml").write_text(yaml.safe_dump(meta))


# ---------------------------------------------------------------------------------------------
# Defects on the top face (z = top) of a part, made with CSG; each returns (mesh, truth dict)
# ---------------------------------------------------------------------------------------------
def add_scratch(mesh, centre_xy, *, length, width, depth, angle, top):
    """Straight groove of `length` x `width` x `depth` [m] on the face z = top."""
    cut = box(length, width, 2 * depth)
    cut.apply_transform(trimesh.transformations.rotation_matrix(angle, (0, 0, 1)))
    cut.apply_translation((centre_xy[0], centre_xy[1], top))
    return mesh.difference(cut, engine="manifold"), {
        "type": "scratch", "centre": np.array([centre_xy[0], centre_xy[1], top - depth / 2]),
        "size": length, "depth": depth}


def add_dent(mesh, centre_xy, *, diameter, depth, top):
    """Spherical-cap dent of opening `diameter` and `depth` [m] on the face z = top."""
    a = diameter / 2
    R = (a * a + depth * depth) / (2 * depth)
    sph = trimesh.creation.icosphere(subdivisions=5, radius=R)
    sph.apply_translation((centre_xy[0], centre_xy[1], top + R - depth))
    return mesh.difference(sph, engine="manifold"), {
        "type": "dent", "centre": np.array([centre_xy[0], centre_xy[1], top - depth / 2]),
        "size": diameter, "depth": depth}


def insert_plate(holes, *, w=60 * MM, h=40 * MM, t=12 * MM):
    """Mold-insert-like plate (w x h x t) with through holes [(x, y, d)] from the top face z = t/2."""
    m, meta = drilled_block(w, h, t, holes)
    return m, meta
