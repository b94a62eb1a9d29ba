"""Registration: scan to scan, scan to CAD, similarity (scale) alignment and multi-view fusion.

Public API::

    from cosarad_ros.core.registration import register, RegisterOptions, RegistrationResult, umeyama, preprocess
    from cosarad_ros.core.registration import fuse_views

See ``docs/registration.md`` for the method, parameters and measured figures.
"""
from .fusion import FusionResult, fuse_views, view_poses
from .global_registration import (
    GLOBAL_ALIGNERS,
    FastGlobal,
    FpfhRansac,
    GlobalAligner,
    IdentityAligner,
    Open3dRansac,
    compute_features,
    feature_correspondences,
    make_global_aligner,
)
from .metrics import AlignmentScore, chamfer_one_sided, score_alignment
from .options import AcceptanceOptions, GlobalOptions, PreprocessOptions, RefineOptions, RegisterOptions, ScaleOptions
from .pipeline import RegistrationResult, register
from .preprocess import (
    PreprocessResult,
    crop_roi,
    default_voxel_size,
    estimate_normals,
    part_size,
    preprocess,
    remove_plane,
    remove_statistical_outliers,
    voxel_down_sample,
)
from .refine import (
    REFINERS,
    GeneralizedICP,
    PointToPlaneICP,
    PointToPointICP,
    Refiner,
    SimilarityICP,
    SymmetricICP,
    make_refiner,
)
from .similarity import SimilarityTransform, decompose_similarity, similarity_icp, umeyama
from .symmetry import box_rotations, symmetry_hypotheses, symmetry_rotations
from .visibility import outer_shell, partial_view

__all__ = [
    "register", "RegistrationResult", "RegisterOptions", "PreprocessOptions", "GlobalOptions", "RefineOptions",
    "ScaleOptions", "AcceptanceOptions", "umeyama", "preprocess", "PreprocessResult", "fuse_views", "FusionResult",
    "view_poses",
    "SimilarityTransform", "similarity_icp", "decompose_similarity",
    "crop_roi", "remove_plane", "remove_statistical_outliers", "voxel_down_sample", "estimate_normals",
    "part_size", "default_voxel_size",
    "AlignmentScore", "score_alignment", "chamfer_one_sided",
    "GlobalAligner", "FpfhRansac", "Open3dRansac", "FastGlobal", "feature_correspondences", "IdentityAligner",
    "GLOBAL_ALIGNERS", "make_global_aligner",
    "compute_features", "symmetry_hypotheses", "symmetry_rotations", "box_rotations",
    "Refiner", "PointToPointICP", "PointToPlaneICP", "GeneralizedICP", "SymmetricICP", "SimilarityICP",
    "REFINERS", "make_refiner", "outer_shell", "partial_view",
]
