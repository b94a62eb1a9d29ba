"""``cad_classifier_node``: zero-shot part classification against a CAD library.

Services:

* ``~/classify`` (``cosarad_ros/srv/ClassifyPart``): a scan (metres, any frame) in; ``label``
  (or ``unknown``), ``score`` [%], ``candidates`` (best first; for ``unknown`` the nearest models
  with their box deviations), the ISO/IEC 25012 ``quality`` report against the chosen (or
  nearest) model and the pose of the scan on that model (``reference_label``, ``transform``
  row-major 4x4 cloud frame -> model frame, ``fitness``, ``rmse``; it seeds the inspection's
  registration) out; an optional ``prior_transform`` (the pose a fixture holds the part in) is
  tried first by the registration of every candidate. A malformed cloud gets ``success=False``
  and the reason; the node keeps running.
* ``~/register_cad_model`` (``cosarad_ros/srv/RegisterCadModel``): copies a mesh (with optional
  YAML metadata) into the library folder; the next ``~/classify`` call already knows it. No
  retraining (Kwon et al., Electronics 2025, sec. 3.5). The label must be a name
  (:mod:`cosarad_ros.core.names`), the mesh at least a tetrahedron of plausible size in metres and
  the YAML small and alias-free enough (:func:`cosarad_ros.core.io.load_yaml`); a refused model
  leaves the library folder as it was.

The library folder is the ``library_dir`` parameter; every classifier and quality threshold is
a parameter (metres / percent, see ``config/cad_classifier_node.yaml`` and ``docs/cad.md``) and
takes effect at the next request when changed at run time.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
from geometry_msgs.msg import Vector3
from rclpy.node import Node

from cosarad_ros.core.cad import CadClassifier, CadLibrary
from cosarad_ros.core.cad.align import ALIGNERS
from cosarad_ros.msg import ClassCandidate
from cosarad_ros.ros.node_utils import (
    GuardedCallbacks,
    Param,
    cloud_points,
    declare_parameters,
    in_range,
    non_negative,
    positive,
    run_node,
)
from cosarad_ros.ros.result_msgs import quality_msg
from cosarad_ros.srv import ClassifyPart, RegisterCadModel


def _grades(v) -> bool:
    return len(v) == 5 and all(0.0 <= x <= 1.0 for x in v) and all(a > b for a, b in zip(v, v[1:]))


_grades.text = "must be 5 decreasing values in [0, 1] (minimum totals of grades A..E)"  # type: ignore[attr-defined]

PARAMS = (
    Param("library_dir", "~/.ros/cosarad_cad_library", "CAD library folder (meshes + <label>.yaml metadata)"),
    Param("create_library", True, "Create library_dir when it does not exist"),
    Param("rescan_library", True, "Re-read the folder before each classification (picks up files added "
          "by `cosarad cad add` while the node runs)"),
    Param("cache_dir", "", "Folder keeping each model's prepared reference (box, samples, surface seen from "
          "above) between runs; empty: <library_dir>/.cache; 'none': memory only"),
    Param("dim_tolerance", 0.003, "Largest amount a scan box extent may exceed a candidate's by, per sorted axis "
          "[m] (paper: 1 mm, two-sided)", check=positive),
    Param("max_shortfall", 0.15, "Share of a model extent a partial scan's extent may fall short by, beyond "
          "dim_tolerance and the 1.5 mm cut above the fixture (0 = paper)", check=in_range(0.0, 0.9)),
    Param("cosine_weight", 0.5, "Weight of the cosine term of the box-feature similarity (paper: 0.5)",
          check=in_range(0.0, 1.0)),
    Param("pose_method", "obb", "Pose normalisation of the box", choices=("obb", "pca")),
    Param("extent_quantile", 0.0005, "Share of scan points allowed outside the box per side",
          check=in_range(0.0, 0.2)),
    Param("min_trim_points", 10, "Points per side always allowed outside the scan box (stray fixture points "
          "on sparse scans; 0: only extent_quantile)", check=non_negative),
    Param("residual_in_box", True, "Leave the points outside the scan box out of the registration residual"),
    Param("volume_mode", "box", "Volume feature: box (w*h*l, paper) or hull (convex hull)", choices=("box", "hull")),
    Param("aligner", "box_icp", "Registration of the residual that ranks candidates ('none': paper only)",
          choices=tuple(sorted(ALIGNERS)) + ("none",)),
    Param("registration_weight", 0.5, "Weight of the residual similarity in the score", check=in_range(0.0, 1.0)),
    Param("rmse_scale", 0.0002, "Residual at which the residual similarity is 0.5 [m]", check=positive),
    Param("max_rmse", 0.0005, "Residual above which a candidate does not explain the scan [m]", check=positive),
    Param("min_coverage", 0.5, "Least share of a candidate's surface seen from above that the scan must cover "
          "(0: no coverage test)", check=in_range(0.0, 1.0)),
    Param("coverage_distance", 0.003, "A model surface sample counts as covered with a scan point this near [m]",
          check=positive),
    Param("min_fitness", 0.95, "Least share of scan points within 1 mm of a candidate that explains the scan",
          check=in_range(0.0, 1.0)),
    Param("max_extent_gap", 0.003, "Largest amount a candidate's footprint or top may reach beyond the registered "
          "scan [m]", check=positive),
    Param("min_score", 0.0, "Best score below which the scan is unknown [%]", check=in_range(0.0, 100.0)),
    Param("max_registrations", 3, "Candidates refined and scored in both directions per request (best coarse "
          "residual first)", check=positive),
    Param("n_nearest", 3, "Nearest models reported with an unknown answer", check=non_negative),
    Param("compute_quality", True, "Attach the ISO/IEC 25012 quality report"),
    Param("quality_points", 20000, "CAD surface samples used as quality reference", check=lambda v: v >= 100,
          check_text="must be >= 100"),
    Param("completeness_tolerance", 0.001, "Quality: a reference point is covered within this [m] (paper: 1 mm)",
          check=positive),
    Param("validity_sigma", 2.0, "Quality: valid band of centroid distances, in standard deviations",
          check=positive),
    Param("uniqueness_voxel", 0.0001, "Quality: voxel edge of the uniqueness measure [m]", check=positive),
    Param("fpfh_voxel", 0.0, "Quality: FPFH down-sampling voxel [m]; 0: reference diagonal / 50",
          check=non_negative),
    Param("grade_thresholds", [0.9, 0.8, 0.7, 0.6, 0.5], "Quality: least totals of grades A, B, C, D, E "
          "(below: F)", check=_grades),
    Param("min_points", 50, "Fewest finite points of a cloud", check=lambda v: v >= 10, check_text="must be >= 10"),
    Param("max_points", 200000, "Random subset of larger clouds", check=positive),
    Param("seed", 0, "Random seed of every subset", check=non_negative),
)


class CadClassifierNode(GuardedCallbacks, Node):
    """Service node around :class:`cosarad_ros.core.cad.CadClassifier`."""

    def __init__(self, **node_kwargs):
        super().__init__("cad_classifier_node", **node_kwargs)
        self.p = declare_parameters(self, PARAMS)
        self._lib_lock = threading.Lock()
        self._library: CadLibrary | None = None
        self._library_dir = ""
        self.request_count = 0
        self.error_count = 0
        n_models = len(self.library)  # open (or create) the folder now: a bad path shows at start
        self.srv_classify = self.create_service(ClassifyPart, "~/classify", self._on_classify)
        self.srv_register = self.create_service(RegisterCadModel, "~/register_cad_model", self._on_register)
        from cosarad_ros.ros.node_utils import NodeDiagnostics

        self.diagnostics = NodeDiagnostics(self)   # /diagnostics: OK, WARN with the last failure after one
        self.get_logger().info(f"cad_classifier_node ready: {n_models} CAD models in {self._library_dir}; "
                               "services ~/classify, ~/register_cad_model")

    # ------------------------------------------------------------------ library
    @property
    def library(self) -> CadLibrary:
        """The library of ``library_dir`` (re-opened when the parameter changes)."""
        folder = os.path.expanduser(self.p.library_dir)
        with self._lib_lock:
            if self._library is None or folder != self._library_dir:
                self._library = CadLibrary(folder, create=self.p.create_library, strict=False)
                self._library_dir = folder
                for name, err in self._library.errors.items():
                    self.get_logger().warning(f"CAD library: skipped {name}: {err}")
            return self._library

    def _cache_dir(self) -> str | None:
        if self.p.cache_dir == "none":
            return None
        return os.path.expanduser(self.p.cache_dir) if self.p.cache_dir else os.path.join(self._library_dir, ".cache")

    def classifier(self) -> CadClassifier:
        p = self.p
        g = p.grade_thresholds
        quality = {"completeness_tolerance": p.completeness_tolerance, "validity_sigma": p.validity_sigma,
                   "uniqueness_voxel": p.uniqueness_voxel, "fpfh_voxel": p.fpfh_voxel or None,
                   "grade_thresholds": tuple(zip("ABCDE", (float(x) for x in g)))}
        return CadClassifier(self.library, dim_tolerance=p.dim_tolerance, cosine_weight=p.cosine_weight,
                             pose_method=p.pose_method, extent_quantile=p.extent_quantile,
                             min_trim_points=p.min_trim_points, residual_in_box=p.residual_in_box,
                             volume_mode=p.volume_mode, aligner=p.aligner,
                             registration_weight=p.registration_weight, rmse_scale=p.rmse_scale,
                             max_rmse=p.max_rmse, min_coverage=p.min_coverage,
                             coverage_distance=p.coverage_distance, min_fitness=p.min_fitness,
                             max_extent_gap=p.max_extent_gap, cache_dir=self._cache_dir(),
                             min_score=p.min_score,
                             max_registrations=p.max_registrations,
                             n_nearest=p.n_nearest, compute_quality=p.compute_quality,
                             quality_points=p.quality_points, quality_options=quality,
                             max_shortfall=p.max_shortfall, seed=p.seed)

    # ------------------------------------------------------------------ services
    def _on_classify(self, request, response):
        self.request_count += 1
        t0 = time.perf_counter()
        pts = cloud_points(request.cloud, name="cloud", min_points=self.p.min_points,
                           max_points=self.p.max_points, seed=self.p.seed)
        lib = self.library
        if self.p.rescan_library:
            lib.reload()
        prior = np.asarray(request.prior_transform, dtype=np.float64)
        if prior.size not in (0, 16) or not np.isfinite(prior).all():
            raise ValueError(f"prior_transform must be empty or 16 finite values (row-major 4x4), got {prior.size}")
        res = self.classifier().classify(pts, prior=prior.reshape(4, 4) if prior.size else None)
        response.success = True
        response.label = res.label
        response.score = float(res.score)
        response.message = res.reason or f"{res.label} ({res.score:.1f} %)"
        response.candidates = [ClassCandidate(label=c.label, score=float(c.score),
                                              deviation=Vector3(x=float(c.deviation[0]), y=float(c.deviation[1]),
                                                                z=float(c.deviation[2])),
                                              registration_rmse=float(c.registration_rmse))
                               for c in res.candidates]
        response.quality = quality_msg(res.quality)
        response.reference_label = res.reference_label
        T = np.eye(4) if res.transform is None else np.asarray(res.transform, dtype=np.float64)
        response.transform = [float(v) for v in T.reshape(-1)]
        response.fitness = float(res.fitness)
        response.rmse = float(res.rmse)
        response.box_match = res.box_match
        self.get_logger().info(f"classified {len(pts)} points as {res.label} ({res.score:.1f} %) in "
                               f"{time.perf_counter() - t0:.2f} s")
        return response

    def _on_register(self, request, response):
        self.request_count += 1
        if not request.mesh_path:
            raise ValueError("mesh_path is empty")
        model = self.library.add(os.path.expanduser(request.mesh_path), label=request.label or None,
                                 metadata=request.metadata_yaml or None)
        response.success = True
        d = ", ".join(f"{v * 1000:.2f}" for v in model.dimensions)
        response.message = f"added '{model.label}' (box [{d}] mm, {len(model.holes)} holes) as {model.path}"
        self.get_logger().info(response.message)
        return response


def main(args=None) -> int:
    return run_node(CadClassifierNode, args)
