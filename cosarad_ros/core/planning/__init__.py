"""View planning for robotic 3D inspection: the cell model (URDF, pinocchio kinematics,
coal collisions), sensor visibility by ray casting, set-cover view selection, joint-travel
ordering and trajectory execution.

    from cosarad_ros.core.planning import plan_views, CellModel, SensorViewModel
    cell = CellModel.default()                       # urdf/cosarad_cell.urdf.xacro, UR10 + MotionCam-3D S
    plan = plan_views(mesh, cell=cell, target_coverage=0.95)
    for view in plan.views:
        view.sensor_pose, view.joints                # optical -> world (4, 4), joint values
"""
from cosarad_ros.core.planning.candidates import UnreachablePartError, generate_candidates
from cosarad_ros.core.planning.cell import CellConfig, CellModel, urdf_dir
from cosarad_ros.core.planning.collision import CollisionChecker
from cosarad_ros.core.planning.cover import CoverResult, GreedyCover, IlpCover, RandomCover, make_cover_solver
from cosarad_ros.core.planning.kinematics import IKResult, IKSolver
from cosarad_ros.core.planning.ordering import OrderResult, order_views, travel_time
from cosarad_ros.core.planning.views import View, ViewPlan, plan_views
from cosarad_ros.core.planning.visibility import SensorViewModel, SurfaceSamples, VisibilityModel, sample_surface

__all__ = [
    "CellConfig", "CellModel", "CollisionChecker", "urdf_dir",
    "CoverResult", "GreedyCover", "IlpCover", "RandomCover", "make_cover_solver",
    "IKResult", "IKSolver",
    "OrderResult", "order_views", "travel_time",
    "UnreachablePartError", "View", "ViewPlan", "generate_candidates", "plan_views",
    "SensorViewModel", "SurfaceSamples", "VisibilityModel", "sample_surface",
]
