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
not prepare its models again.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

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

    scene = model._raycast_scene
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
                    seed: int = 1) -> ModelReference:
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
    with _CACHE_LOCK:
        ref = _CACHE.get(key)
        if ref is not None:
            _CACHE.move_to_end(key)
            return ref
    from cosarad_ros.core.io import sample_mesh

    box = _cached_box(model, digest)
    pts, nrm = sample_mesh(model.mesh, int(n_points), seed=int(seed))
    pts = np.asarray(pts, dtype=np.float64)
    nrm = np.asarray(nrm, dtype=np.float64)
    vis = _expected_visible(model, pts, nrm, elevation_deg=elevation_deg, azimuths=azimuths,
                            max_incidence_deg=max_incidence_deg, min_view_share=min_view_share, floor_cut=floor_cut)
    for a in (pts, nrm, vis):
        a.setflags(write=False)
    ref = ModelReference(digest=digest, box=box, points=pts, normals=nrm, visible=vis)
    with _CACHE_LOCK:
        _CACHE[key] = ref
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return ref


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
