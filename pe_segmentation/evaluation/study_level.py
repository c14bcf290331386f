"""Study-level evaluation: "is there PE in this scan, and how sure?", scored per scan.

Per case a :class:`StudyCall`: a score in [0, 1] and a yes/no call. Both come from the ``study`` section of the
``report.json`` that ``pe-seg infer`` writes beside the case's mask (:func:`find_report`). Without such a report,
or with a report that has no ``study`` section (written by an older pe-seg), they come from the predicted mask:
score 1 when it holds any embolus voxel, else 0 (:data:`MASK_SCORE_RULE`, a binary score). The truth of a scan is
whether its label holds any embolus voxel.

Over the cases (:func:`study_summary`): TP, FP, TN, FN of the calls; sensitivity and specificity with percentile
bootstrap intervals over scans; ROC AUC by the Mann-Whitney rank statistic (a positive scan scored above a
negative one counts 1, a tie 1/2) with its interval; and the ROC curve (:func:`roc_curve`). A statistic whose
denominator is empty (specificity and AUC without scans free of emboli, sensitivity and AUC without scans with
emboli) is ``None`` and its reason is listed under ``not_defined``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from pe_segmentation.errors import InputDataError
from pe_segmentation.evaluation.summary import bootstrap_ci
from pe_segmentation.io.volume_files import case_name

#: The report ``pe-seg infer`` writes into each case's folder, beside ``mask.nii.gz`` (the names are
#: ``inference.outputs.REPORT_NAME`` and ``MASK_NAME``; evaluation sits below inference and cannot import them).
REPORT_NAME = "report.json"
INFER_MASK_NAME = "mask.nii.gz"
#: Report of a mask named otherwise: ``<mask name without extension>`` + this, beside the mask.
REPORT_SUFFIX = "_report.json"
#: The score of a case without a report's ``study`` section.
MASK_SCORE_RULE = "1 when the predicted mask holds any embolus voxel, else 0 (binary)"
#: What each score source is called in ``summary.json``.
SOURCES = {"report": "report.json", "mask": "mask"}


@dataclass(frozen=True)
class StudyCall:
    """One scan's study-level answer.

    Attributes:
        score: how sure the prediction is that the scan holds PE, in [0, 1].
        pe_present: the prediction's yes/no answer.
        source: ``report`` (its ``report.json``'s ``study`` section) or ``mask`` (the mask's binary score).
        rule: how the score was made (the report's ``score_rule``, or :data:`MASK_SCORE_RULE`).
        report: the ``report.json`` read, or ``None``.
    """

    score: float
    pe_present: bool
    source: str
    rule: str
    report: Path | None = None


def mask_study_call(pred_has_voxels: bool) -> StudyCall:
    """The binary call of a mask: score 1 and PE present when it holds any embolus voxel, else 0 and absent."""
    return StudyCall(float(pred_has_voxels), bool(pred_has_voxels), "mask", MASK_SCORE_RULE)


def find_report(pred: Path) -> Path | None:
    """The ``report.json`` of a predicted mask, or ``None`` when there is none.

    ``pe-seg infer`` writes ``OUTPUT/<case>/mask.nii.gz`` and ``OUTPUT/<case>/report.json``: a mask named
    ``mask.nii.gz`` takes the ``report.json`` of its folder. Any other mask, e.g. ``preds/pe01.nii.gz``, takes
    ``preds/pe01_report.json`` (a report copied beside a renamed mask); a folder's ``report.json`` is never taken
    for a mask of another name, since a flat folder holds many cases.
    """
    pred = Path(pred)
    path = pred.parent / (REPORT_NAME if pred.name == INFER_MASK_NAME else case_name(pred) + REPORT_SUFFIX)
    return path if path.is_file() else None


def read_study_call(pred: Path, pred_has_voxels: bool) -> StudyCall:
    """The study call of one case: from its report's ``study`` section, else from its mask.

    Args:
        pred: the predicted mask (its report is found by :func:`find_report`).
        pred_has_voxels: whether the mask holds any embolus voxel (the fallback's answer).

    Raises:
        InputDataError: a report that is not JSON, or whose ``study`` section lacks a boolean ``pe_present`` or
            a ``score`` in [0, 1].
    """
    path = find_report(pred)
    if path is None:
        return mask_study_call(pred_has_voxels)
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputDataError(f"{path}: cannot read the prediction's report ({err})") from err
    study = report.get("study") if isinstance(report, dict) else None
    if study is None:
        return mask_study_call(pred_has_voxels)
    score = study.get("score") if isinstance(study, dict) else None
    present = study.get("pe_present") if isinstance(study, dict) else None
    if (
        not isinstance(score, (int, float))
        or isinstance(score, bool)
        or not (math.isfinite(score) and 0 <= score <= 1)
    ):
        raise InputDataError(f"{path}: study.score must be a number in [0, 1], got {score!r}")
    if not isinstance(present, bool):
        raise InputDataError(f"{path}: study.pe_present must be true or false, got {present!r}")
    rule = study.get("score_rule")
    return StudyCall(float(score), present, "report", str(rule) if rule else "not given in the report", path)


def roc_auc(scores: Sequence[float] | np.ndarray, truth: Sequence[bool] | np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney statistic: the share of (positive, negative) pairs where the positive scores
    higher, ties counting 1/2. NaN without positives or without negatives."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(scores)  # average ranks: ties count half
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class ROCCurve:
    """ROC operating points, one per distinct score from high to low, starting at (0, 0).

    Attributes:
        thresholds: a scan is called positive when its score is >= the threshold (``inf`` for the first point).
        fpr: false-positive rate (1 - specificity) at each threshold.
        tpr: true-positive rate (sensitivity) at each threshold.
    """

    thresholds: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray


def roc_curve(scores: Sequence[float] | np.ndarray, truth: Sequence[bool] | np.ndarray) -> ROCCurve:
    """The ROC curve of scores against truths (needs at least one positive and one negative).

    Raises:
        ValueError: no positives or no negatives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        raise ValueError("a ROC curve needs scans with and without emboli")
    thresholds = np.unique(scores)[::-1]
    tpr = np.array([(scores[truth] >= t).mean() for t in thresholds])
    fpr = np.array([(scores[~truth] >= t).mean() for t in thresholds])
    return ROCCurve(np.append(np.inf, thresholds), np.append(0.0, fpr), np.append(0.0, tpr))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _defined(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _ci(low: float, high: float) -> list[float] | None:
    return [low, high] if math.isfinite(low) and math.isfinite(high) else None


def _counts(called: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    return {
        "tp": int((called & truth).sum()),
        "fp": int((called & ~truth).sum()),
        "tn": int((~called & ~truth).sum()),
        "fn": int((~called & truth).sum()),
    }


def _not_defined(n_pos: int, n_neg: int) -> dict[str, str]:
    """Why a statistic is not defined, by name (empty when every statistic is)."""
    reasons = {}
    if not n_pos:
        reasons["sensitivity"] = "not defined: no scan with emboli"
    if not n_neg:
        reasons["specificity"] = "not defined: no scan without emboli"
    if not n_pos or not n_neg:
        reasons["auc"] = "not defined: needs scans with and without emboli"
    return reasons


def _source(calls: Sequence[StudyCall]) -> str:
    """``report.json``, ``mask``, or ``report.json and mask`` when the cases differ."""
    used = [SOURCES[s] for s in SOURCES if any(c.source == s for c in calls)]
    return " and ".join(used)


def study_summary(
    calls: Sequence[StudyCall], truth: Sequence[bool], n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The ``study_level`` section of ``summary.json``.

    Args:
        calls: each scan's call.
        truth: whether each scan's label holds any embolus voxel.
        n_resamples, seed: the bootstrap of the intervals (scans resampled with replacement).
    """
    scores = np.array([c.score for c in calls], dtype=np.float64)
    called = np.array([c.pe_present for c in calls], dtype=bool)
    is_pe = np.asarray(truth, dtype=bool)
    n_pos, n_neg = int(is_pe.sum()), int((~is_pe).sum())
    counts = _counts(called, is_pe)
    statistics = {
        "sensitivity": lambda i: _ratio((called[i] & is_pe[i]).sum(), is_pe[i].sum()),
        "specificity": lambda i: _ratio((~called[i] & ~is_pe[i]).sum(), (~is_pe[i]).sum()),
        "auc": lambda i: roc_auc(scores[i], is_pe[i]),
    }
    summary: dict[str, Any] = {
        "truth": "the label holds any embolus voxel",
        "call": "study.pe_present of the report; without one, the mask holds any embolus voxel",
        "score_source": _source(calls),
        "scores_from_report": sum(c.source == "report" for c in calls),
        "scores_from_mask": sum(c.source == "mask" for c in calls),
        "score_rules": dict(Counter(c.rule for c in calls)),
        "scans": len(calls),
        "with_emboli": n_pos,
        "without_emboli": n_neg,
        **counts,
    }
    every = np.arange(len(calls))
    for name, statistic in statistics.items():
        summary[name] = _defined(statistic(every))
        summary[f"{name}_ci95"] = _ci(
            *bootstrap_ci(len(calls), statistic, n_resamples=n_resamples, seed=seed)
        )
    summary["not_defined"] = _not_defined(n_pos, n_neg)
    return summary
