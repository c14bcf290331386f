"""Evaluation of embolus segmentations: voxel metrics, per-embolus detection and FROC, the study-level answer
(PE in the scan or not: sensitivity, specificity, ROC AUC), summaries, plots.

Typical use::

    from pe_segmentation.evaluation import EvaluationSettings, evaluate_cases, match_cases

    matching = match_cases("predictions/", "labels/", prob="predictions/")
    result = evaluate_cases(matching, "evaluation/", EvaluationSettings(nsd_tolerance_mm=2.0))
    print(result.summary["voxel"]["dice"]["mean"], result.summary["froc"]["sensitivity"])

Metric definitions and the conventions for empty masks are in ``docs/evaluation.md``.
"""

from pe_segmentation.evaluation.detection import (
    FROC_FP_RATES,
    CaseCandidates,
    DetectionResult,
    EmbolusRecord,
    FROCCurve,
    HitCriterion,
    detect_emboli,
    froc_candidates,
    froc_curve,
    label_components,
    match_components,
    sensitivity_at,
    threshold_at,
)
from pe_segmentation.evaluation.matching import CaseMatching, CasePair, collect_cases, match_cases
from pe_segmentation.evaluation.plots import plot_froc, plot_metric_boxes, plot_roc
from pe_segmentation.evaluation.report import render_report, write_report
from pe_segmentation.evaluation.runner import EvaluationResult, evaluate_cases
from pe_segmentation.evaluation.scoring import CaseEvaluation, embolus_mask, evaluate_case
from pe_segmentation.evaluation.settings import EvaluationSettings
from pe_segmentation.evaluation.study_level import (
    ROCCurve,
    StudyCall,
    find_report,
    mask_study_call,
    read_study_call,
    roc_auc,
    roc_curve,
    study_summary,
)
from pe_segmentation.evaluation.summary import bootstrap_ci, describe
from pe_segmentation.evaluation.voxel_metrics import (
    VOXEL_METRICS,
    ConfusionCounts,
    confusion_counts,
    overlap_metrics,
    surface_metrics,
    voxel_metrics,
)

__all__ = [
    "FROC_FP_RATES",
    "VOXEL_METRICS",
    "CaseCandidates",
    "CaseEvaluation",
    "CaseMatching",
    "CasePair",
    "ConfusionCounts",
    "DetectionResult",
    "EmbolusRecord",
    "EvaluationResult",
    "EvaluationSettings",
    "FROCCurve",
    "HitCriterion",
    "ROCCurve",
    "StudyCall",
    "bootstrap_ci",
    "collect_cases",
    "confusion_counts",
    "describe",
    "detect_emboli",
    "embolus_mask",
    "evaluate_case",
    "evaluate_cases",
    "find_report",
    "froc_candidates",
    "froc_curve",
    "label_components",
    "mask_study_call",
    "match_cases",
    "match_components",
    "overlap_metrics",
    "plot_froc",
    "plot_metric_boxes",
    "plot_roc",
    "read_study_call",
    "render_report",
    "roc_auc",
    "roc_curve",
    "sensitivity_at",
    "study_summary",
    "surface_metrics",
    "threshold_at",
    "voxel_metrics",
    "write_report",
]
