"""Procedural CSG parts and package meshes: geometry, recorded holes, catalogue, metadata."""
from __future__ import annotations

import math
import os

import numpy as np
import open3d as o3d
import pytest

from cosarad_ros.core.data.package_meshes import PACKAGE_MESHES, available_package_meshes, load_package_mesh
from cosarad_ros.core.data.parts import PART_FAMILIES, make_part, part_catalogue

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scene(mesh):
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    return scene


def _ray_hits(scene, origin, direction, length):
    ray = np.concatenate([origin, direction]).astype(np.float32)[None]
    t = scene.cast_rays(o3d.core.Tensor(ray))["t_hit"].numpy()[0]
    return bool(np.isfinite(t) and t < length)


@pytest.mark.parametrize("family", sorted(PART_FAMILIES))
def test_family_builds_watertight_part_with_real_holes(family):
    part = make_part(family, seed=4)
    m = part.mesh
    assert m.is_watertight and m.body_count == 1 and m.volume > 0
    assert 0.015 < m.extents.max() < 0.2  # metres, part-like
    assert m.bounds[0][2] == pytest.approx(0.0, abs=1e-9)  # rests on z = 0
    assert part.holes, "every family drills holes"
    scene = _scene(m)
    for h in part.holes:
        c, ax, r = np.asarray(h.centre), np.asarray(h.axis), h.diameter / 2
        start = c - ax * 1e-3
        # along the hole axis nothing is hit before the hole's depth
        assert not _ray_hits(scene, start, ax, h.depth + 1e-3 - 2e-4), (family, h)
        # a parallel ray just outside the hole wall hits material right at the surface
        side = np.cross(ax, [1.0, 0, 0] if abs(ax[0]) < 0.9 else [0, 1.0, 0])
        side /= np.linalg.norm(side)
        assert _ray_hits(scene, start + side * (r + 4e-4), ax, 3e-3), (family, h)


def test_dimensions_match_params():
    p = make_part("block", seed=2)
    L, W, H = (p.params[k] for k in ("length", "width", "height"))
    np.testing.assert_allclose(np.sort(p.extents), np.sort([L, W, H]), atol=1e-6)
    f = make_part("flange", seed=2)
    assert f.extents[0] == pytest.approx(f.params["diameter"], rel=1e-3)
    assert f.extents[2] == pytest.approx(f.params["thickness"] + f.params["hub_height"], abs=2e-5)
    assert len(f.holes) == 1 + f.params["bolt_count"]


def test_hole_edit_changes_volume_as_expected():
    p = make_part("block", seed=5)
    h = p.holes[0]
    bigger = p.with_hole_edit(0, diameter=h.diameter + 1e-3)
    expected = math.pi / 4 * ((h.diameter + 1e-3) ** 2 - h.diameter ** 2) * h.depth
    assert p.mesh.volume - bigger.mesh.volume == pytest.approx(expected, rel=0.02)
    moved = p.with_hole_edit(0, offset=(1e-3, 5e-4, 0.0))
    assert moved.holes[0].centre == pytest.approx(np.add(h.centre, (1e-3, 5e-4, 0.0)))
    assert moved.mesh.volume == pytest.approx(p.mesh.volume, rel=1e-4)
    with pytest.raises(ValueError, match="no hole"):
        p.with_hole_edit(99, diameter=0.005)


def test_catalogue_has_near_duplicates():
    cat = part_catalogue(36, seed=0)
    names = [p.name for p in cat]
    assert len(cat) == 36 and len(set(names)) == 36
    assert {p.family for p in cat} == set(PART_FAMILIES)
    base = {p.name: p for p in cat}
    dups = [p for p in cat if "_d" in p.name]
    assert len(dups) == 12
    same_box = 0
    for d in dups:
        b = base[d.name.rsplit("_d", 1)[0]]
        diff = [k for k in b.params if b.params[k] != d.params[k]]
        assert len(diff) == 1
        delta_mm = abs(d.params[diff[0]] - b.params[diff[0]]) * 1e3
        assert 1.0 - 1e-6 <= delta_mm <= 2.0 + 1e-6
        box = np.abs(np.sort(d.extents) - np.sort(b.extents)).max() * 1e3
        assert box <= 2.0 + 1e-6
        if box < 1e-6:
            same_box += 1
            assert abs(d.mesh.volume - b.mesh.volume) > 1e-9  # same box, different part
    assert same_box >= 3


def test_catalogue_deterministic_and_metadata_in_mm():
    a = part_catalogue(5, seed=3)
    b = part_catalogue(5, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.mesh.vertices, y.mesh.vertices)
    meta = a[0].metadata()
    assert meta["units"] == "mm" and meta["label"] == a[0].name
    np.testing.assert_allclose(meta["bounding_box"], a[0].extents * 1e3, atol=1e-3)
    assert meta["holes"][0]["diameter"] == pytest.approx(a[0].holes[0].diameter * 1e3)


def test_bad_part_requests():
    with pytest.raises(ValueError, match="unknown part family"):
        make_part("gear")
    with pytest.raises(ValueError):
        part_catalogue(0)


@pytest.mark.skipif(not available_package_meshes(), reason="no package meshes installed")
def test_package_meshes_loaded_in_place_and_normalised():
    names = available_package_meshes()
    for name in names[:4]:
        part = load_package_mesh(name, size=0.07)
        assert part.extents.max() == pytest.approx(0.07, rel=1e-9)
        assert part.mesh.bounds[0][2] == pytest.approx(0.0, abs=1e-12)
        assert os.path.isfile(part.source)
        assert not os.path.abspath(part.source).startswith(REPO + os.sep + "cosarad_ros")
        assert len(part.mesh.faces) >= 2000
    with pytest.raises(ValueError, match="unknown package mesh"):
        load_package_mesh("no_such_mesh")
    with pytest.raises(ValueError, match="size"):
        load_package_mesh(names[0], size=0)
    assert set(names) <= set(PACKAGE_MESHES)
