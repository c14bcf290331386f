"""Evaluate paired predictions against labels and write the per-case CSVs, summary JSON, plots and report.

One case: read the label, the predicted mask and (optionally) the probability map; check that they share one
grid; reduce label and prediction to the embolus class; compute the voxel metrics
(:mod:`~pe_segmentation.evaluation.voxel_metrics`), the per-embolus detection and the FROC candidates
(:mod:`~pe_segmentation.evaluation.detection`). Over cases: summaries with bootstrap intervals
(:mod:`~pe_segmentation.evaluation.summary`), figures (:mod:`~pe_segmentation.evaluation.plots`) and a Markdown
report (:mod:`~pe_segmentation.evaluation.report`).

Voxel metrics are summarised over the cases whose label holds an embolus: on a scan without emboli Dice is
either 1 or 0 and sensitivity is undefined, and averaging such values in is how tables come to look better than
the model is. Scans without emboli are summarised on their own (how many got any predicted voxel, and how much),
and they count in false positives per scan.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pe_segmentation.data.embolus_sizes import CLASS_DEFINITIONS, SIZE_CLASSES
from pe_segmentation.data.label_values import integer_label_values
from pe_segmentation.errors import ConfigError, InputDataError
from pe_segmentation.evaluation.detection import (
    FROC_FP_RATES,
    CaseCandidates,
    DetectionResult,
    EmbolusRecord,
    HitCriterion,
    froc_candidates,
    froc_curve,
    label_components,
    match_components,
    sensitivity_at,
)
from pe_segmentation.evaluation.matching import CaseMatching, CasePair
from pe_segmentation.evaluation.plots import plot_froc, plot_metric_boxes
from pe_segmentation.evaluation.report import write_report
from pe_segmentation.evaluation.summary import bootstrap_ci, describe, json_ready
from pe_segmentation.evaluation.voxel_metrics import VOXEL_METRICS, voxel_metrics
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.io.volume import Volume, check_same_geometry
from pe_segmentation.io.volume_files import read_volume
from pe_segmentation.versions import __version__

log = logging.getLogger(__name__)

#: File names written into the output folder.
OUTPUT_FILES = {
    "per_case": "per_case.csv",
    "emboli": "emboli.csv",
    "summary": "summary.json",
    "boxplots": "boxplots.png",
    "froc_csv": "froc.csv",
    "froc_png": "froc.png",
    "report": "report.md",
}


@dataclass(frozen=True)
class EvaluationSettings:
    """How cases are scored.

    Attributes:
        nsd_tolerance_mm: tolerance of the normalised surface Dice, in mm.
        hit: when a predicted component detects an embolus.
        froc_min_probability: probability maps are cut at this level into FROC candidates.
        froc_interpolation: how sensitivity is read at fixed FP rates: ``step`` or ``linear``.
        fp_rates: the FP-per-scan rates to report FROC sensitivity at.
        embolus_label: the label value meaning embolus; ``None``: every value > 0.
        n_resamples: bootstrap resamples for confidence intervals (0: none).
        seed: bootstrap seed.
        geometry_tolerance: largest affine difference (mm) accepted between files of one case.
    """

    nsd_tolerance_mm: float = 2.0
    hit: HitCriterion = field(default_factory=HitCriterion)
    froc_min_probability: float = 0.1
    froc_interpolation: str = "step"
    fp_rates: tuple[float, ...] = FROC_FP_RATES
    embolus_label: int | None = None
    n_resamples: int = 1000
    seed: int = 0
    geometry_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nsd_tolerance_mm) and self.nsd_tolerance_mm >= 0):
            raise ConfigError(
                f"NSD tolerance must be a finite number of mm >= 0, got {self.nsd_tolerance_mm}"
            )
        if not 0 < self.froc_min_probability <= 1:
            raise ConfigError(f"FROC minimum probability must be in (0, 1], got {self.froc_min_probability}")
        if self.froc_interpolation not in ("step", "linear"):
            raise ConfigError(
                f"FROC interpolation must be 'step' or 'linear', got {self.froc_interpolation!r}"
            )
        if not self.fp_rates or any(not (math.isfinite(r) and r > 0) for r in self.fp_rates):
            raise ConfigError(f"FROC FP rates must be positive numbers, got {list(self.fp_rates)}")
        if self.embolus_label is not None and (
            isinstance(self.embolus_label, bool) or self.embolus_label < 1
        ):
            raise ConfigError(f"embolus label must be an integer >= 1, got {self.embolus_label!r}")
        if not isinstance(self.n_resamples, int) or self.n_resamples < 0:
            raise ConfigError(f"bootstrap resamples must be an integer >= 0, got {self.n_resamples!r}")
        if not self.geometry_tolerance >= 0:
            raise ConfigError(f"geometry tolerance must be >= 0, got {self.geometry_tolerance}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "nsd_tolerance_mm": self.nsd_tolerance_mm,
            "hit_criterion": self.hit.kind,
            "hit_threshold": self.hit.threshold,
            "hit_rule": self.hit.describe(),
            "connectivity": 26,
            "froc_min_probability": self.froc_min_probability,
            "froc_interpolation": self.froc_interpolation,
            "fp_rates": list(self.fp_rates),
            "embolus_label": "any value > 0" if self.embolus_label is None else self.embolus_label,
            "bootstrap_resamples": self.n_resamples,
            "seed": self.seed,
        }


# ------------------------------------------------------------------------------------------------- one case


def embolus_mask(
    volume: Volume, path: Path, embolus_label: int | None = None, what: str = "label"
) -> np.ndarray:
    """The embolus voxels of a label or predicted mask as a boolean array.

    Values must be integers >= 0 (float files holding integers are accepted). With ``embolus_label=None`` every
    value > 0 is embolus; otherwise only that value.

    Raises:
        InputDataError: non-integer or negative values.
    """
    hint = " (probability maps go to --prob)" if what == "prediction" else ""
    array = integer_label_values(volume.array, path, what, hint)
    if array.dtype == bool:
        return array if embolus_label in (None, 1) else np.zeros(array.shape, dtype=bool)
    return array > 0 if embolus_label is None else array == embolus_label


def probability_map(volume: Volume, path: Path) -> np.ndarray:
    """A probability map as float32, checked to lie in [0, 1].

    Raises:
        InputDataError: values outside [0, 1] (logits, or a mask scaled to 255).
    """
    array = np.asarray(volume.array, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise InputDataError(
            f"{path}: probability map values must lie in [0, 1], found {low:.4g}..{high:.4g} (logits?)"
        )
    return np.clip(array, 0.0, 1.0) if low < 0 or high > 1 else array


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


@dataclass
class CaseEvaluation:
    """The scores of one case: the per-case CSV row, its emboli, and FROC candidates when a map was given."""

    row: dict[str, Any]
    detection: DetectionResult
    candidates: CaseCandidates | None = None
    label_values: tuple[int, ...] = ()

    @property
    def has_emboli(self) -> bool:
        return self.row["label_voxels"] > 0


def evaluate_case(pair: CasePair, settings: EvaluationSettings | None = None) -> CaseEvaluation:
    """Read and score one case.

    Raises:
        InputDataError: unreadable files, grids that differ, bad label or probability values.
    """
    settings = settings or EvaluationSettings()
    label_volume = read_volume(pair.label)
    pred_volume = read_volume(pair.pred)
    check_same_geometry(pred_volume, label_volume, pair.pred, pair.label, settings.geometry_tolerance)
    label = embolus_mask(label_volume, pair.label, settings.embolus_label, "label")
    pred = embolus_mask(pred_volume, pair.pred, settings.embolus_label, "prediction")
    label_values: tuple[int, ...] = ()
    if settings.embolus_label is None:
        label_values = tuple(int(v) for v in np.unique(label_volume.array[label]))
    probability = None
    if pair.prob is not None:
        prob_volume = read_volume(pair.prob)
        check_same_geometry(prob_volume, label_volume, pair.prob, pair.label, settings.geometry_tolerance)
        probability = probability_map(prob_volume, pair.prob)
    spacing = label_volume.spacing
    voxel_mm3 = float(np.prod(spacing))
    metrics = voxel_metrics(pred, label, spacing, settings.nsd_tolerance_mm)

    union = label | pred
    if probability is not None:
        union |= probability >= settings.froc_min_probability
    box = _bounding_box(union)
    if box is None:  # nothing anywhere: no emboli, no components, no candidates
        detection = DetectionResult()
        candidates = (
            None if probability is None else CaseCandidates(np.zeros(0), np.zeros(0, bool), np.zeros(0))
        )
    else:
        label_cc, n_label = label_components(label[box])
        pred_cc, n_pred = label_components(pred[box])
        detection = match_components(label_cc, n_label, pred_cc, n_pred, settings.hit, voxel_mm3)
        detection.emboli[:] = [_shift_centroid(e, box) for e in detection.emboli]
        candidates = None
        if probability is not None:
            candidates = froc_candidates(
                probability[box], label_cc, n_label, settings.hit, settings.froc_min_probability
            )
    row = {
        "case": pair.case,
        "label_voxels": metrics["tp"] + metrics["fn"],
        "pred_voxels": metrics["tp"] + metrics["fp"],
        "label_volume_ml": (metrics["tp"] + metrics["fn"]) * voxel_mm3 / 1000,
        "pred_volume_ml": (metrics["tp"] + metrics["fp"]) * voxel_mm3 / 1000,
        **metrics,
        "emboli": detection.n_emboli,
        "emboli_detected": detection.n_detected,
        "embolus_sensitivity": detection.sensitivity,
        "predicted_components": detection.predicted_components,
        "false_positives": detection.false_positives,
        "fp_candidates": int(candidates.false_positive.sum()) if candidates is not None else math.nan,
        "spacing_mm": "x".join(f"{s:.4g}" for s in spacing),
        "pred": str(pair.pred),
        "label": str(pair.label),
        "prob": "" if pair.prob is None else str(pair.prob),
    }
    return CaseEvaluation(row, detection, candidates, label_values)


def _shift_centroid(embolus: EmbolusRecord, box: tuple[slice, ...]) -> EmbolusRecord:
    """The embolus with its centroid in the full volume's indices (it was found in the cropped box)."""
    return replace(
        embolus, centroid=tuple(round(c + s.start, 2) for c, s in zip(embolus.centroid, box, strict=True))
    )


# ------------------------------------------------------------------------------------------------ summaries


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _detection_summary(cases: Sequence[CaseEvaluation], settings: EvaluationSettings) -> dict[str, Any]:
    emboli = np.array([c.detection.n_emboli for c in cases], dtype=np.float64)
    detected = np.array([c.detection.n_detected for c in cases], dtype=np.float64)
    false_pos = np.array([c.detection.false_positives for c in cases], dtype=np.float64)
    boot = {"n_resamples": settings.n_resamples, "seed": settings.seed}
    sens_ci = bootstrap_ci(len(cases), lambda i: _ratio(detected[i].sum(), emboli[i].sum()), **boot)
    fp_ci = bootstrap_ci(len(cases), lambda i: float(false_pos[i].mean()), **boot)
    records = [e for c in cases for e in c.detection.emboli]
    by_size = {}
    for size in SIZE_CLASSES:
        members = [e for e in records if e.size_class == size]
        by_size[size] = {
            "definition": CLASS_DEFINITIONS[size],
            "emboli": len(members),
            "detected": sum(e.detected for e in members),
            "sensitivity": _ratio(sum(e.detected for e in members), len(members)),
        }
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
        "by_size": by_size,
        "per_case": {
            "embolus_sensitivity": describe([c.row["embolus_sensitivity"] for c in cases], **boot),
            "false_positives": describe(false_pos, **boot),
        },
    }


def _froc_summary(
    cases: Sequence[CaseEvaluation], settings: EvaluationSettings
) -> tuple[dict[str, Any], Any]:
    candidates = [c.candidates for c in cases]
    curve = froc_curve(candidates)  # type: ignore[arg-type]
    rates = list(settings.fp_rates)
    readings = sensitivity_at(curve, rates, settings.froc_interpolation)

    def statistic(indices: np.ndarray) -> np.ndarray:
        sample = froc_curve([candidates[i] for i in indices])  # type: ignore[misc]
        return sensitivity_at(sample, rates, settings.froc_interpolation)

    low, high = bootstrap_ci(len(cases), statistic, n_resamples=settings.n_resamples, seed=settings.seed)
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
        "ci95_low": low,
        "ci95_high": high,
        "mean_sensitivity": float(np.mean(readings)),
    }
    return summary, curve


def _summary(
    cases: Sequence[CaseEvaluation], matching: CaseMatching | None, settings: EvaluationSettings
) -> dict:
    positive = [c for c in cases if c.has_emboli]
    negative = [c for c in cases if not c.has_emboli]
    boot = {"n_resamples": settings.n_resamples, "seed": settings.seed}
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
        },
        "detection": _detection_summary(cases, settings),
    }
    return summary


# ------------------------------------------------------------------------------------------------- outputs


def _csv_text(rows: Sequence[dict[str, Any]], fieldnames: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in fieldnames})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(value) else f"{float(value):.6g}"
    return value


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
    ``report.md`` and, with probability maps, ``froc.csv`` and ``froc.png`` into ``output_dir``.

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
    pairs = case_matching.pairs
    if not pairs:
        raise InputDataError("nothing to evaluate: no cases")
    with_prob = [p.prob is not None for p in pairs]
    if any(with_prob) and not all(with_prob):
        raise InputDataError("probability maps must be given for every case or for none")
    cases = [
        evaluate_case(pair, settings)
        for pair in tqdm(pairs, desc="evaluate", unit="case", disable=not progress)
    ]
    multi_valued = [c.row["case"] for c in cases if len(c.label_values) > 1]
    if multi_valued:
        log.warning(
            "%d label(s) hold several non-zero values (e.g. %s); all count as embolus. Pass --embolus-label to "
            "pick one.",
            len(multi_valued),
            multi_valued[0],
        )
    output = Path(output_dir)
    files: dict[str, Path] = {}
    summary = _summary(cases, case_matching, settings)

    rows = [c.row for c in cases]
    files["per_case"] = output / OUTPUT_FILES["per_case"]
    atomic_write_text(files["per_case"], _csv_text(rows, list(rows[0])))
    emboli_rows = [
        {
            "case": c.row["case"],
            "embolus": e.index,
            "voxels": e.voxels,
            "volume_mm3": e.volume_mm3,
            "size_class": e.size_class,
            "detected": e.detected,
            "coverage": e.coverage,
            "best_iou": e.best_iou,
            **{f"centroid_{axis}": value for axis, value in zip("ijk", e.centroid, strict=False)},
        }
        for c in cases
        for e in c.detection.emboli
    ]
    emboli_fields = [
        "case",
        "embolus",
        "voxels",
        "volume_mm3",
        "size_class",
        "detected",
        "coverage",
        "best_iou",
        "centroid_i",
        "centroid_j",
        "centroid_k",
    ]
    files["emboli"] = output / OUTPUT_FILES["emboli"]
    atomic_write_text(files["emboli"], _csv_text(emboli_rows, emboli_fields))

    positive = [c for c in cases if c.has_emboli]
    columns: dict[str, list[float]] = {name: [c.row[name] for c in positive] for name in VOXEL_METRICS}
    columns["embolus_sensitivity"] = [c.row["embolus_sensitivity"] for c in positive]
    columns["false_positives"] = [c.row["false_positives"] for c in cases]
    files["boxplots"] = plot_metric_boxes(
        columns,
        output / OUTPUT_FILES["boxplots"],
        title=f"{len(positive)} cases with emboli (false positives: all {len(cases)} scans)",
    )

    if all(with_prob):
        froc, curve = _froc_summary(cases, settings)
        summary["froc"] = froc
        curve_rows = [
            {"threshold": t, "fp_per_scan": f, "sensitivity": s}
            for t, f, s in zip(curve.thresholds, curve.fp_per_scan, curve.sensitivity, strict=True)
        ]
        files["froc_csv"] = output / OUTPUT_FILES["froc_csv"]
        atomic_write_text(
            files["froc_csv"], _csv_text(curve_rows, ["threshold", "fp_per_scan", "sensitivity"])
        )
        detection = summary["detection"]
        files["froc_png"] = plot_froc(
            curve.fp_per_scan,
            curve.sensitivity,
            output / OUTPUT_FILES["froc_png"],
            froc["fp_rates"],
            froc["sensitivity"],
            operating_point=(detection["fp_per_scan"], detection["sensitivity"]),
            title=f"FROC: {curve.n_emboli} emboli in {curve.n_scans} scans",
        )

    files["summary"] = output / OUTPUT_FILES["summary"]
    summary["files"] = {key: path.name for key, path in files.items()}
    summary["files"]["report"] = OUTPUT_FILES["report"]
    atomic_write_text(files["summary"], json.dumps(json_ready(summary), indent=2, allow_nan=False) + "\n")
    files["report"] = write_report(
        output / OUTPUT_FILES["report"], json_ready(summary), case_matching.problems()
    )
    return EvaluationResult(cases, summary, files)
