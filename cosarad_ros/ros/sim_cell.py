"""The simulated inspection cell as real rclpy nodes in one process (used by ``cosarad demo`` and
the end-to-end tests): scanner (simulated structured light over a shared scene), viewpoint
planner, registration, CAD classifier, anomaly detector and inspection manager, on one
multi-threaded executor spinning in a background thread. They talk over real DDS, exactly as
separate processes started by ``inspection.launch.py`` do.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from cosarad_ros.ros.node_utils import BackgroundExecutor

__all__ = ["SimulatedCell"]


class SimulatedCell(BackgroundExecutor):
    """Start the cell's nodes.

    Args:
        cad_dir: CAD library folder (part types, also the source of simulated templates).
        part_pose: ``[x y z qx qy qz qw]`` of the part frame in ``world`` (the cell's fixture).
        seed: sensor noise seed.
        method: anomaly detector (``deviation``, ``cosarad``, ``fpfh``, ``global-bank``).
        n_templates: simulated good templates per part type.
        work_dir: folder for memory banks and coverage pictures.
        classifier_params / anomaly_params / manager_params: extra parameter overrides.
    """

    def __init__(self, cad_dir, *, part_pose, seed: int = 0, method: str = "deviation", n_templates: int = 3,
                 work_dir, classifier_params: dict | None = None, anomaly_params: dict | None = None,
                 manager_params: dict | None = None):
        from cosarad_ros.core.inspection.inprocess import CLASSIFIER_OPTIONS, REGISTRATION_MIN_FITNESS
        from cosarad_ros.core.inspection.templates import cell_sensor_options
        from cosarad_ros.core.sensors import SimulatedScene
        from cosarad_ros.ros.anomaly_node import AnomalyNode
        from cosarad_ros.ros.cad_classifier_node import CadClassifierNode
        from cosarad_ros.ros.inspection_manager import InspectionManager
        from cosarad_ros.ros.registration_node import RegistrationNode
        from cosarad_ros.ros.scanner_node import ScannerNode
        from cosarad_ros.ros.viewpoint_planner_node import ViewpointPlannerNode

        super().__init__(threads=8)
        try:
            kw = self.node_kwargs
            cad, work = str(cad_dir), Path(work_dir)
            sensor_opts = {k: list(v) if isinstance(v, tuple) else v for k, v in cell_sensor_options().items()}
            self.scene = SimulatedScene.inspection_cell()
            # no lifecycle manager here: the scanner configures and activates itself
            self.scanner = ScannerNode(scene=self.scene, **kw(autostart=True, sensor_type="motioncam", seed=int(seed),
                                                              sensor_options=yaml.safe_dump(sensor_opts),
                                                              **{"sim.rest_on_support": False}))
            # the in-process cell's settings, so both judge a part alike
            cls_params = {"library_dir": cad, **CLASSIFIER_OPTIONS, **(classifier_params or {})}
            det_params = {"cad_library": cad, "cache_dir": str(work / "banks"), "method": method,
                          "n_templates": int(n_templates), **(anomaly_params or {})}
            for node in [
                self.scanner,
                ViewpointPlannerNode(**kw(cad_library=cad, playback_speed=0.0, coverage_dir=str(work / "coverage"))),
                RegistrationNode(**kw(cad_library=cad, outer_surface_only=False,
                                      min_fitness=REGISTRATION_MIN_FITNESS)),
                CadClassifierNode(**kw(**cls_params)),
                AnomalyNode(**kw(**det_params)),
                InspectionManager(**kw(part_pose=[float(x) for x in part_pose], **(manager_params or {}))),
            ]:
                self.add(node)
        except BaseException:
            self.close()  # a node refused its parameters: leave no context or thread behind
            raise

    def node(self, name: str):
        """The running node called ``name``."""
        return next(n for n in self.nodes if n.get_name() == name)
