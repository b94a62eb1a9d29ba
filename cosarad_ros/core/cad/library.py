"""A folder of CAD models with optional YAML metadata: the reference set of the classifier.

Layout of a library folder::

    library/
      bracket_a.stl          # mesh (STL / PLY / OBJ / OFF / GLB; STEP / IGES when gmsh is installed)
      bracket_a.yaml         # optional metadata of the mesh with the same stem
      flange_b.obj

Metadata (every key optional)::

    label: bracket_a          # defaults to the file name without extension
    code: BRK-0001            # label code of the part type
    units: mm                 # unit of every length below and, unless mesh_units says otherwise,
                              # of the mesh file (m, cm, mm, um, in; default m)
    mesh_units: m             # optional: unit of the mesh file's coordinates
    nominal_dimensions: [30, 50, 80]        # width, height, length (any order; compared sorted)
    tolerances: {dimension: 1.0, hole_position: 0.6, hole_diameter: 0.5}
    holes:
      - {centre: [0, 0, 15], diameter: 6.0, axis: [0, 0, -1], depth: 20}
    description: free text

``centre`` is the point where the hole axis meets the surface the hole is drilled into (the entry
face), ``axis`` is the drilling direction (into the material, default ``[0, 0, -1]``), as in
``cosarad_ros.core.data.parts.Part.metadata()``; other keys are kept but not interpreted. Lengths
are converted to metres on loading, so :class:`CadModel` is always in metres. New models are added
at run time with :meth:`CadLibrary.add`, which copies the mesh into the folder and writes the YAML
next to it, so the next classification (in this process or after a restart) already knows the new
type: the classifier is training-free (Kwon et al., Electronics 2025, sec. 3.5).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from cosarad_ros.core.cad.features import BoxFeatures, mesh_box_features
from cosarad_ros.core.names import check_name

__all__ = [
    "CadLibrary",
    "CadModel",
    "HoleSpec",
    "UNIT_SCALE",
    "MESH_SUFFIXES",
    "CAD_SUFFIXES",
    "parse_metadata",
    "load_cad_mesh",
    "step_supported",
]

UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001, "um": 1e-6, "in": 0.0254}
MESH_SUFFIXES = (".stl", ".ply", ".obj", ".off", ".glb")
CAD_SUFFIXES = (".step", ".stp", ".iges", ".igs")


def step_supported() -> bool:
    """Whether STEP / IGES files can be read (needs the ``gmsh`` Python module)."""
    try:
        import gmsh  # noqa: F401
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class HoleSpec:
    """A nominal circular hole of a CAD model (metres, model frame).

    Attributes:
        centre: ``(3,)`` where the axis meets the entry surface.
        axis: ``(3,)`` unit drilling direction (pointing into the material).
        diameter: nominal diameter [m].
        depth: depth [m], or ``None`` (through / unknown).
        name: optional identifier.
    """

    centre: np.ndarray
    axis: np.ndarray
    diameter: float
    depth: float | None = None
    name: str = ""

    def as_dict(self, scale: float = 1.0) -> dict:
        """Plain dict with lengths divided by ``scale`` (1 = metres)."""
        d = {"centre": [float(v) / scale for v in self.centre], "axis": [float(v) for v in self.axis],
             "diameter": float(self.diameter) / scale}
        if self.depth is not None:
            d["depth"] = float(self.depth) / scale
        if self.name:
            d["name"] = self.name
        return d


def _vec3(value, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be 3 numbers, got {value!r}") from None
    if arr.shape != (3,) or not np.isfinite(arr).all():
        raise ValueError(f"{what} must be 3 finite numbers, got {value!r}")
    return arr


def _positive(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return v


def parse_metadata(source: str | Mapping | None) -> dict:
    """Validate metadata given as YAML text or a dict; returns a plain dict (lengths untouched).

    YAML text is read by :func:`cosarad_ros.core.io.load_yaml` (safe loader, size and alias
    limits).

    Raises:
        ValueError: not YAML, too large, not a mapping, unknown unit, invalid label, malformed
            holes / dimensions.
    """
    if source is None:
        return {}
    if isinstance(source, str):
        if not source.strip():
            return {}
        from cosarad_ros.core.io import load_yaml

        data = load_yaml(source, name="metadata")
        if data is None:
            return {}
    else:
        data = source
    if not isinstance(data, Mapping):
        raise ValueError(f"metadata must be a mapping (YAML dict), got {type(data).__name__}")
    data = {str(k): v for k, v in data.items()}
    for key in ("units", "mesh_units"):
        units = data.get(key, "m")
        if units not in UNIT_SCALE:
            raise ValueError(f"metadata {key} {units!r} unknown; choose one of {sorted(UNIT_SCALE)}")
    if "label" in data and data["label"] is not None:
        check_name(str(data["label"]), what="metadata label")
    if "nominal_dimensions" in data and data["nominal_dimensions"] is not None:
        dims = _vec3(data["nominal_dimensions"], "nominal_dimensions")
        if (dims <= 0).any():
            raise ValueError(f"nominal_dimensions must be positive, got {data['nominal_dimensions']!r}")
    tol = data.get("tolerances") or {}
    if not isinstance(tol, Mapping):
        raise ValueError("metadata tolerances must be a mapping like {dimension: 0.001}")
    for k, v in tol.items():
        _positive(v, f"tolerances.{k}")
    holes = data.get("holes") or []
    if not isinstance(holes, (list, tuple)):
        raise ValueError("metadata holes must be a list of {centre, diameter, axis}")
    for i, h in enumerate(holes):
        if not isinstance(h, Mapping):
            raise ValueError(f"holes[{i}] must be a mapping with centre and diameter")
        if "centre" not in h and "center" not in h:
            raise ValueError(f"holes[{i}] has no centre")
        _vec3(h.get("centre", h.get("center")), f"holes[{i}].centre")
        _positive(h.get("diameter"), f"holes[{i}].diameter")
        axis = _vec3(h.get("axis", [0, 0, -1]), f"holes[{i}].axis")
        if np.linalg.norm(axis) < 1e-9:
            raise ValueError(f"holes[{i}].axis must not be zero")
        if h.get("depth") is not None:
            _positive(h["depth"], f"holes[{i}].depth")
    return data


def _holes_from_metadata(meta: dict, scale: float) -> tuple[HoleSpec, ...]:
    out = []
    for i, h in enumerate(meta.get("holes") or []):
        axis = _vec3(h.get("axis", [0, 0, -1]), "axis")
        out.append(HoleSpec(
            centre=_vec3(h.get("centre", h.get("center")), "centre") * scale,
            axis=axis / np.linalg.norm(axis),
            diameter=float(h["diameter"]) * scale,
            depth=None if h.get("depth") is None else float(h["depth"]) * scale,
            name=str(h.get("name", f"hole{i}")),
        ))
    return tuple(out)


def _read_step(path: Path):
    """Tessellate a STEP / IGES file with gmsh (OpenCASCADE kernel), in metres."""
    import gmsh
    import trimesh

    initialised_here = not gmsh.isInitialized()
    if initialised_here:
        gmsh.initialize(readConfigFiles=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setString("Geometry.OCCTargetUnit", "M")
        gmsh.clear()
        gmsh.model.occ.importShapes(str(path))
        gmsh.model.occ.synchronize()
        gmsh.model.mesh.generate(2)
        tags, coords, _ = gmsh.model.mesh.getNodes()
        lookup = {int(t): i for i, t in enumerate(tags)}
        verts = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
        faces = []
        for etype, _etags, enodes in zip(*gmsh.model.mesh.getElements(dim=2)):
            if etype != 2:  # 3-node triangles
                continue
            faces.append(np.array([lookup[int(n)] for n in enodes], dtype=np.int64).reshape(-1, 3))
        if not faces:
            raise ValueError(f"{path}: gmsh produced no triangles")
        return trimesh.Trimesh(verts, np.vstack(faces), process=True)
    finally:
        gmsh.clear()
        if initialised_here:
            gmsh.finalize()


def load_cad_mesh(path, *, units: str = "m"):
    """Read a CAD mesh and scale it to metres.

    Args:
        path: STL / PLY / OBJ / OFF / GLB, or STEP / IGES when gmsh is importable.
        units: unit of the file's coordinates (ignored for STEP, which gmsh converts to metres).

    Returns:
        ``trimesh.Trimesh`` in metres.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable / empty / degenerate mesh (see
            :func:`cosarad_ros.core.geometry.check_mesh`: at least a tetrahedron, positive area, a
            plausible size in metres), unsupported format or unit.
    """
    from cosarad_ros.core.geometry import check_mesh
    from cosarad_ros.core.io import read_mesh

    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"CAD file not found: {p}")
    if units not in UNIT_SCALE:
        raise ValueError(f"unknown units {units!r}; choose one of {sorted(UNIT_SCALE)}")
    ext = p.suffix.lower()
    if ext in CAD_SUFFIXES:
        if not step_supported():
            raise ValueError(f"{p}: reading {ext} needs the 'gmsh' Python package (pip install gmsh)")
        try:
            return check_mesh(_read_step(p), name=p.name)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"{p}: cannot read CAD file ({type(exc).__name__}: {exc})") from None
    if ext not in MESH_SUFFIXES:
        raise ValueError(f"{p}: unsupported CAD format {ext!r}; use one of "
                         f"{', '.join(MESH_SUFFIXES + (CAD_SUFFIXES if step_supported() else ()))}")
    mesh = read_mesh(p)
    scale = UNIT_SCALE[units]
    if scale != 1.0:
        mesh = mesh.copy()
        mesh.apply_scale(scale)
    try:
        return check_mesh(mesh, name=p.name)
    except ValueError as exc:
        if "millimetres" in str(exc) and units == "m":
            raise ValueError(f"{exc} (give units: mm in the metadata, or --units mm)") from None
        raise


@dataclass(frozen=True, eq=False)
class CadModel:
    """One part type of the library (metres).

    Attributes:
        label: class label (file name without extension unless the metadata says otherwise).
        mesh: ``trimesh.Trimesh`` in metres, in the model frame.
        metadata: the metadata dict as written in the YAML (lengths in ``metadata['units']``).
        path: the mesh file.
        code: label code from the metadata ("" when none).
        holes: nominal holes, metres.
        tolerances: tolerances from the metadata, converted to metres (e.g. ``{"dimension": 0.001}``).
    """

    label: str
    mesh: Any = field(repr=False)
    metadata: dict = field(default_factory=dict, repr=False)
    path: Path | None = None
    code: str = ""
    holes: tuple[HoleSpec, ...] = ()
    tolerances: dict = field(default_factory=dict, repr=False)

    @cached_property
    def box(self) -> BoxFeatures:
        """Exact pose-normalised bounding box of the mesh (box volume)."""
        return mesh_box_features(self.mesh)

    @cached_property
    def hull_volume(self) -> float:
        """Convex-hull volume of the mesh [m^3]."""
        return float(self.mesh.convex_hull.volume)

    @property
    def dimensions(self) -> np.ndarray:
        """Sorted box extents ``(3,)`` [m]."""
        return self.box.dimensions

    @cached_property
    def surface(self):
        """The mesh as a :class:`~cosarad_ros.core.registration.mesh_reference.MeshReference`:
        exact distances to the triangles, surface samples, the registration onto the model.
        """
        from cosarad_ros.core.registration.mesh_reference import MeshReference

        return MeshReference(self.mesh)

    def distance(self, points) -> np.ndarray:
        """Unsigned distance ``(N,)`` [m] of ``(N, 3)`` points (model frame) to the mesh surface."""
        return self.surface.distance(np.asarray(points, dtype=np.float64).reshape(-1, 3))

    def closest_points(self, points) -> tuple[np.ndarray, np.ndarray]:
        """Closest points on the mesh ``(N, 3)`` and the outward normals of their faces ``(N, 3)``
        for ``(N, 3)`` points in the model frame.
        """
        return self.surface.closest(np.asarray(points, dtype=np.float64).reshape(-1, 3))

    def signed_distance(self, points) -> np.ndarray:
        """Signed distance ``(N,)`` [m] of ``(N, 3)`` points (model frame) to the mesh surface:
        positive outside the material (along the closest face's normal), negative inside.
        """
        return self.surface.signed_distance(np.asarray(points, dtype=np.float64).reshape(-1, 3))

    def sample(self, n: int = 20000, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` area-uniform surface points and their normals, each ``(n, 3)`` (cached per n, seed)."""
        return self.surface.sample(n, seed=seed)


def _model_from_files(mesh_path: Path, meta: dict, label: str | None) -> CadModel:
    units = meta.get("units", "m")
    scale = UNIT_SCALE[units]
    mesh = load_cad_mesh(mesh_path, units=meta.get("mesh_units", units))
    tolerances = {str(k): float(v) * scale for k, v in (meta.get("tolerances") or {}).items()}
    return CadModel(
        label=label or meta.get("label") or mesh_path.stem,
        mesh=mesh,
        metadata=dict(meta),
        path=mesh_path,
        code=str(meta.get("code", "") or ""),
        holes=_holes_from_metadata(meta, scale),
        tolerances=tolerances,
    )


class CadLibrary:
    """The CAD models of a folder, indexed by label.

    Args:
        folder: the library folder.
        create: create the folder when it does not exist (else ``FileNotFoundError``).
        strict: raise on an unreadable file in the folder; when ``False`` such files are skipped
            and listed in :attr:`errors`.

    Raises:
        FileNotFoundError: the folder does not exist and ``create`` is false.
        ValueError: (``strict``) an unreadable file, bad metadata or two models with one label.
    """

    def __init__(self, folder, *, create: bool = False, strict: bool = True):
        self.folder = Path(os.fspath(folder))
        if not self.folder.is_dir():
            if self.folder.exists():
                raise ValueError(f"CAD library path is not a folder: {self.folder}")
            if not create:
                raise FileNotFoundError(f"CAD library folder not found: {self.folder}")
            self.folder.mkdir(parents=True, exist_ok=True)
        self.strict = strict
        self._lock = threading.RLock()
        self._models: dict[str, CadModel] = {}
        self.errors: dict[str, str] = {}
        self.reload()

    # -- loading -----------------------------------------------------------------------------
    def _suffixes(self) -> tuple[str, ...]:
        return MESH_SUFFIXES + (CAD_SUFFIXES if step_supported() else ())

    def reload(self) -> None:
        """(Re)read the folder. Models already loaded keep their cached features."""
        models: dict[str, CadModel] = {}
        errors: dict[str, str] = {}
        files = sorted(p for p in self.folder.iterdir()
                       if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in self._suffixes())
        for mesh_path in files:
            try:
                meta = self._read_yaml(mesh_path.with_suffix(".yaml"))
                label = str(meta.get("label") or mesh_path.stem)
                if label in models:
                    raise ValueError(f"duplicate label {label!r}: {models[label].path.name} and {mesh_path.name}")
                old = self._models.get(label)
                if old is not None and old.path == mesh_path and old.metadata == meta:
                    models[label] = old
                else:
                    models[label] = _model_from_files(mesh_path, meta, label)
            except (ValueError, FileNotFoundError) as exc:
                if self.strict:
                    raise ValueError(f"CAD library {self.folder}: {exc}") from None
                errors[mesh_path.name] = str(exc)
        with self._lock:
            self._models = models
            self.errors = errors

    @staticmethod
    def _read_yaml(path: Path) -> dict:
        if not path.is_file():
            return {}
        from cosarad_ros.core.io import YAML_MAX_BYTES

        try:
            if path.stat().st_size > YAML_MAX_BYTES:
                raise ValueError(f"{path.stat().st_size} bytes; the limit is {YAML_MAX_BYTES} bytes")
            return parse_metadata(path.read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path.name}: {exc}") from None

    # -- access ------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """Sorted labels of the models."""
        with self._lock:
            return sorted(self._models)

    @property
    def models(self) -> list[CadModel]:
        """The models, sorted by label."""
        with self._lock:
            return [self._models[k] for k in sorted(self._models)]

    def get(self, label: str) -> CadModel:
        """The model called ``label``; ``KeyError`` with the known labels when absent."""
        with self._lock:
            try:
                return self._models[label]
            except KeyError:
                raise KeyError(f"no CAD model {label!r} in {self.folder} "
                               f"(known: {', '.join(sorted(self._models)) or 'none'})") from None

    def __contains__(self, label: object) -> bool:
        with self._lock:
            return label in self._models

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def __iter__(self):
        return iter(self.models)

    def __repr__(self) -> str:
        return f"CadLibrary({str(self.folder)!r}, {len(self)} models)"

    # -- adding ------------------------------------------------------------------------------
    def add(self, mesh_path, label: str | None = None, metadata: str | Mapping | None = None, *,
            overwrite: bool = False) -> CadModel:
        """Add a model to the library and persist it into the folder.

        The mesh is copied to ``<folder>/<label><ext>`` and the metadata (when any, plus the
        label) written to ``<folder>/<label>.yaml``; the model is usable at once. The mesh and
        metadata are fully checked first and both files are written to temporary names then
        renamed, so a refused or failed add leaves the folder as it was.

        Args:
            mesh_path: STL / PLY / OBJ / OFF / GLB (STEP / IGES with gmsh) file.
            label: class label; default the metadata ``label`` or the file name without extension.
            metadata: dict or YAML text (see the module docstring).
            overwrite: replace an existing model with the same label instead of refusing.

        Returns:
            The new :class:`CadModel`.

        Raises:
            FileNotFoundError: ``mesh_path`` does not exist.
            ValueError: invalid label, duplicate label, unreadable mesh, bad metadata.
        """
        src = Path(os.fspath(mesh_path))
        if not src.is_file():
            raise FileNotFoundError(f"CAD file not found: {src}")
        meta = parse_metadata(metadata)
        label = check_name(str(label or meta.get("label") or src.stem), what="CAD label")
        if src.suffix.lower() not in self._suffixes():
            raise ValueError(f"{src}: unsupported CAD format {src.suffix!r}; use one of "
                             f"{', '.join(self._suffixes())}")
        meta["label"] = label
        with self._lock:
            if label in self._models and not overwrite:
                raise ValueError(f"a CAD model labelled {label!r} already exists in {self.folder} "
                                 f"({self._models[label].path.name})")
        model = _model_from_files(src, meta, label)  # validates the mesh before touching the folder
        model.box  # noqa: B018 - the features the classifier needs must compute before anything is written
        text = yaml.safe_dump(_plain(meta), sort_keys=False, allow_unicode=True)
        with self._lock:
            if label in self._models and not overwrite:
                raise ValueError(f"a CAD model labelled {label!r} already exists in {self.folder} "
                                 f"({self._models[label].path.name})")
            existing = [p for p in self.folder.iterdir()
                        if p.is_file() and p.stem == label and p.suffix.lower() in self._suffixes()]
            if existing and not overwrite:
                raise ValueError(f"{existing[0]} already exists in the library folder")
            dst = self.folder / f"{label}{src.suffix.lower()}"
            _replace_files([(self.folder / f"{label}.yaml", text), (dst, src)])
            for p in existing:
                if p != dst:
                    p.unlink()
            model = CadModel(label=model.label, mesh=model.mesh, metadata=meta, path=dst,
                             code=model.code, holes=model.holes, tolerances=model.tolerances)
            self._models[label] = model
        return model

    def remove(self, label: str) -> None:
        """Delete a model (mesh and YAML) from the folder and the library."""
        with self._lock:
            model = self.get(label)
            if model.path is not None and model.path.exists():
                model.path.unlink()
            y = self.folder / f"{label}.yaml"
            if y.exists():
                y.unlink()
            del self._models[label]


def _plain(obj):
    """numpy-free copy for yaml.safe_dump."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_plain(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    """Mode of a new file under the process umask (what ``open()`` would give; mkstemp gives 0600)."""
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


def _replace_files(items: list[tuple[Path, str | Path]]) -> None:
    """Write each ``(destination, text or source file)`` to a temporary file beside it, then
    rename them into place; on any failure the temporaries are removed and destinations renamed
    already are put back as they were (restored, or removed when they did not exist).
    """
    temps: list[tuple[str, Path]] = []
    done: list[tuple[Path, str | None]] = []
    try:
        for dst, content in items:
            fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp_", suffix=dst.suffix)
            temps.append((tmp, dst))
            with os.fdopen(fd, "wb") as fh:
                if isinstance(content, Path):
                    with open(content, "rb") as src:
                        shutil.copyfileobj(src, fh)
                else:
                    fh.write(content.encode("utf-8"))
            os.chmod(tmp, _file_mode())
        for tmp, dst in temps:
            backup = None
            if dst.exists():
                fd, backup = tempfile.mkstemp(dir=dst.parent, prefix=".old_", suffix=dst.suffix)
                os.close(fd)
                os.replace(dst, backup)
            done.append((dst, backup))
            os.replace(tmp, dst)
    except BaseException:
        for dst, backup in reversed(done):
            if backup is not None:
                os.replace(backup, dst)
            elif dst.exists():
                dst.unlink()
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    for _, backup in done:
        if backup is not None and os.path.exists(backup):
            os.unlink(backup)
