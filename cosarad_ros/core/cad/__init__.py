"""CAD library, training-free part classification, ISO/IEC 25012 scan quality and rule-based
defect checks (Kwon et al., "Hybrid Rule-Based Classification and Defect Detection System Using
Insert Steel Multi-3D Matching", Electronics 2025).

Public API::

    from cosarad_ros.core.cad import CadLibrary, classify, quality_report, ClassificationResult, QualityReport
    lib = CadLibrary("cad_library/")
    res = classify(scan_points, lib)          # res.label, res.score, res.candidates, res.quality

All lengths are metres. See ``docs/cad.md``.
"""
from .align import ALIGNERS, Aligner, Alignment, BoxIcpAligner, RegistrationAligner, make_aligner
from .classifier import UNKNOWN, CadClassifier, Candidate, ClassificationResult, classify
from .features import BoxFeatures, box_features, feature_similarity, mesh_box_features
from .library import CadLibrary, CadModel, HoleSpec, load_cad_mesh, parse_metadata, step_supported
from .quality import (
    GRADE_THRESHOLDS,
    QUALITY_WEIGHTS,
    QualityReport,
    accuracy_score,
    chamfer_distance,
    completeness_score,
    consistency_score,
    grade_for,
    quality_report,
    uniqueness_score,
    validity_score,
)
from .rules import (
    RULES,
    DefectFinding,
    DefectReport,
    DentRule,
    HoleMeasurement,
    HoleRule,
    Rule,
    RuleBasedInspector,
    ScratchRule,
    detect_defects,
)

__all__ = [
    "CadLibrary", "CadModel", "HoleSpec", "load_cad_mesh", "parse_metadata", "step_supported",
    "classify", "CadClassifier", "ClassificationResult", "Candidate", "UNKNOWN",
    "quality_report", "QualityReport", "QUALITY_WEIGHTS", "GRADE_THRESHOLDS", "grade_for",
    "accuracy_score", "chamfer_distance", "completeness_score", "consistency_score", "validity_score",
    "uniqueness_score",
    "BoxFeatures", "box_features", "mesh_box_features", "feature_similarity",
    "detect_defects", "RuleBasedInspector", "DefectReport", "DefectFinding", "HoleMeasurement", "Rule",
    "ScratchRule", "DentRule", "HoleRule", "RULES",
    "Aligner", "Alignment", "BoxIcpAligner", "RegistrationAligner", "ALIGNERS", "make_aligner",
]
