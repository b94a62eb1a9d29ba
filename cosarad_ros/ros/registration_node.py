"""``registration_node``: registers clouds onto references (scan to scan or scan to CAD).

Service ``~/register`` (``cosarad_ros/srv/RegisterCloud``):

* ``source``: the cloud to move (metres).
* ``target``: the reference cloud; when empty, the reference named ``reference`` (or the
  ``default_reference`` parameter) is used, loaded from

  1. the ``references`` parameter, entries ``"name=/path/to/file"`` (clouds or meshes),
  2. ``reference_dir``: ``<reference_dir>/<name>.<ext>`` for any cloud or mesh extension,
  3. ``cad_library``: the CAD library folder (``cosarad_ros.core.cad``), its mesh sampled.

  Mesh references are sampled with ``reference_points`` points, keeping only the outer surface a
  sensor can see (internal faces would spoil the features). Loaded references are cached until
  the file changes. A reference name is a name (:mod:`cosarad_ros.core.names`: no path, no
  ``..``), so a request only reaches files inside ``reference_dir`` and models of ``cad_library``.
* ``allow_scale``: estimate a scale factor too (second sensor with scale drift).

Clouds must hold finite points of a plausible size in metres; larger ones than ``max_points`` are
cut to a random subset up front.

The response carries ``success`` (the registration passed every check), ``message`` (the reason
otherwise, or the error for a malformed request), the row-major 4x4 ``transform`` mapping source
onto target, ``scale``, ``fitness``, ``rmse`` [m], one-sided ``chamfer`` [m], ``attempts`` and
the ``aligned`` source in the target's frame. A malformed request never takes the node down.

Topic ``~/aligned`` (``sensor_msgs/PointCloud2``) republishes every aligned cloud for RViz.

Every threshold is a parameter in metres; ``0`` means "scale with the part" (see
``config/registration_node.yaml`` and ``docs/registration.md``).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from rcl_interfaces.msg import ParameterType
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2

from cosarad_ros.core.names import check_name, path_in_folder
from cosarad_ros.core.registration import RegisterOptions, RegistrationResult, register
from cosarad_ros.core.registration.global_registration import GLOBAL_ALIGNERS
from cosarad_ros.core.registration.refine import REFINERS
from cosarad_ros.ros import conversions as cv
from cosarad_ros.ros.node_utils import (
    RELIABLE_QOS,
    GuardedCallbacks,
    Param,
    cloud_points,
    declare_parameters,
    non_negative,
    positive,
    run_node,
    unit_interval,
)
from cosarad_ros.srv import RegisterCloud

_STRINGS = ParameterType.PARAMETER_STRING_ARRAY


def _name_path_list(v) -> bool:
    return all(isinstance(e, str) and (e == "" or ("=" in e and e.split("=", 1)[0].strip()
                                                    and e.split("=", 1)[1].strip())) for e in v)


_name_path_list.text = (  # type: ignore[attr-defined]
    "must be entries 'name=/path/to/cloud_or_mesh' (empty strings are ignored)")

PARAMS = (
    Param("voxel_size", 0.0, "Working voxel edge [m]; 0: target bounding-box diagonal / 50", check=non_negative),
    Param("attempts", 5, "Global hypotheses refined per feature scale", check=positive),
    Param("global_method", "fpfh_ransac", "Global registration method", choices=tuple(sorted(GLOBAL_ALIGNERS))),
    Param("refine_method", "point_to_plane", "ICP variant of the final refinement",
          choices=tuple(sorted(REFINERS))),
    Param("inlier_distance", 0.0, "Distance for fitness and rmse [m]; 0: the voxel size", check=non_negative),
    Param("min_fitness", 0.9, "Least inlier fraction of the source for success", check=unit_interval),
    Param("max_chamfer", 0.0, "Largest one-sided Chamfer distance for success [m]; 0: target spacing + "
          "0.05 voxel + the source's noise", check=non_negative),
    Param("scale_min", 0.8, "Smallest accepted scale with allow_scale", check=lambda v: 0 < v <= 1,
          check_text="must be in (0, 1]"),
    Param("scale_max", 1.25, "Largest accepted scale with allow_scale", check=lambda v: v >= 1,
          check_text="must be >= 1"),
    Param("outlier_std", 2.0, "Statistical outlier removal band on the source (mu + k sigma); 0: off",
          check=non_negative),
    Param("max_refine_points", 40000, "Source points used by the final ICP (random subset above)", check=positive),
    Param("max_points", 200000, "Source and target clouds with more points are cut to a random subset of this many "
          "before any work", check=positive),
    Param("seed", 0, "Random seed", check=non_negative),
    # default [""] rather than []: an empty list default makes rclpy type the parameter as a byte array
    Param("references", [""], "Named references 'name=/path' (clouds or meshes, metres unless mesh_scale)",
          check=_name_path_list, type_=_STRINGS),
    Param("reference_dir", "", "Folder of references <name>.<pcd|ply|xyz|stl|obj|...>"),
    Param("cad_library", "", "CAD library folder used for names not found above"),
    Param("default_reference", "", "Reference used when a request names none and has no target"),
    Param("reference_points", 30000, "Points sampled from mesh references", check=positive),
    Param("mesh_scale", 1.0, "Scale applied to mesh / cloud reference files (0.001 for millimetre files)",
          check=positive),
    Param("outer_surface_only", True, "Keep only the outer (scannable) surface of mesh references"),
    Param("reference_frame", "part", "Frame of the named references: frame_id of the aligned cloud for them"),
    Param("publish_aligned", True, "Republish aligned clouds on ~/aligned"),
)


class RegistrationNode(GuardedCallbacks, Node):
    """Service node around :func:`cosarad_ros.core.registration.register`."""

    def __init__(self, **node_kwargs):
        super().__init__("registration_node", **node_kwargs)
        self.p = declare_parameters(self, PARAMS)
        self._cache: dict[str, tuple[float, str, np.ndarray]] = {}
        self._lock = threading.Lock()
        self.request_count = 0
        self.error_count = 0
        self.aligned_pub = self.create_publisher(PointCloud2, "~/aligned", RELIABLE_QOS)
        self.srv = self.create_service(RegisterCloud, "~/register", self._on_register)
        from cosarad_ros.ros.node_utils import NodeDiagnostics

        self.diagnostics = NodeDiagnostics(self)   # /diagnostics: OK, WARN with the last failure after one
        self.get_logger().info("registration_node ready: service ~/register")

    # ------------------------------------------------------------------ references
    def _reference_file(self, name: str) -> Path | None:
        check_name(name, what="reference")
        for entry in self.p.references:
            if not entry:
                continue
            key, path = (s.strip() for s in entry.split("=", 1))
            if key == name:
                p = Path(os.path.expanduser(path))
                if not p.is_file():
                    raise FileNotFoundError(f"reference '{name}': file {p} does not exist")
                return p
        if self.p.reference_dir:
            folder = Path(os.path.expanduser(self.p.reference_dir))
            if not folder.is_dir():
                raise FileNotFoundError(f"reference_dir {folder} is not a folder")
            from cosarad_ros.core.io import MESH_EXTENSIONS, POINT_EXTENSIONS

            for ext in dict.fromkeys(POINT_EXTENSIONS + MESH_EXTENSIONS):
                p = path_in_folder(folder, name, what="reference", suffix=ext)
                if p.is_file():
                    return p
        return None

    def _sample_outer(self, mesh_points: np.ndarray) -> np.ndarray:
        if not self.p.outer_surface_only:
            return mesh_points
        from cosarad_ros.core.registration.visibility import outer_shell

        return mesh_points[outer_shell(mesh_points, views=40, seed=self.p.seed)]

    def _thin(self, pts: np.ndarray) -> np.ndarray:
        if len(pts) <= self.p.reference_points:
            return pts
        sel = np.random.default_rng(self.p.seed).choice(len(pts), self.p.reference_points, replace=False)
        return pts[np.sort(sel)]

    def reference(self, name: str) -> np.ndarray:
        """The ``(M, 3)`` reference cloud called ``name`` (cached).

        Raises:
            ValueError / FileNotFoundError: unknown name, missing or unreadable file.
        """
        path = self._reference_file(name)
        if path is not None:
            key = f"file:{path}"
            mtime = path.stat().st_mtime
            with self._lock:
                hit = self._cache.get(name)
            if hit is not None and hit[0] == mtime and hit[1] == key:
                return hit[2]
            from cosarad_ros.core.io import read_point_cloud

            f = read_point_cloud(path, mesh_samples=2 * self.p.reference_points, seed=self.p.seed)
            pts = f.points * self.p.mesh_scale
            if f.sampled_from_mesh:
                pts = self._thin(self._sample_outer(pts))
        elif self.p.cad_library:
            from cosarad_ros.core.cad.library import CadLibrary

            lib = CadLibrary(os.path.expanduser(self.p.cad_library))
            if name not in lib:
                raise ValueError(f"unknown reference '{name}': not in references, reference_dir or the CAD "
                                 f"library ({', '.join(lib.labels) or 'empty'})")
            model = lib.get(name)
            key, mtime = f"cad:{self.p.cad_library}", 0.0
            with self._lock:
                hit = self._cache.get(name)
            if hit is not None and hit[1] == key:
                return hit[2]
            pts, _ = model.sample(2 * self.p.reference_points, seed=self.p.seed)
            pts = self._thin(self._sample_outer(np.asarray(pts, dtype=np.float64)))
        else:
            raise ValueError(f"unknown reference '{name}': not in the references parameter"
                             + (f" nor in reference_dir {self.p.reference_dir}" if self.p.reference_dir else "")
                             + " (and no cad_library is set)")
        with self._lock:
            self._cache[name] = (mtime, key, pts)
        self.get_logger().info(f"loaded reference '{name}' ({len(pts)} points) from {key}")
        return pts

    def _cad_model(self, name: str):
        """The CAD model called ``name`` when the request's reference is a CAD library label."""
        if not name or not self.p.cad_library or self._reference_file(name) is not None:
            return None
        from cosarad_ros.core.cad.library import CadLibrary

        lib = CadLibrary(os.path.expanduser(self.p.cad_library))
        return lib.get(name) if name in lib else None

    def _local(self, src: np.ndarray, seeds: np.ndarray, request, tgt: np.ndarray | None):
        """Local refinement from the request's initial transforms: onto the CAD surface itself
        when the reference is a CAD model (:meth:`MeshReference.align`), else ICP from each seed
        against the reference cloud; the best is kept.
        """
        from cosarad_ros.core.anomaly.deviation import CAD_INLIER_DISTANCE

        if seeds.size % 16:
            raise ValueError(f"initial_transforms must hold 16 values per 4x4 pose, got {seeds.size}")
        Ts = seeds.reshape(-1, 4, 4)
        p = self.p
        name = request.reference or p.default_reference
        model = self._cad_model(name) if request.target.width * request.target.height == 0 else None
        if model is not None:
            key = ("surface", name, self.p.cad_library)
            with self._lock:
                surface = self._cache.get(key)
                if surface is None:
                    surface = self._cache[key] = model.surface
            inlier = p.inlier_distance or CAD_INLIER_DISTANCE
            al = surface.align(src, init=tuple(Ts), inlier_distance=inlier, seed=p.seed)
            ok = al.fitness >= p.min_fitness
            return RegistrationResult(transform=al.transform, scale=1.0, fitness=al.fitness, rmse=al.rmse,
                                      chamfer=al.trimmed_distance, attempts=len(Ts), ok=ok,
                                      reason="" if ok else f"fitness {al.fitness:.3f} < {p.min_fitness:.3f} "
                                                           f"(inliers within {inlier:.4g})",
                                      inlier_distance=inlier)
        # refinement from the given poses: working voxel, methods and scale range stay at their defaults
        options = RegisterOptions.from_options(self._common_options())
        results = [register(src, tgt, options, init=T, seed=p.seed) for T in Ts]
        return min(results, key=lambda r: r.chamfer)

    def _common_options(self) -> dict:
        """Flat :class:`RegisterOptions` of the source clean-up and the acceptance checks, shared by
        the global search and the refinement from given poses (a ``0`` parameter: ``None``, i.e.
        scale with the part, or no outlier removal for ``outlier_std``).
        """
        p = self.p
        return {"inlier_distance": p.inlier_distance or None, "min_fitness": p.min_fitness,
                "max_chamfer": p.max_chamfer or None, "outlier_std": p.outlier_std or None,
                "max_refine_points": p.max_refine_points}

    # ------------------------------------------------------------------ service
    def _on_register(self, request, response):
        self.request_count += 1
        response.transform = np.eye(4).reshape(-1).tolist()
        response.scale = 1.0
        try:
            src = cloud_points(request.source, name="source cloud", max_points=self.p.max_points, seed=self.p.seed)
            target_frame = request.source.header.frame_id
            if request.target.width * request.target.height > 0:
                tgt = cloud_points(request.target, name="target cloud", max_points=self.p.max_points,
                                   seed=self.p.seed)
                target_frame = request.target.header.frame_id or target_frame
            else:
                name = request.reference or self.p.default_reference
                if not name:
                    raise ValueError("no target cloud and no reference name (and default_reference is empty)")
                tgt = self.reference(name)
                target_frame = self.p.reference_frame
            p = self.p
            seeds = np.asarray(request.initial_transforms, dtype=np.float64)
            if seeds.size:
                res = self._local(src, seeds, request, tgt)
            else:
                options = RegisterOptions.from_options({
                    **self._common_options(), "voxel_size": p.voxel_size or None, "global_method": p.global_method,
                    "refine_method": p.refine_method, "scale_range": (p.scale_min, p.scale_max)})
                res = register(src, tgt, options, attempts=p.attempts, allow_scale=bool(request.allow_scale),
                               seed=p.seed)
        except (ValueError, FileNotFoundError, OSError) as exc:
            self.error_count += 1
            response.success = False
            response.message = f"bad request: {exc}"
            self.get_logger().error(response.message)
            return response
        T = np.asarray(res.transform, dtype=np.float64)
        response.success = bool(res.ok)
        response.message = res.reason
        response.transform = T.reshape(-1).tolist()
        response.scale = float(res.scale)
        response.fitness = float(res.fitness)
        response.rmse = float(res.rmse) if np.isfinite(res.rmse) else 0.0
        response.chamfer = float(res.chamfer)
        response.attempts = int(res.attempts)
        aligned = src @ T[:3, :3].T + T[:3, 3]
        response.aligned = cv.xyz_to_pointcloud2(aligned.astype(np.float32), frame_id=target_frame,
                                                 stamp=request.source.header.stamp)
        if self.p.publish_aligned:
            self.aligned_pub.publish(response.aligned)
        summary = f"fitness {res.fitness:.3f} chamfer {res.chamfer * 1000:.3f} mm in {res.time_s:.2f} s"
        # separate call sites: rclpy refuses one logging call site used with two severities
        if res.ok:
            self.get_logger().info(f"register: ok, {summary}")
        else:
            self.get_logger().warning(f"register: FAILED ({res.reason}), {summary}")
        return response


def main(args=None) -> int:
    return run_node(RegistrationNode, args)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
