"""The inspection cell as core objects in one process: a :class:`~.pipeline.Cell` with no DDS.

The ROS cell (``inspection_manager`` calling the scanner, planner, classifier, registration and
anomaly nodes) and this class run the same core objects with the same settings, so the same part
gets the same verdict either way; this one is fast enough to inspect hundreds of parts in minutes
(``cosarad cell-eval``). The arm is simulated: a move returns the planned sensor pose.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .pipeline import Classified, Detected, Registered, ViewScan

__all__ = ["InProcessCell", "CLASSIFIER_OPTIONS", "REGISTRATION_MIN_FITNESS"]

#: classifier settings of the simulated cell over the classifier's defaults (the
#: ``cad_classifier_node`` gets the same); the defaults are set for fused partial cell scans
CLASSIFIER_OPTIONS: dict = {}
#: the registration of an inspection fails below this share of points on the CAD surface (the
#: simulated cell's ``registration_node`` gets the same ``min_fitness``): a grossly bent or broken
#: part still registers, and must FAIL rather than be INCONCLUSIVE
REGISTRATION_MIN_FITNESS = 0.5


def _mesh_key(mesh) -> str:
    h = hashlib.sha1(np.ascontiguousarray(mesh.vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(mesh.faces, dtype=np.int64).tobytes())
    return h.hexdigest()


class InProcessCell:
    """A simulated cell: structured-light sensor on a UR10 over a fixture, analysis in process.

    Args:
        cad_dir: CAD library folder (part types; source of simulated templates).
        work_dir: folder for memory banks and coverage pictures.
        method: anomaly detector (``deviation``, ``cosarad``, ``fpfh``, ``global-bank``), or a list
            of them: the first is the cell's, the others can be asked by ``detect(method=...)``.
        n_templates: simulated good templates per part type.
        seed: sensor noise seed (grab ``k`` of the run draws from ``[seed, k]``, as the scanner node).
        progress: optional ``callback(message: str)`` for long preparations.
    """

    def __init__(self, cad_dir, *, work_dir, method: str = "deviation", n_templates: int = 3, seed: int = 0,
                 progress=None):
        from cosarad_ros.core.cad import CadClassifier, CadLibrary
        from cosarad_ros.core.planning import CellModel
        from cosarad_ros.core.sensors import SimulatedScene, make_sensor

        from .detection import make_inspector
        from .templates import cell_sensor_options

        self.cad_dir = str(cad_dir)
        self.work_dir = Path(work_dir)
        self.say = progress or (lambda m: None)
        self.library = CadLibrary(self.cad_dir)
        self.model = CellModel.default()
        self.part_pose = self.model.part_pose()
        self.scene = SimulatedScene.inspection_cell()
        self.sensor = make_sensor({"type": "motioncam", **cell_sensor_options(self.model), "scene": self.scene,
                                   "seed": int(seed)})
        self.sensor.connect()
        self.classifier = CadClassifier(self.library, **CLASSIFIER_OPTIONS)
        methods = [method] if isinstance(method, str) else list(method)
        self.method = methods[0]
        self.cache_dir = self.work_dir / "banks"   # view plans, templates, memory banks
        self.inspectors = {m: make_inspector(method=m, cad_library=self.cad_dir, n_templates=n_templates,
                                             cache_dir=str(self.cache_dir))
                           for m in methods}
        self._plans: dict = {}
        self._references: dict = {}
        self.views: tuple = ()
        self.last_plan = None

    def close(self) -> None:
        self.sensor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def prepare(self, part_types=None) -> None:
        """Get part types ready before the first part arrives: views planned and good templates
        simulated (both kept on disk), memory banks fitted, hole allowances measured, the CAD
        model's distance structures built.

        Args:
            part_types: labels (default: every model of the library).
        """
        labels = list(self.library.labels if part_types is None else part_types)
        for i, t in enumerate(labels, 1):
            self.say(f"preparing part type {t} ({i}/{len(labels)})")
            self._mesh_for_plan(t, None)
            self.plan(t)
            for inspector in self.inspectors.values():
                inspector.prepare(t)
            self.reference(t).sample()

    # ------------------------------------------------------------------ the part on the fixture
    def load_part(self, mesh_path, *, part_id: str = "") -> None:
        """Put the part ``mesh_path`` (metres, part frame) on the fixture."""
        from cosarad_ros.core.io import read_mesh

        self.scene.set_part(read_mesh(mesh_path), self.part_pose, part_id=part_id)

    # ------------------------------------------------------------------ Cell protocol
    def _mesh_for_plan(self, part_type: str, envelope):
        from .fusion import LOCATE_BOX, envelope_mesh

        if part_type:
            if part_type not in self.library:
                raise ValueError(f"part type '{part_type}' is not in the CAD library {self.cad_dir}")
            return self.library.get(part_type).mesh, part_type
        if envelope is None:
            return envelope_mesh(LOCATE_BOX), "locate"
        # survey envelopes are rounded out to 5 mm, so similar parts share a cached plan
        lo, hi = (np.asarray(v, dtype=np.float64) for v in envelope)
        lo, hi = np.floor(lo / 0.005) * 0.005, np.ceil(hi / 0.005) * 0.005
        return envelope_mesh((lo, hi)), "survey"

    def plan(self, part_type: str, envelope=None) -> int:
        from cosarad_ros.core.planning.plan_cache import cached_plan

        mesh, name = self._mesh_for_plan(part_type, envelope)
        key = _mesh_key(mesh)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = cached_plan(mesh, cell=self.model, cache_dir=self.cache_dir, seed=0,
                                                  progress=lambda m: self.say(f"{m} of {name}"))
            if name not in ("locate", "survey"):
                try:
                    from cosarad_ros.core.planning.render import save_coverage_png

                    save_coverage_png(mesh, plan, self.work_dir / "coverage" / f"coverage_{name}.png", title=name)
                except Exception as exc:  # noqa: BLE001 - a picture must not fail the plan
                    self.say(f"coverage picture of {name} not written: {exc}")
        self.views, self.last_plan = plan.views, plan
        return len(plan.views)

    def move(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.views):
            raise ValueError(f"view index {index} out of range (the plan has {len(self.views)} views)")
        return np.asarray(self.views[index].sensor_pose, dtype=np.float64)

    def scan(self, sensor_pose: np.ndarray) -> ViewScan:
        frame = self.sensor.grab(sensor_pose)
        return ViewScan(np.asarray(frame.points, dtype=np.float64), np.asarray(frame.sensor_pose, dtype=np.float64))

    def fuse(self, scans: list[ViewScan]) -> np.ndarray:
        from .fusion import CELL_VOXEL, DEFAULT_ROI, fuse_scans

        return fuse_scans(scans, part_pose=self.part_pose, voxel_size=CELL_VOXEL, roi=DEFAULT_ROI)

    def classify(self, points: np.ndarray) -> Classified:
        self.library.reload()
        res = self.classifier.classify(points, prior=np.eye(4))  # the fused cloud is in the part frame
        q = res.quality.as_dict() if res.quality is not None else {}
        T = None if res.transform is None else np.asarray(res.transform, dtype=np.float64)
        return Classified(res.label, float(res.score), q, T, reference_label=res.reference_label,
                          box_match=res.box_match, reason=res.reason)

    def reference(self, part_type: str):
        """The part type's CAD model as a :class:`~cosarad_ros.core.registration.mesh_reference.MeshReference`."""
        from cosarad_ros.core.registration.mesh_reference import MeshReference

        ref = self._references.get(part_type)
        if ref is None:
            if part_type not in self.library:
                raise ValueError(f"part type '{part_type}' is not in the CAD library {self.cad_dir}")
            ref = self._references[part_type] = MeshReference(self.library.get(part_type).mesh)
        return ref

    def register(self, points: np.ndarray, part_type: str, init=None) -> Registered:
        """The inspection's one registration: from the nominal pose (the fused cloud is in the
        part frame) and the classifier's pose onto the CAD model, as the ``registration_node``
        does for a request with initial transforms.
        """
        from cosarad_ros.core.anomaly.deviation import CAD_INLIER_DISTANCE
        from cosarad_ros.core.geometry import transform_points

        seeds = [np.eye(4)] + ([np.asarray(init, dtype=np.float64)] if init is not None else [])
        al = self.reference(part_type).align(points, init=seeds, inlier_distance=CAD_INLIER_DISTANCE)
        ok = al.fitness >= REGISTRATION_MIN_FITNESS
        reason = "" if ok else (f"fitness {al.fitness:.3f} < {REGISTRATION_MIN_FITNESS:.3f} "
                                f"(inliers within {CAD_INLIER_DISTANCE:.4g})")
        return Registered(ok, reason, transform_points(al.transform, points), al.transform, al.fitness, al.rmse)

    def detect(self, points: np.ndarray, part_type: str, part_id: str, *, method: str | None = None) -> Detected:
        rep = self.inspectors[method or self.method].inspect(points, part_type, part_id=part_id, registered=True)
        return Detected(rep.outcome, rep.points, rep.point_scores)
