"""Real meshes that ship inside installable packages, loaded from where the package installs them.

Nothing is copied into this repository: each entry names a package and a path inside it, and
:func:`load_package_mesh` reads the file from the installed package, then normalises it to a
part-like size in metres.

Sources:

* Debian ``occt-misc`` (Open CASCADE sample CAD models, installed in
  ``/usr/share/opencascade/data/stl``): ``bearing``, ``motor``, ``propeller``, ``head``,
  ``TR12J_OCC``, ``sh1``, ``sh2``, ``shape``, ``video_part``.
* PyPI ``pybullet`` (``pybullet_data``): ``bunny``, ``duck``, ``teddy``, ``mug``, ``lego``,
  ``l_finger`` and a few of its procedurally generated ``random_urdfs`` objects.

(pyvista's example nut is not used: pyvista downloads its examples at first use, and this
machine has no network for that.)

Normalisation: the mesh is centred on its bounding-box centre, placed with its lowest point on
``z = 0``, and scaled so that its longest bounding-box side equals ``size`` (metres).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .parts import Part

__all__ = ["PackageMeshSource", "PACKAGE_MESHES", "available_package_meshes", "load_package_mesh",
           "DEFAULT_PACKAGE_CLASSES"]

OCCT_STL_DIR = Path("/usr/share/opencascade/data/stl")


@dataclass(frozen=True)
class PackageMeshSource:
    """Where a package mesh lives: ``package`` (Debian or PyPI name) and ``relpath`` inside the
    package's data folder.
    """

    name: str
    package: str
    relpath: str
    description: str = ""

    def path(self) -> Path | None:
        """Absolute path of the installed file, or ``None`` when the package is not installed."""
        if self.package == "occt-misc":
            p = OCCT_STL_DIR / self.relpath
        elif self.package == "pybullet":
            spec = importlib.util.find_spec("pybullet_data")
            if spec is None or not spec.submodule_search_locations:
                return None
            p = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        else:
            return None
        return p if p.is_file() else None


PACKAGE_MESHES: dict[str, PackageMeshSource] = {s.name: s for s in (
    PackageMeshSource("bearing", "occt-misc", "bearing.stl", "ball bearing housing, 18 shells"),
    PackageMeshSource("motor", "occt-misc", "motor.stl", "electric motor housing"),
    PackageMeshSource("propeller", "occt-misc", "propeller.stl", "ship propeller"),
    PackageMeshSource("head", "occt-misc", "head.stl", "cylinder head casting"),
    PackageMeshSource("tr12j", "occt-misc", "TR12J_OCC.stl", "machined housing (watertight)"),
    PackageMeshSource("sh1", "occt-misc", "sh1.stl", "machined shape 1 (watertight)"),
    PackageMeshSource("sh2", "occt-misc", "sh2.stl", "machined shape 2 (watertight)"),
    PackageMeshSource("shape", "occt-misc", "shape.stl", "extruded profile (watertight)"),
    PackageMeshSource("video_part", "occt-misc", "video_part.stl", "moulded plastic part"),
    PackageMeshSource("bunny", "pybullet", "bunny.obj", "Stanford bunny (watertight, coarse)"),
    PackageMeshSource("duck", "pybullet", "duck.obj", "rubber duck"),
    PackageMeshSource("teddy", "pybullet", "teddy2_VHACD_CHs.obj", "teddy bear, convex pieces"),
    PackageMeshSource("mug", "pybullet", "objects/mug.obj", "mug"),
    PackageMeshSource("lego", "pybullet", "lego/lego.obj", "lego brick"),
    PackageMeshSource("l_finger", "pybullet", "l_finger.stl", "PR2 gripper finger"),
    PackageMeshSource("random_000", "pybullet", "random_urdfs/000/000.obj", "random object 000"),
    PackageMeshSource("random_001", "pybullet", "random_urdfs/001/001.obj", "random object 001"),
    PackageMeshSource("random_002", "pybullet", "random_urdfs/002/002.obj", "random object 002"),
)}

# The package classes `cosarad synth` uses first (in this order): industrial CAD first.
DEFAULT_PACKAGE_CLASSES = ("sh1", "sh2", "tr12j", "bearing", "motor", "bunny", "duck", "video_part",
                           "shape", "propeller", "lego", "mug", "head", "teddy")


def available_package_meshes() -> list[str]:
    """Names of the package meshes whose files are installed here."""
    return [n for n, s in PACKAGE_MESHES.items() if s.path() is not None]


def load_package_mesh(name: str, *, size: float = 0.08, min_faces: int = 2000) -> Part:
    """Load a package mesh as a :class:`~cosarad_ros.core.data.parts.Part` (family ``"package"``).

    Args:
        name: a key of :data:`PACKAGE_MESHES`, or a path to any mesh file.
        size: longest bounding-box side after normalisation, metres (> 0).
        min_faces: coarse meshes are subdivided (midpoint, shape-preserving) until they have at
            least this many faces, so later deformations have vertices to move.

    Returns:
        ``Part`` with ``params = {"size": size, "scale": s}`` (``s``: file units -> metres),
        no holes, ``source`` = the installed file path.

    Raises:
        ValueError: unknown name, package not installed, unreadable mesh, bad ``size``.
    """
    from ..io import read_mesh

    if not size > 0:
        raise ValueError(f"size must be > 0, got {size}")
    if name in PACKAGE_MESHES:
        path = PACKAGE_MESHES[name].path()
        if path is None:
            src = PACKAGE_MESHES[name]
            raise ValueError(f"package mesh {name!r} needs the {src.package!r} package "
                             f"({src.relpath} not found)")
        label = name
    elif os.path.isfile(name):
        path, label = Path(name), Path(name).stem
    else:
        raise ValueError(f"unknown package mesh {name!r}; available here: {available_package_meshes()}")
    mesh = read_mesh(path)
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    lo, hi = mesh.bounds
    ext = float((hi - lo).max())
    if not ext > 0:
        raise ValueError(f"{path}: mesh has zero extent")
    scale = size / ext
    centre = (lo + hi) / 2
    V = (np.asarray(mesh.vertices) - [centre[0], centre[1], lo[2]]) * scale
    import trimesh

    out = trimesh.Trimesh(vertices=V, faces=np.asarray(mesh.faces), process=False)
    while len(out.faces) < min_faces:
        v2, f2 = trimesh.remesh.subdivide(out.vertices, out.faces)
        out = trimesh.Trimesh(vertices=v2, faces=f2, process=False)
    return Part(name=label, family="package", params={"size": float(size), "scale": float(scale)},
                holes=(), mesh=out, source=str(path))
