"""Over-case results of an evaluation: the sections of ``summary.json`` and the FROC over all scans.

Statistics come from :mod:`~pe_segmentation.evaluation.summary` (means, medians and percentile bootstrap
intervals over scans, all with the settings' resamples and seed).

Voxel metrics are summarised over the cases whose label holds an embolus: on a scan without emboli Dice is
either 1 or 0 and sensitivity is undefined, and averaging such values in is how tables come to look better than
the model is. Scans without emboli are summarised on their own (how many got any predicted voxel, and how much),
and they count in false positives per scan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pe_segmentation.data.embolus_sizes import CLASS_DEFINITIONS, SIZE_CLASSES
from pe_segmentation.evaluation.detection import (
    CaseCandidates,
    EmbolusRecord,
    FROCCurve,
    froc_curve,
    sensitivity_at,
    threshold_at,
)
from pe_segmentation.evaluation.matching import CaseMatching
from pe_segmentation.evaluation.scoring import CaseEvaluation
from pe_segmentation.evaluation.settings import EvaluationSettings
from pe_segmentation.evaluation.study_level import study_summary
from pe_segmentation.evaluation.summary import bootstrap_ci, describe
from pe_segmentation.evaluation.voxel_metrics import VOXEL_METRICS
from pe_segmentation.versions import __version__


def summarize_cases(
    cases: Sequence[CaseEvaluation], matching: CaseMatching | None, settings: EvaluationSettings
) -> dict[str, Any]:
    """The ``summary.json`` of scored cases, without its ``froc`` and ``files`` sections (added by the runner).

    Args:
        cases: every scored case.
        matching: the pairing the cases came from (its unpaired files are listed), or ``None``.
        settings: the scoring settings (recorded, and their resamples and seed used for every interval).
    """
    positive = [c for c in cases if c.has_emboli]
    negative = [c for c in cases if not c.has_emboli]
    boot = _bootstrap(settings)
    voxel = {name: describe([c.row[name] for c in positive], **boot) for name in VOXEL_METRICS}
    with_fp = [c for c in negative if c.row["pred_voxels"] > 0]
    summary: dict[str, Any] = {
        "pe_seg_version": __version__,
        "settings": settings.to_dict(),
        "cases": {
            "evaluated": len(cases),
            "with_emboli": len(positive),
            "without_emboli": len(negative),
            "predictions_without_label": matching.predictions_without_label if matching else [],
            "labels_without_prediction": matching.labels_without_prediction if matching else [],
        },
        "voxel": {"over": "cases with emboli", **voxel},
        "cases_without_emboli": {
            "cases": len(negative),
            "with_predicted_voxels": len(with_fp),
            "false_positive_volume_ml": describe([c.row["pred_volume_ml"] for c in negative], **boot),
            **_false_alarms(negative, settings),
        },
        "detection": _detection_summary(cases, settings),
        "study_level": study_summary([c.study_call for c in cases], [c.has_emboli for c in cases], **boot),
    }
    return summary


def froc_summary(
    candidates: Sequence[CaseCandidates], settings: EvaluationSettings
) -> tuple[dict[str, Any], FROCCurve]:
    """The FROC over every scan's candidates and its ``summary.json`` section.

    Sensitivity is read at the settings' FP rates, with a bootstrap interval per rate from curves of resampled
    scans.

    Returns:
        The section and the curve (for ``froc.csv`` and ``froc.png``).
    """
    curve = froc_curve(candidates)
    rates = list(settings.fp_rates)
    readings = sensitivity_at(curve, rates, settings.froc_interpolation)

    def statistic(indices: np.ndarray) -> np.ndarray:
        sample = froc_curve([candidates[i] for i in indices])
        return sensitivity_at(sample, rates, settings.froc_interpolation)

    low, high = bootstrap_ci(len(candidates), statistic, **_bootstrap(settings))
    summary = {
        "min_probability": settings.froc_min_probability,
        "interpolation": settings.froc_interpolation,
        "scans": curve.n_scans,
        "emboli": curve.n_emboli,
        "operating_points": len(curve.thresholds),
        "max_fp_per_scan": float(curve.fp_per_scan[-1]),
        "max_sensitivity": float(curve.sensitivity[-1]),
        "fp_rates": rates,
        "sensitivity": readings,
        # the operating point of each reading, as the lowest clot peak probability kept (inference.min_peak)
        "score_thresholds": [float(t) if np.isfinite(t) else None for t in threshold_at(curve, rates)],
        "ci95_low": low,
        "ci95_high": high,
        "mean_sensitivity": float(np.mean(readings)),
    }
    return summary, curve


def _bootstrap(settings: EvaluationSettings) -> dict[str, int]:
    """The resamples and seed every interval of one evaluation uses, as keyword arguments."""
    return {"n_resamples": settings.n_resamples, "seed": settings.seed}


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN (undefined) when the denominator is zero."""
    return numerator / denominator if denominator else math.nan


def _false_alarms(negative: Sequence[CaseEvaluation], settings: EvaluationSettings) -> dict[str, Any]:
    """False-positive clots on scans without emboli ("how many false alarms on normal scans"): every predicted
    component there is one. Their total, the scans with any, and the mean per such scan with its interval
    (``None`` without such scans)."""
    false_pos = np.array([c.detection.false_positives for c in negative], dtype=np.float64)
    low, high = bootstrap_ci(len(negative), lambda i: float(false_pos[i].mean()), **_bootstrap(settings))
    return {
        "false_positive_clots": int(false_pos.sum()),
        "with_false_positive_clots": int((false_pos > 0).sum()),
        "fp_clots_per_scan": float(false_pos.mean()) if len(negative) else None,
        "fp_clots_per_scan_ci95": [low, high] if len(negative) else None,
    }


def _detection_summary(cases: Sequence[CaseEvaluation], settings: EvaluationSettings) -> dict[str, Any]:
    """Per-embolus detection over all scans: pooled sensitivity and FP per scan with intervals, by size class,
    and the per-case distributions."""
    emboli = np.array([c.detection.n_emboli for c in cases], dtype=np.float64)
    detected = np.array([c.detection.n_detected for c in cases], dtype=np.float64)
    false_pos = np.array([c.detection.false_positives for c in cases], dtype=np.float64)
    boot = _bootstrap(settings)
    sens_ci = bootstrap_ci(len(cases), lambda i: _ratio(detected[i].sum(), emboli[i].sum()), **boot)
    fp_ci = bootstrap_ci(len(cases), lambda i: float(false_pos[i].mean()), **boot)
    return {
        "hit_rule": settings.hit.describe(),
        "emboli": int(emboli.sum()),
        "detected": int(detected.sum()),
        "sensitivity": _ratio(detected.sum(), emboli.sum()),
        "sensitivity_ci95": list(sens_ci),
        "false_positives": int(false_pos.sum()),
        "scans": len(cases),
        "fp_per_scan": float(false_pos.mean()),
        "fp_per_scan_ci95": list(fp_ci),
        "by_size": _by_size_class([e for c in cases for e in c.detection.emboli]),
        "per_case": {
            "embolus_sensitivity": describe([c.row["embolus_sensitivity"] for c in cases], **boot),
            "false_positives": describe(false_pos, **boot),
        },
    }


def _by_size_class(records: Sequence[EmbolusRecord]) -> dict[str, dict[str, Any]]:
    """Emboli, detected emboli and sensitivity per size class (small emboli are the ones models miss)."""
    by_size = {}
    for size in SIZE_CLASSES:
        members = [e for e in records if e.size_class == size]
        by_size[size] = {
            "definition": CLASS_DEFINITIONS[size],
            "emboli": len(members),
            "detected": sum(e.detected for e in members),
            "sensitivity": _ratio(sum(e.detected for e in members), len(members)),
        }
    return by_size
