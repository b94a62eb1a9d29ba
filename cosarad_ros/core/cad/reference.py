"""What the classifier needs of a CAD model, prepared once per model content.

A :class:`ModelReference` holds a model's box (:func:`~.features.mesh_box_features`),
area-uniform surface samples with their normals, and which of those samples a cell sees: a
sample is *expected visible* when it lies above the floor cut (the lowest ``floor_cut`` above the
resting face are cut away with the fixture, see
:data:`cosarad_ros.core.inspection.fusion.DEFAULT_ROI`) and an unoccluded line of sight that
meets its face at less than ``max_incidence_deg`` reaches it from at least ``min_view_share`` of
the view directions above the part (elevations ``elevation_deg``, azimuths all around). The
part rests on its CAD frame's lowest face (``z`` up), as the cell places it. Views from above
never see the underside, so the classifier only asks a scan to explain these samples.

References are cached in memory by the content of the mesh (a hash of its vertices and faces)
and the settings, so a library re-read from disk, or a new classifier on the same folder, does
not prepare its models again; with a ``cache_dir`` also on disk (one ``.npz`` per model, keyed
by the mesh content, the settings and the source of the code that prepares it), so a new
process (a ``cosarad classify`` call, a restarted node) does not either.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cosarad_ros.core.cad.features import BoxFeatures, mesh_box_features

__all__ = ["ModelReference", "model_reference", "mesh_digest", "clear_reference_cache"]

_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 512


@dataclass(frozen=True)
class ModelReference:
    """Prepared CAD model (model frame, metres).

    Attributes:
        digest: hash of the mesh content.
        box: exact pose-normalised box of the mesh.
        points: ``(n, 3)`` area-uniform surface samples.
        normals: ``(n, 3)`` their outward unit normals.
        visible: ``(n,)`` bool, the samples a cell expects to see from above.
    """

    digest: str
    box: BoxFeatures
    points: np.ndarray = field(repr=False)
    normals: np.ndarray = field(repr=False)
    visible: np.ndarray = field(repr=False)

    @property
    def visible_points(self) -> np.ndarray:
        """``(m, 3)`` the expected-visible samples."""
        return self.points[self.visible]


def mesh_digest(mesh) -> str:
    """Hex digest of a mesh's vertices and faces (the key of every cached preparation)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(mesh.vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(mesh.faces, dtype=np.int64).tobytes())
    return h.hexdigest()


def clear_reference_cache() -> None:
    """Forget every prepared reference (tests, memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _directions(elevation_deg, azimuths: int) -> np.ndarray:
    out = []
    for e in np.radians(np.asarray(elevation_deg, dtype=np.float64)):
        for a in np.arange(azimuths) * 2.0 * np.pi / azimuths:
            out.append([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    return np.asarray(out)


def _expected_visible(model, points: np.ndarray, normals: np.ndarray, *, elevation_deg, azimuths: int,
                      max_incidence_deg: float, min_view_share: float, floor_cut: float) -> np.ndarray:
    import open3d as o3d

    scene = model.surface.scene
    dirs = _directions(elevation_deg, azimuths)
    cos_max = np.cos(np.radians(max_incidence_deg))
    seen = np.zeros(len(points))
    origins = (points + 1e-5 * normals).astype(np.float32)
    for v in dirs:
        facing = normals @ v > cos_max
        rays = np.hstack([origins, np.broadcast_to(v.astype(np.float32), origins.shape)])
        blocked = scene.test_occlusions(o3d.core.Tensor(np.ascontiguousarray(rays))).numpy().astype(bool)
        seen += facing & ~blocked
    zmin = float(np.asarray(model.mesh.bounds)[0, 2])
    return (seen / len(dirs) >= min_view_share) & (points[:, 2] > zmin + floor_cut)


def model_reference(model, *, n_points: int = 4000, elevation_deg=(30.0, 50.0, 70.0), azimuths: int = 12,
                    max_incidence_deg: float = 70.0, min_view_share: float = 0.25, floor_cut: float = 0.002,
                    seed: int = 1, cache_dir=None) -> ModelReference:
    """The prepared reference of a :class:`~.library.CadModel` (cached by content and settings).

    Args:
        model: the CAD model (its ``mesh`` in metres, ``z`` up as it rests in the cell).
        n_points: surface samples.
        elevation_deg: elevations of the view directions tried for visibility [deg].
        azimuths: azimuths per elevation, evenly spaced.
        max_incidence_deg: largest angle between a face normal and the line of sight that still
            gives a point (the cell sensor drops points towards grazing angles).
        min_view_share: least share of the view directions that must see a sample.
        floor_cut: height above the lowest point below which nothing is expected [m] (the
            fusion's cut of 1.5 mm plus a margin).
        seed: sampling seed.
        cache_dir: folder of the disk cache (created when missing; a cache that cannot be read
            or written is skipped); ``None``: memory only.

    Returns:
        :class:`ModelReference`.
    """
    if n_points < 100 or azimuths < 1 or not 0.0 < min_view_share <= 1.0 or floor_cut < 0:
        raise ValueError("model_reference: n_points >= 100, azimuths >= 1, 0 < min_view_share <= 1 and "
                         "floor_cut >= 0 required")
    digest = model.__dict__.get("_digest")
    if digest is None:
        digest = model.__dict__["_digest"] = mesh_digest(model.mesh)
    key = (digest, int(n_points), tuple(float(e) for e in elevation_deg), int(azimuths), float(max_incidence_deg),
           float(min_view_share), float(floor_cut), int(seed))
    path = None
    if cache_dir is not None:
        name = hashlib.blake2b(repr((key, _code_digest())).encode(), digest_size=12).hexdigest()
        path = Path(cache_dir) / f"{digest[:16]}-{name}.npz"
    with _CACHE_LOCK:
        ref = _CACHE.get(key)
        if ref is not None:
            _CACHE.move_to_end(key)
    if ref is not None:
        if path is not None and not path.is_file():
            _write(path, ref)
        return ref
    ref = _read(path, digest) if path is not None else None
    if ref is None:
        from cosarad_ros.core.io import sample_mesh

        box = _cached_box(model, digest)
        pts, nrm = sample_mesh(model.mesh, int(n_points), seed=int(seed))
        pts = np.asarray(pts, dtype=np.float64)
        nrm = np.asarray(nrm, dtype=np.float64)
        vis = _expected_visible(model, pts, nrm, elevation_deg=elevation_deg, azimuths=azimuths,
                                max_incidence_deg=max_incidence_deg, min_view_share=min_view_share,
                                floor_cut=floor_cut)
        for a in (pts, nrm, vis):
            a.setflags(write=False)
        ref = ModelReference(digest=digest, box=box, points=pts, normals=nrm, visible=vis)
        if path is not None:
            _write(path, ref)
    model.__dict__.setdefault("box", ref.box)  # the model's cached_property sees it too
    with _CACHE_LOCK:
        _CACHE[key] = ref
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return ref


def _code_digest() -> str:
    """Hash of the source that prepares a reference (part of every disk-cache key)."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        from cosarad_ros.core.cad import features
        from cosarad_ros.core.io import sample_mesh

        h = hashlib.blake2b(digest_size=12)
        for obj in (features, sample_mesh, _expected_visible, _directions, model_reference):
            h.update(inspect.getsource(obj).encode())
        _CODE_DIGEST = h.hexdigest()
    return _CODE_DIGEST


_CODE_DIGEST: str | None = None


def _read(path: Path, digest: str) -> ModelReference | None:
    try:
        with np.load(path) as d:
            if str(d["digest"]) != digest:
                return None
            box = BoxFeatures(dimensions=d["box_dimensions"], volume=float(d["box_volume"]), frame=d["box_frame"],
                              volume_mode=str(d["box_volume_mode"]))
            arrays = [np.array(d[k]) for k in ("points", "normals", "visible")]
    except (OSError, KeyError, ValueError):
        return None
    for a in arrays:
        a.setflags(write=False)
    return ModelReference(digest=digest, box=box, points=arrays[0], normals=arrays[1], visible=arrays[2].astype(bool))


def _write(path: Path, ref: ModelReference) -> None:
    """Atomic write; a folder that cannot be written leaves the cache in memory only."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, digest=ref.digest, box_dimensions=ref.box.dimensions, box_volume=ref.box.volume,
                     box_frame=ref.box.frame, box_volume_mode=ref.box.volume_mode, points=ref.points,
                     normals=ref.normals, visible=ref.visible)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _cached_box(model, digest: str) -> BoxFeatures:
    """The model's box, shared by every model object with the same mesh content."""
    key = ("box", digest)
    with _CACHE_LOCK:
        box = _CACHE.get(key)
    if box is None:
        box = model.__dict__.get("box") or mesh_box_features(model.mesh)
        with _CACHE_LOCK:
            _CACHE[key] = box
    model.__dict__.setdefault("box", box)  # the model's cached_property sees it too
    return box
