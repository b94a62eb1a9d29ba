"""Reading and writing point clouds and meshes.

Formats (chosen by file extension, case-insensitive):

* ``.pcd`` -- Point Cloud Library format v0.7 (Rusu & Cousins, "3D is here: Point Cloud Library
  (PCL)", ICRA 2011). Our own parser and writer: ``DATA ascii``, ``binary`` and
  ``binary_compressed`` (LZF) are read; ``ascii`` and ``binary`` are written. Fields ``x y z``,
  optionally ``normal_x normal_y normal_z`` and packed ``rgb`` / ``rgba``; other fields are
  skipped. Values written as float32 (default, what PCL and Real3D-AD use) or float64 read back
  bit-exactly.
* ``.ply`` -- Stanford polygon format (Turk, 1994). A PLY whose ``face`` element is empty or
  absent is a point cloud, read by our own parser (ascii, binary little/big endian); a PLY with
  faces is a mesh and is area-sampled when a cloud is asked for.
* ``.xyz``, ``.txt``, ``.pts``, ``.asc``, ``.csv`` -- one point per line, whitespace- or
  comma-separated; the first three columns are ``x y z``, further columns are ignored
  (use :func:`read_labelled_points` for ``x y z label`` ground-truth files). ``.xyzn`` has
  normals in columns 4-6, ``.xyzrgb`` colours (0-1 or 0-255) in columns 4-6.
* ``.stl``, ``.obj``, ``.off``, ``.glb``, ``.gltf`` (and ``.ply`` with faces) -- meshes,
  loaded with trimesh; :func:`read_points` / :func:`read_point_cloud` sample them area-uniformly
  (``mesh_samples`` points, fixed seed, so the result is deterministic).

Errors: a missing file raises ``FileNotFoundError``; an empty, truncated, corrupt or
unknown-format file raises ``ValueError`` naming the file and the problem. Non-finite points
(organised PCD clouds mark missing returns with NaN) are dropped by the readers; a file left
with no finite point is an error.

Units are whatever the file holds: nothing here rescales.
"""
from __future__ import annotations

from .clouds import read_point_cloud, read_points, read_scan, write_points
from .common import MESH_EXTENSIONS, POINT_EXTENSIONS, PointCloudFile
from .meshes import read_mesh, sample_mesh, write_mesh
from .pcd import lzf_decompress
from .safe_yaml import YAML_MAX_BYTES, YAML_MAX_NODES, load_yaml
from .text import read_labelled_points, write_labelled_points

__all__ = [
    "PointCloudFile",
    "POINT_EXTENSIONS",
    "MESH_EXTENSIONS",
    "read_points",
    "read_point_cloud",
    "read_scan",
    "write_points",
    "read_labelled_points",
    "write_labelled_points",
    "read_mesh",
    "write_mesh",
    "sample_mesh",
    "lzf_decompress",
    "load_yaml",
    "YAML_MAX_BYTES",
    "YAML_MAX_NODES",
]
