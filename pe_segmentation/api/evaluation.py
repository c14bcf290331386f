"""``evaluate``: score predicted masks against reference labels, what ``pe-seg evaluate`` and the bundle's
evaluation handler write."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pe_segmentation.errors import ConfigError, InputDataError
from pe_segmentation.evaluation import (
    CaseMatching,
    CasePair,
    EvaluationResult,
    EvaluationSettings,
    evaluate_cases,
    match_cases,
)

log = logging.getLogger(__name__)


def evaluate(
    pred: str | os.PathLike[str] | Sequence[CasePair],
    label: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] = "evaluation",
    *,
    prob: str | os.PathLike[str] | None = None,
    settings: EvaluationSettings | None = None,
    section: str = "training",
    pred_key: str = "pred",
    label_key: str = "label",
    prob_key: str = "prob",
    strict: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Voxel metrics, per-embolus detection, the study-level answer, FROC, bootstrap intervals, plots and a
    Markdown report.

    Writes ``per_case.csv``, ``emboli.csv``, ``summary.json``, ``boxplots.png``, ``report.md``, with scans with
    and without emboli ``roc.png`` (study level: each prediction's ``report.json`` score, else its mask's) and,
    with probability maps, ``froc.csv`` and ``froc.png`` into ``output``.

    Args:
        pred: predicted masks (a folder, a datalist ``.json`` or one file), or the pairs themselves
            (:class:`~pe_segmentation.evaluation.CasePair`, e.g. a bundle's predictions with their labels).
        label: the reference labels (a folder, a datalist ``.json`` or one file); with paths in ``pred``.
        output: the results folder (created).
        prob: probability maps, for FROC (a folder or a datalist ``.json``).
        settings: scoring settings (surface tolerance, hit criterion, bootstrap); the defaults otherwise.
        section, pred_key, label_key, prob_key: where a datalist ``.json`` lists the files.
        strict: refuse unpaired cases instead of warning about them.
        progress: a progress bar over the cases.

    Raises:
        ConfigError: no labels given for a folder of predictions.
        InputDataError: nothing to pair, unpaired cases with ``strict``, unreadable or mismatched volumes.
    """
    cases: CaseMatching | Sequence[CasePair]
    if isinstance(pred, (str, os.PathLike)):
        if label is None:
            raise ConfigError("evaluate needs --label: the reference labels to score the predictions against")
        cases = match_cases(pred, label, prob, section, pred_key, label_key, prob_key)
        problems = cases.problems()
        if problems and strict:
            raise InputDataError("; ".join(problems))
        for line in problems:
            log.warning("%s", line)
    else:
        cases = list(pred)
    result = evaluate_cases(cases, output, settings or EvaluationSettings(), progress=progress)
    log_summary(result.summary)
    log.info("wrote %s", result.files["report"])
    return result


def log_summary(summary: Mapping[str, Any]) -> None:
    """Log the headline figures of an evaluation: Dice with its interval, per-embolus sensitivity at its false
    positives per scan, false alarms on scans without emboli, the study-level answer, and FROC sensitivities."""
    voxel, detection = summary["voxel"], summary["detection"]
    dice = voxel["dice"]
    if dice["n"]:
        log.info(
            "Dice %.3f (95%% CI %.3f to %.3f, median %.3f) over %d scans with emboli",
            dice["mean"],
            dice["ci95_low"],
            dice["ci95_high"],
            dice["median"],
            dice["n"],
        )
    if detection["emboli"]:
        log.info(
            "per-embolus sensitivity %.1f%% (%d/%d) at %.2f false positives per scan",
            100 * detection["sensitivity"],
            detection["detected"],
            detection["emboli"],
            detection["fp_per_scan"],
        )
        classes = [
            f"{size} {entry['detected']}/{entry['emboli']}"
            + ("" if not entry["emboli"] else f" ({100 * entry['sensitivity']:.0f}%)")
            for size, entry in detection.get("by_size", {}).items()
        ]
        if classes:
            log.info("emboli found by size: %s", ", ".join(classes))
    negative = summary["cases_without_emboli"]
    if negative["cases"]:
        log.info(
            "scans without emboli: %d false-positive clot(s) on %d of %d (%.2f per scan)",
            negative["false_positive_clots"],
            negative["with_false_positive_clots"],
            negative["cases"],
            negative["fp_clots_per_scan"],
        )
    log_study_level(summary["study_level"])
    froc = summary.get("froc")
    if froc:
        readings = ", ".join(
            f"{100 * s:.0f}% @ {r:g}" for r, s in zip(froc["fp_rates"], froc["sensitivity"], strict=True)
        )
        log.info("FROC sensitivity at FP/scan: %s", readings)


def log_study_level(study: Mapping[str, Any]) -> None:
    """Log the study-level answer: TP/FP/TN/FN, sensitivity, specificity and ROC AUC with their intervals, the
    source of the scores, and which of them are not defined."""

    def figure(name: str, percent: bool) -> str:
        value, interval = study[name], study[f"{name}_ci95"]
        if value is None:
            return f"{name} not defined"
        scale, unit, digits = (100, "%", 1) if percent else (1, "", 3)
        text = f"{name} {scale * value:.{digits}f}{unit}"
        if interval is not None:
            text += f" (95% CI {scale * interval[0]:.{digits}f} to {scale * interval[1]:.{digits}f}{unit})"
        return text

    log.info(
        "study level (%d scans, scores from %s): TP %d, FP %d, TN %d, FN %d; %s; %s; %s",
        study["scans"],
        study["score_source"],
        study["tp"],
        study["fp"],
        study["tn"],
        study["fn"],
        figure("sensitivity", True),
        figure("specificity", True),
        figure("auc", False),
    )
    for name, reason in study["not_defined"].items():
        log.info("study-level %s %s", name, reason)
