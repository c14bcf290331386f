"""A short Markdown report of an evaluation that links its CSV, JSON and PNG files (relative links)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pe_segmentation.evaluation.plots import METRIC_TITLES
from pe_segmentation.io.atomic import atomic_write_text

_PERCENT = {"sensitivity", "specificity", "precision", "accuracy"}


def _number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _interval(low: Any, high: Any, percent: bool = False, digits: int = 3) -> str:
    if low is None or high is None:
        return "n/a"
    if percent:
        return f"{_percent(low)} to {_percent(high)}"
    return f"{_number(low, digits)} to {_number(high, digits)}"


def _voxel_table(voxel: Mapping[str, Any]) -> list[str]:
    lines = [
        "| metric | cases | mean ± SD | median | 95% CI of the mean | undefined |",
        "| --- | ---: | --- | ---: | --- | ---: |",
    ]
    for name, stats in voxel.items():
        if not isinstance(stats, Mapping):
            continue
        digits = 2 if name.endswith("_mm") else 3
        std = "" if stats["std"] is None else f" ± {_number(stats['std'], digits)}"
        lines.append(
            f"| {METRIC_TITLES.get(name, name)} | {stats['n']} | {_number(stats['mean'], digits)}{std} | "
            f"{_number(stats['median'], digits)} | {_interval(stats['ci95_low'], stats['ci95_high'], digits=digits)} "
            f"| {stats['n_undefined']} |"
        )
    return lines


def render_report(summary: Mapping[str, Any], problems: Sequence[str] = ()) -> str:
    """The report's Markdown from a JSON-ready summary (see ``summary.json``)."""
    files = summary.get("files", {})
    lines = [
        *_introduction(summary, problems),
        *_voxel_section(summary, files),
        *_negative_section(summary["cases_without_emboli"]),
        *_detection_section(summary["detection"]),
        *_study_section(summary["study_level"], files),
    ]
    froc = summary.get("froc")
    if froc:
        lines += _froc_section(froc, files)
    lines += _files_section(files)
    lines += _conventions_section(summary["settings"])
    return "\n".join(lines) + "\n"


def _introduction(summary: Mapping[str, Any], problems: Sequence[str]) -> list[str]:
    """Title, what was evaluated, and the unpaired files (which a reader must know were left out)."""
    cases = summary["cases"]
    lines = [
        "# PE segmentation evaluation",
        "",
        f"{cases['evaluated']} scans evaluated: {cases['with_emboli']} with emboli, {cases['without_emboli']} "
        f"without. pe-seg {summary.get('pe_seg_version', '')}.",
    ]
    if problems:
        lines += ["", "**Unpaired files** (not evaluated):", *[f"- {p}" for p in problems]]
    return lines


def _voxel_section(summary: Mapping[str, Any], files: Mapping[str, str]) -> list[str]:
    """The voxel metrics over scans with emboli, with how they were computed, and the box plots."""
    cases, settings = summary["cases"], summary["settings"]
    lines = [
        "",
        f"## Voxel metrics ({cases['with_emboli']} scans with emboli)",
        "",
        "Embolus class only (background is not averaged in). Distances in mm; normalised surface Dice at "
        f"{settings['nsd_tolerance_mm']:g} mm. Confidence intervals: percentile bootstrap over scans "
        f"({settings['bootstrap_resamples']} resamples, seed {settings['seed']}).",
        "",
        *_voxel_table(summary["voxel"]),
    ]
    if "boxplots" in files:
        lines += ["", f"![per-case metrics]({files['boxplots']})"]
    return lines


def _negative_section(negative: Mapping[str, Any]) -> list[str]:
    """How much was predicted on scans without emboli (nothing when there are none)."""
    if not negative["cases"]:
        return []
    volume = negative["false_positive_volume_ml"]
    low, high = negative["fp_clots_per_scan_ci95"]
    return [
        "",
        "## Scans without emboli",
        "",
        f"{negative['with_predicted_voxels']} of {negative['cases']} got predicted embolus voxels "
        f"(mean {_number(volume['mean'])} mL, max {_number(volume['max'])} mL).",
        f"False alarms: {negative['false_positive_clots']} false-positive clot(s) on these scans, on "
        f"{negative['with_false_positive_clots']} of them: {_number(negative['fp_clots_per_scan'], 2)} per scan "
        f"without emboli (95% CI {_interval(low, high, digits=2)}).",
    ]


def _detection_section(detection: Mapping[str, Any]) -> list[str]:
    """Per-embolus detection: the hit rule, pooled sensitivity and false positives, and sensitivity by size."""
    sens_low, sens_high = detection["sensitivity_ci95"]
    fp_low, fp_high = detection["fp_per_scan_ci95"]
    return [
        "",
        "## Per-embolus detection",
        "",
        f"Emboli are 26-connected components of the label; one is detected by {detection['hit_rule']}. "
        "A predicted component that detects no embolus is a false positive.",
        "",
        "| emboli | detected | sensitivity (95% CI) | false positives | FP per scan (95% CI) |",
        "| ---: | ---: | --- | ---: | --- |",
        f"| {detection['emboli']} | {detection['detected']} | {_percent(detection['sensitivity'])} "
        f"({_interval(sens_low, sens_high, percent=True)}) | {detection['false_positives']} | "
        f"{_number(detection['fp_per_scan'], 2)} ({_interval(fp_low, fp_high, digits=2)}) |",
        "",
        "| size class | emboli | detected | sensitivity |",
        "| --- | ---: | ---: | ---: |",
        *[
            f"| {size} ({info['definition']}) | {info['emboli']} | {info['detected']} | {_percent(info['sensitivity'])} |"
            for size, info in detection["by_size"].items()
        ],
    ]


def _study_section(study: Mapping[str, Any], files: Mapping[str, str]) -> list[str]:
    """Study level (is there PE in the scan?): counts, sensitivity, specificity and AUC with their intervals,
    where the scores came from, what is not defined, and the ROC figure."""
    rules = "; ".join(f"{rule} ({n} scans)" for rule, n in study["score_rules"].items())
    lines = [
        "",
        "## Study level (PE in the scan or not)",
        "",
        f"Truth: {study['truth']}. Call: {study['call']}. Scores from {study['score_source']} "
        f"({study['scores_from_report']} from report.json, {study['scores_from_mask']} from the mask): {rules}.",
        "",
        "| scans | TP | FP | TN | FN | sensitivity (95% CI) | specificity (95% CI) | ROC AUC (95% CI) |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
        f"| {study['scans']} | {study['tp']} | {study['fp']} | {study['tn']} | {study['fn']} | "
        + " | ".join(
            f"{fmt(study[name])} ({_study_interval(study[name + '_ci95'], percent=fmt is _percent)})"
            for name, fmt in (("sensitivity", _percent), ("specificity", _percent), ("auc", _number))
        )
        + " |",
    ]
    if study["not_defined"]:
        lines += ["", *[f"- {name}: {reason}." for name, reason in study["not_defined"].items()]]
    if "roc_png" in files:
        lines += ["", f"![study-level ROC]({files['roc_png']})"]
    return lines


def _study_interval(interval: Sequence[float] | None, percent: bool) -> str:
    return "n/a" if interval is None else _interval(interval[0], interval[1], percent=percent)


def _froc_section(froc: Mapping[str, Any], files: Mapping[str, str]) -> list[str]:
    """The FROC readings at fixed FP rates with their intervals, where the curve ends, and its figure."""
    rates = froc["fp_rates"]
    reading = (
        "best operating point with at most that many FP per scan"
        if froc["interpolation"] == "step"
        else "linear between operating points"
    )
    lines = [
        "",
        "## FROC",
        "",
        f"Candidates: 26-connected components of probability >= {froc['min_probability']:g}, scored by their "
        f"maximum probability. Sensitivity at each rate: {froc['interpolation']} reading of the curve "
        f"({reading}).",
        "",
        "| FP per scan | " + " | ".join(f"{r:g}" for r in rates) + " | mean |",
        "| --- |" + " ---: |" * (len(rates) + 1),
        "| sensitivity | "
        + " | ".join(_percent(s) for s in froc["sensitivity"])
        + f" | {_percent(froc['mean_sensitivity'])} |",
        "| 95% CI | "
        + " | ".join(
            _interval(lo, hi, percent=True)
            for lo, hi in zip(froc["ci95_low"], froc["ci95_high"], strict=True)
        )
        + " | |",
    ]
    if "score_thresholds" in froc:  # summaries written before it was added lack it
        lines.append(
            "| clot peak >= (`--min-peak`) | "
            + " | ".join("none" if t is None else f"{t:.3f}" for t in froc["score_thresholds"])
            + " | |",
        )
    if froc["max_fp_per_scan"] < max(rates):
        lines += [
            "",
            f"The curve ends at {froc['max_fp_per_scan']:.2f} FP per scan (candidates below "
            f"{froc['min_probability']:g} are not considered); higher rates repeat its last sensitivity.",
        ]
    if "froc_png" in files:
        lines += ["", f"![FROC]({files['froc_png']})"]
    return lines


#: The outputs the report links to, in this order, with what each holds.
_FILE_LINKS = {
    "per_case": "per-case metrics (CSV)",
    "emboli": "one row per reference embolus (CSV)",
    "summary": "all statistics (JSON)",
    "boxplots": "box plots (PNG)",
    "froc_csv": "FROC operating points (CSV)",
    "froc_png": "FROC curve (PNG)",
    "roc_png": "study-level ROC curve (PNG)",
}


def _files_section(files: Mapping[str, str]) -> list[str]:
    """Relative links to the evaluation's other outputs."""
    return [
        "",
        "## Files",
        "",
        *[f"- [{files[key]}]({files[key]}): {text}" for key, text in _FILE_LINKS.items() if key in files],
    ]


def _conventions_section(settings: Mapping[str, Any]) -> list[str]:
    """What counts as embolus, and how undefined values and surface distances are handled."""
    return [
        "",
        "## Conventions",
        "",
        "- Label and prediction: voxels with value "
        + ("> 0" if settings["embolus_label"] == "any value > 0" else f"== {settings['embolus_label']}")
        + " are embolus.",
        "- A ratio with a zero denominator is undefined and left out of the statistics (counted as 'undefined'): "
        "e.g. precision of an empty prediction. HD95 and ASSD are undefined when exactly one of label and "
        "prediction is empty; then Dice, IoU and NSD are 0.",
        "- HD95: the larger of the two directed 95th percentiles of surface distances (MONAI); ASSD: mean of "
        "both directed surface distances; NSD: MONAI's normalised surface Dice.",
        "- Voxel statistics use scans with emboli only; false positives per scan use every scan.",
        "- Study level: ROC AUC is the Mann-Whitney statistic (a tie between a scan with and one without emboli "
        "counts 1/2); a mask without a report.json scores 1 when it holds any embolus voxel, else 0.",
    ]


def write_report(
    path: str | os.PathLike[str], summary: Mapping[str, Any], problems: Sequence[str] = ()
) -> Path:
    """Write :func:`render_report` atomically to ``path`` and return it."""
    path = Path(path)
    atomic_write_text(path, render_report(summary, problems))
    return path
