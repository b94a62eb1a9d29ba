"""Baselines that run through the COSARAD code path, for the paper's ablations.

* :class:`FpfhExtractor` -- Fast Point Feature Histograms (Rusu, Blodow, Beetz, "Fast Point
  Feature Histograms (FPFH) for 3D Registration", ICRA 2009) instead of learned features: the
  descriptor of a patch is the mean FPFH of its points (33 bins), L2-normalised, computed on the
  same recentred, scaled, resampled patches as the network sees. Used with the location-aware
  banks (method ``"fpfh"``).
* The global memory bank (method ``"global-bank"``) is :class:`~.memory_bank.GlobalBank`: learned
  features, but one PatchCore-style bank for the whole part instead of one per location.
"""
from __future__ import annotations

import numpy as np

from .features import PatchFeatureExtractor

__all__ = ["FpfhExtractor"]


class FpfhExtractor(PatchFeatureExtractor):
    """Mean FPFH of a patch (patch units, radius 2).

    Args:
        normal_radius: radius of the normal estimation (patch units).
        feature_radius: radius of the FPFH neighbourhood (patch units).
        max_nn: neighbour cap of both searches.
    """

    name = "fpfh"
    dim = 33
    fps_prefix = 0  # the points are de-duplicated and sorted first: order does not matter

    def __init__(self, *, normal_radius: float = 0.5, feature_radius: float = 1.0, max_nn: int = 40):
        if normal_radius <= 0 or feature_radius <= 0 or max_nn < 3:
            raise ValueError("FPFH radii must be positive and max_nn >= 3")
        self.normal_radius = float(normal_radius)
        self.feature_radius = float(feature_radius)
        self.max_nn = int(max_nn)

    def fingerprint(self) -> str:
        return f"fpfh-{self.normal_radius:g}-{self.feature_radius:g}-{self.max_nn}"

    def _one(self, pts: np.ndarray) -> np.ndarray:
        import open3d as o3d

        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
        pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=self.normal_radius, max_nn=self.max_nn))
        # a sign convention shared by every patch at the same place: the patch's plane normal
        # (smallest principal axis), flipped so its largest component is positive
        c = pts - pts.mean(0)
        n = np.linalg.svd(c, full_matrices=False)[2][-1]
        n = n if n[np.argmax(np.abs(n))] > 0 else -n
        pcd.orient_normals_to_align_with_direction(n)
        f = o3d.pipelines.registration.compute_fpfh_feature(
            pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=self.feature_radius, max_nn=self.max_nn))
        h = np.asarray(f.data).mean(axis=1)
        return h / max(np.linalg.norm(h), 1e-12)

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        p = np.asarray(patches, dtype=np.float32)
        if p.ndim != 3 or p.shape[2] < 3:
            raise ValueError(f"patches must have shape (P, n, 3), got {p.shape}")
        p = p[:, :, :3]  # FPFH is computed from the coordinates only
        out = np.zeros((len(p), self.dim), dtype=np.float32)
        for i in range(len(p)):
            # duplicates from resampling add nothing to FPFH; drop them
            out[i] = self._one(np.unique(p[i], axis=0))
        return out
