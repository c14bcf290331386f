"""Evaluate paired predictions against labels and write the per-case CSVs, summary JSON, plots and report.

The orchestrator of ``pe-seg evaluate``; each step lives in its own module:

* one case: reading and scoring (:mod:`~pe_segmentation.evaluation.scoring`);
* over cases: the ``summary.json`` sections and the FROC (:mod:`~pe_segmentation.evaluation.aggregate`);
* the CSV tables (:mod:`~pe_segmentation.evaluation.tables`), figures
  (:mod:`~pe_segmentation.evaluation.plots`) and the Markdown report (:mod:`~pe_segmentation.evaluation.report`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pe_segmentation.errors import InputDataError
from pe_segmentation.evaluation.aggregate import froc_summary, summarize_cases
from pe_segmentation.evaluation.detection import CaseCandidates
from pe_segmentation.evaluation.matching import CaseMatching, CasePair
from pe_segmentation.evaluation.plots import plot_froc, plot_metric_boxes, plot_roc
from pe_segmentation.evaluation.report import write_report
from pe_segmentation.evaluation.scoring import CaseEvaluation, evaluate_case
from pe_segmentation.evaluation.settings import EvaluationSettings
from pe_segmentation.evaluation.study_level import roc_curve
from pe_segmentation.evaluation.summary import json_ready
from pe_segmentation.evaluation.tables import write_emboli_csv, write_froc_csv, write_per_case_csv
from pe_segmentation.evaluation.voxel_metrics import VOXEL_METRICS
from pe_segmentation.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: File names written into the output folder.
OUTPUT_FILES = {
    "per_case": "per_case.csv",
    "emboli": "emboli.csv",
    "summary": "summary.json",
    "boxplots": "boxplots.png",
    "froc_csv": "froc.csv",
    "froc_png": "froc.png",
    "roc_png": "roc.png",
    "report": "report.md",
}


@dataclass
class EvaluationResult:
    """What :func:`evaluate_cases` computed and wrote."""

    cases: list[CaseEvaluation]
    summary: dict[str, Any]
    files: dict[str, Path]


def evaluate_cases(
    matching: CaseMatching | Sequence[CasePair],
    output_dir: str | os.PathLike[str],
    settings: EvaluationSettings | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate every pair and write ``per_case.csv``, ``emboli.csv``, ``summary.json``, ``boxplots.png``,
    ``report.md``, with scans with and without emboli ``roc.png`` (study level), and with probability maps
    ``froc.csv`` and ``froc.png`` into ``output_dir``.

    Args:
        matching: the pairs (from :func:`~pe_segmentation.evaluation.matching.match_cases`) or a list of pairs.
        output_dir: the folder to write (created).
        settings: scoring settings (defaults: :class:`EvaluationSettings`).
        progress: show a progress bar over cases.

    Raises:
        InputDataError: a case cannot be read or does not fit (named with its file).
        OutputError: an output cannot be written.
    """
    settings = settings or EvaluationSettings()
    case_matching = matching if isinstance(matching, CaseMatching) else CaseMatching(list(matching))
    _check_pairs(case_matching.pairs)
    cases = [
        evaluate_case(pair, settings)
        for pair in tqdm(case_matching.pairs, desc="evaluate", unit="case", disable=not progress)
    ]
    _warn_multi_valued_labels(cases)
    output = Path(output_dir)
    summary = summarize_cases(cases, case_matching, settings)
    files = {
        "per_case": write_per_case_csv(output / OUTPUT_FILES["per_case"], cases),
        "emboli": write_emboli_csv(output / OUTPUT_FILES["emboli"], cases),
        "boxplots": _plot_boxes(cases, output / OUTPUT_FILES["boxplots"]),
    }
    if summary["study_level"]["auc"] is not None:
        files["roc_png"] = _plot_roc(cases, summary["study_level"], output / OUTPUT_FILES["roc_png"])
    candidates = _all_candidates(cases)
    if candidates is not None:
        files.update(_write_froc(candidates, settings, summary, output))
    _write_summary_and_report(summary, files, case_matching, output)
    return EvaluationResult(cases, summary, files)


def _check_pairs(pairs: Sequence[CasePair]) -> None:
    """Refuse an empty evaluation, and probability maps for only some cases (the FROC needs every scan's).

    Raises:
        InputDataError: no pairs, or probability maps for some cases only.
    """
    if not pairs:
        raise InputDataError("nothing to evaluate: no cases")
    with_prob = [p.prob is not None for p in pairs]
    if any(with_prob) and not all(with_prob):
        raise InputDataError("probability maps must be given for every case or for none")


def _warn_multi_valued_labels(cases: Sequence[CaseEvaluation]) -> None:
    """Warn when labels hold several non-zero values: all of them count as embolus, which may not be meant."""
    multi_valued = [c.row["case"] for c in cases if len(c.label_values) > 1]
    if multi_valued:
        log.warning(
            "%d label(s) hold several non-zero values (e.g. %s); all count as embolus. Pass --embolus-label to "
            "pick one.",
            len(multi_valued),
            multi_valued[0],
        )


def _plot_boxes(cases: Sequence[CaseEvaluation], path: Path) -> Path:
    """Draw ``boxplots.png``: voxel metrics and per-embolus sensitivity over the cases with emboli (as
    summarised), false positives over every scan."""
    positive = [c for c in cases if c.has_emboli]
    columns: dict[str, list[float]] = {name: [c.row[name] for c in positive] for name in VOXEL_METRICS}
    columns["embolus_sensitivity"] = [c.row["embolus_sensitivity"] for c in positive]
    columns["false_positives"] = [c.row["false_positives"] for c in cases]
    return plot_metric_boxes(
        columns, path, title=f"{len(positive)} cases with emboli (false positives: all {len(cases)} scans)"
    )


def _plot_roc(cases: Sequence[CaseEvaluation], study: dict[str, Any], path: Path) -> Path:
    """Draw ``roc.png``: the study-level ROC of the cases' scores, with the yes/no calls' operating point."""
    calls = [c.study_call for c in cases]
    curve = roc_curve([c.score for c in calls], [c.has_emboli for c in cases])
    return plot_roc(
        curve.fpr,
        curve.tpr,
        path,
        auc=study["auc"],
        operating_point=(1 - study["specificity"], study["sensitivity"]),
        title=f"Study level: {study['with_emboli']} scans with emboli, {study['without_emboli']} without "
        f"(scores: {study['score_source']})",
    )


def _all_candidates(cases: Sequence[CaseEvaluation]) -> list[CaseCandidates] | None:
    """Every case's FROC candidates, or ``None`` unless every case has them (probability maps were given)."""
    candidates = [c.candidates for c in cases if c.candidates is not None]
    return candidates if len(candidates) == len(cases) else None


def _write_froc(
    candidates: Sequence[CaseCandidates], settings: EvaluationSettings, summary: dict[str, Any], output: Path
) -> dict[str, Path]:
    """Add the ``froc`` section to ``summary`` and write ``froc.csv`` and ``froc.png``, the latter with the
    binary masks' operating point from the detection section.

    Returns:
        The written files by key (``froc_csv``, ``froc_png``).
    """
    froc, curve = froc_summary(candidates, settings)
    summary["froc"] = froc
    csv_path = write_froc_csv(output / OUTPUT_FILES["froc_csv"], curve)
    detection = summary["detection"]
    png_path = plot_froc(
        curve.fp_per_scan,
        curve.sensitivity,
        output / OUTPUT_FILES["froc_png"],
        froc["fp_rates"],
        froc["sensitivity"],
        operating_point=(detection["fp_per_scan"], detection["sensitivity"]),
        title=f"FROC: {curve.n_emboli} emboli in {curve.n_scans} scans",
    )
    return {"froc_csv": csv_path, "froc_png": png_path}


def _write_summary_and_report(
    summary: dict[str, Any], files: dict[str, Path], matching: CaseMatching, output: Path
) -> None:
    """Write ``summary.json`` (its ``files`` section names every output, the report included) and then
    ``report.md`` from it; both are added to ``files``."""
    files["summary"] = output / OUTPUT_FILES["summary"]
    summary["files"] = {key: path.name for key, path in files.items()}
    summary["files"]["report"] = OUTPUT_FILES["report"]
    atomic_write_text(files["summary"], json.dumps(json_ready(summary), indent=2, allow_nan=False) + "\n")
    files["report"] = write_report(output / OUTPUT_FILES["report"], json_ready(summary), matching.problems())
