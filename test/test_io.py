"""Tests of cosarad_ros.core.io: round trips, cross-checks against Open3D / trimesh, bad files."""
from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import trimesh

from cosarad_ros.core import io


def _cloud(n=500, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 3)) * 0.05
    nrm = rng.normal(size=(n, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    col = rng.integers(0, 256, size=(n, 3)) / 255.0
    return pts, nrm, col


@pytest.mark.parametrize("ext", [".pcd", ".ply"])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_exact(tmp_path, ext, binary, dtype):
    pts, nrm, col = _cloud()
    path = io.write_points(tmp_path / f"c{ext}", pts, normals=nrm, colors=col, binary=binary, dtype=dtype)
    got = io.read_point_cloud(path)
    cast = np.dtype(dtype)
    np.testing.assert_array_equal(got.points, pts.astype(cast).astype(np.float64))
    np.testing.assert_array_equal(got.normals, nrm.astype(cast).astype(np.float64))
    np.testing.assert_allclose(got.colors, col, atol=1e-12)
    assert not got.sampled_from_mesh and len(got) == len(pts)


@pytest.mark.parametrize("ext", [".xyz", ".txt", ".csv", ".xyzn"])
def test_text_round_trip(tmp_path, ext):
    pts, nrm, _ = _cloud(50)
    path = io.write_points(tmp_path / f"c{ext}", pts, normals=nrm, dtype="float64")
    got = io.read_point_cloud(path)
    np.testing.assert_array_equal(got.points, pts)
    if ext == ".xyzn":
        np.testing.assert_array_equal(got.normals, nrm)


def test_open3d_reads_our_pcd_and_ply(tmp_path):
    pts, nrm, _ = _cloud()
    for ext in (".pcd", ".ply"):
        for binary in (True, False):
            path = io.write_points(tmp_path / f"b{int(binary)}{ext}", pts, normals=nrm, binary=binary)
            pc = o3d.io.read_point_cloud(str(path))
            np.testing.assert_allclose(np.asarray(pc.points), pts.astype(np.float32), atol=1e-7)
            np.testing.assert_allclose(np.asarray(pc.normals), nrm.astype(np.float32), atol=1e-7)


@pytest.mark.parametrize("mode", ["ascii", "binary", "compressed"])
def test_we_read_open3d_pcd(tmp_path, mode):
    pts, nrm, col = _cloud(3000)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pc.normals = o3d.utility.Vector3dVector(nrm)
    pc.colors = o3d.utility.Vector3dVector(col)
    path = tmp_path / f"o3d_{mode}.pcd"
    assert o3d.io.write_point_cloud(str(path), pc, write_ascii=(mode == "ascii"),
                                    compressed=(mode == "compressed"))
    if mode == "compressed":
        assert b"binary_compressed" in path.read_bytes()[:400]
    got = io.read_point_cloud(path)
    ref = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(got.points, np.asarray(ref.points), atol=1e-6)
    np.testing.assert_allclose(got.normals, np.asarray(ref.normals), atol=1e-6)
    np.testing.assert_allclose(got.colors, np.asarray(ref.colors), atol=1e-6)


def test_pcd_nan_points_dropped(tmp_path):
    path = tmp_path / "organised.pcd"
    path.write_text("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 2\nHEIGHT 2\n"
                    "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 4\nDATA ascii\n1 2 3\nnan nan nan\n4 5 6\nnan nan nan\n")
    np.testing.assert_array_equal(io.read_points(path), [[1, 2, 3], [4, 5, 6]])


def test_lzf_back_reference():
    # literal "abc" (ctrl 2), then back reference len 3+2? -> ctrl (1<<5) | 0 , offset 2 => copy "abc"
    data = bytes([2]) + b"abc" + bytes([(1 << 5) | 0, 2])
    assert io.lzf_decompress(data, 6) == b"abcabc"
    with pytest.raises(ValueError, match="LZF"):
        io.lzf_decompress(data, 7)


def test_mesh_read_and_sample(tmp_path):
    box = trimesh.creation.box(extents=(0.1, 0.2, 0.3))
    for ext in (".stl", ".obj", ".off", ".ply"):
        path = io.write_mesh(tmp_path / f"box{ext}", box)
        mesh = io.read_mesh(path)
        assert abs(mesh.area - box.area) < 1e-6  # STL stores float32
        cloud = io.read_point_cloud(path, mesh_samples=2000)
        assert cloud.sampled_from_mesh and cloud.points.shape == (2000, 3)
        assert np.abs(cloud.points).max(axis=0) == pytest.approx([0.05, 0.1, 0.15], abs=1e-6)


def test_sample_mesh_area_uniform_and_deterministic():
    box = trimesh.creation.box(extents=(1.0, 1.0, 4.0))  # side faces hold 16/18 of the area
    pts, nrm, faces = io.sample_mesh(box, 20000, seed=3, return_faces=True)
    pts2, _ = io.sample_mesh(box, 20000, seed=3)
    np.testing.assert_array_equal(pts, pts2)
    on_caps = np.abs(nrm[:, 2]) > 0.5
    assert on_caps.mean() == pytest.approx(2 / 18, abs=0.01)
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0)
    # points lie on the surface: on at least one face plane of the box
    d = np.min(np.abs(np.abs(pts) - [0.5, 0.5, 2.0]), axis=1)
    assert d.max() < 1e-9
    assert np.all(box.face_normals[faces] == nrm) or np.allclose(box.face_normals[faces], nrm)


def test_labelled_points_round_trip(tmp_path):
    pts, _, _ = _cloud(100)
    lab = np.arange(100) % 3 == 0
    for delim in (" ", ","):
        p = io.write_labelled_points(tmp_path / f"gt{delim!r}.txt", pts, lab, delimiter=delim)
        got_p, got_l = io.read_labelled_points(p)
        np.testing.assert_array_equal(got_l, lab)
        # text holds the shortest decimal of each float32: it reads back to the same float32
        np.testing.assert_array_equal(got_p.astype(np.float32), pts.astype(np.float32))


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        io.read_points("/nonexistent/cloud.pcd")
    with pytest.raises(FileNotFoundError):
        io.read_mesh("/nonexistent/part.stl")


@pytest.mark.parametrize("name,content,match", [
    ("empty.pcd", b"", "empty"),
    ("empty.xyz", b"", "empty"),
    ("comments.xyz", b"# nothing\n\n", "no points"),
    ("nohdr.pcd", b"1 2 3\n4 5 6\n", "DATA|PCD"),
    ("trunc.pcd", b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 10\n"
                  b"HEIGHT 1\nPOINTS 10\nDATA binary\n" + bytes(20), "truncated"),
    ("zero.pcd", b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 0\n"
                 b"HEIGHT 1\nPOINTS 0\nDATA ascii\n", "no points"),
    ("noxyz.pcd", b"VERSION 0.7\nFIELDS a b\nSIZE 4 4\nTYPE F F\nCOUNT 1 1\nWIDTH 1\n"
                  b"HEIGHT 1\nPOINTS 1\nDATA ascii\n1 2\n", "x y z"),
    ("garbage.pcd", b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\n"
                    b"HEIGHT 1\nPOINTS 1\nDATA ascii\n1 two 3\n", "corrupt"),
    ("bad.ply", b"plx\nformat ascii 1.0\nend_header\n", "PLY"),
    ("trunc.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\n"
                  b"property float y\nproperty float z\nend_header\n" + bytes(10), "truncated"),
    ("bad.xyz", b"1 2 3\n4 5\n", "row 2"),
    ("words.xyz", b"a b c\nd e f\n", "corrupt"),
    ("bad.stl", b"solid x\n this is not a mesh\n", "mesh|triangles"),
    ("bad.obj", b"# only a comment\n", "mesh|triangles"),
    ("cloud.unknown", b"1 2 3\n", "unknown"),
])
def test_bad_files_raise_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        io.read_points(path)


def test_bad_gt_and_write_inputs(tmp_path):
    p = tmp_path / "gt.txt"
    p.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="4"):
        io.read_labelled_points(p)
    with pytest.raises(ValueError, match="empty"):
        io.write_points(tmp_path / "x.pcd", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        io.write_points(tmp_path / "x.pcd", np.array([[np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        io.write_points(tmp_path / "x.pcd", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="cannot write"):
        io.write_points(tmp_path / "x.stl", np.zeros((4, 3)))
    with pytest.raises(ValueError, match="no triangles"):
        io.read_mesh(io.write_points(tmp_path / "pts.ply", np.zeros((4, 3))))
