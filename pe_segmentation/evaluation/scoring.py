"""Score one case: read its label, prediction and (optionally) probability map, and compute its scores.

The files must share one grid; label and prediction are reduced to the embolus class; then come the voxel
metrics (:mod:`~pe_segmentation.evaluation.voxel_metrics`), the per-embolus detection and the FROC candidates
(:mod:`~pe_segmentation.evaluation.detection`). The result is the case's row of ``per_case.csv``, its emboli and
its candidates (:class:`CaseEvaluation`); :mod:`~pe_segmentation.evaluation.runner` does this for every case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pe_segmentation.data.label_values import integer_label_values
from pe_segmentation.errors import InputDataError
from pe_segmentation.evaluation.detection import (
    CaseCandidates,
    DetectionResult,
    EmbolusRecord,
    froc_candidates,
    label_components,
    match_components,
)
from pe_segmentation.evaluation.matching import CasePair
from pe_segmentation.evaluation.settings import EvaluationSettings
from pe_segmentation.evaluation.study_level import StudyCall, mask_study_call, read_study_call
from pe_segmentation.evaluation.voxel_metrics import voxel_metrics
from pe_segmentation.io.volume import Volume, check_same_geometry
from pe_segmentation.io.volume_files import read_volume


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


@dataclass
class CaseEvaluation:
    """The scores of one case: the per-case CSV row, its emboli, FROC candidates when a map was given, and its
    study-level call (``None``: the mask's binary call, see :attr:`study_call`)."""

    row: dict[str, Any]
    detection: DetectionResult
    candidates: CaseCandidates | None = None
    label_values: tuple[int, ...] = ()
    study: StudyCall | None = None

    @property
    def has_emboli(self) -> bool:
        return self.row["label_voxels"] > 0

    @property
    def study_call(self) -> StudyCall:
        """The case's study-level call: :attr:`study`, or the mask's binary call when that was not read."""
        return self.study if self.study is not None else mask_study_call(self.row["pred_voxels"] > 0)


@dataclass
class _CaseMasks:
    """A case's masks on their shared grid, what every score is computed from.

    Attributes:
        label: the reference's embolus voxels.
        pred: the prediction's embolus voxels.
        probability: the probability map in [0, 1], or ``None`` without one.
        spacing: voxel size in mm along i, j, k.
        label_values: the distinct non-zero label values counted as embolus (empty with a fixed embolus label),
            so that labels holding several classes can be reported.
    """

    label: np.ndarray
    pred: np.ndarray
    probability: np.ndarray | None
    spacing: np.ndarray
    label_values: tuple[int, ...]


def evaluate_case(pair: CasePair, settings: EvaluationSettings | None = None) -> CaseEvaluation:
    """Read and score one case.

    Raises:
        InputDataError: unreadable files, grids that differ, bad label or probability values, a bad
            ``report.json`` beside the prediction.
    """
    settings = settings or EvaluationSettings()
    masks = _read_case(pair, settings)
    voxel_mm3 = float(np.prod(masks.spacing))
    metrics = voxel_metrics(masks.pred, masks.label, masks.spacing, settings.nsd_tolerance_mm)
    detection, candidates = _detect(masks, settings, voxel_mm3)
    study = read_study_call(pair.pred, bool(masks.pred.any()))
    row = _case_row(pair, metrics, detection, candidates, study, masks.spacing, voxel_mm3)
    return CaseEvaluation(row, detection, candidates, masks.label_values, study)


def _read_case(pair: CasePair, settings: EvaluationSettings) -> _CaseMasks:
    """Read the case's files, refuse grids that differ from the label's, and reduce them to embolus masks.

    Raises:
        InputDataError: unreadable files, grids that differ, bad label or probability values.
    """
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
    return _CaseMasks(label, pred, probability, label_volume.spacing, label_values)


def _detect(
    masks: _CaseMasks, settings: EvaluationSettings, voxel_mm3: float
) -> tuple[DetectionResult, CaseCandidates | None]:
    """Per-embolus detection and, with a probability map, the FROC candidates of one case.

    Components are labelled inside the bounding box of everything that can hold one (label, prediction and
    candidate voxels), which spares labelling the mostly empty rest of the scan; centroids are shifted back to
    the full volume's indices.
    """
    union = masks.label | masks.pred
    if masks.probability is not None:
        union |= masks.probability >= settings.froc_min_probability
    box = _bounding_box(union)
    if box is None:  # nothing anywhere: no emboli, no components, no candidates
        candidates = (
            None if masks.probability is None else CaseCandidates(np.zeros(0), np.zeros(0, bool), np.zeros(0))
        )
        return DetectionResult(), candidates
    label_cc, n_label = label_components(masks.label[box])
    pred_cc, n_pred = label_components(masks.pred[box])
    detection = match_components(label_cc, n_label, pred_cc, n_pred, settings.hit, voxel_mm3)
    detection.emboli[:] = [_shift_centroid(e, box) for e in detection.emboli]
    if masks.probability is None:
        return detection, None
    candidates = froc_candidates(
        masks.probability[box], label_cc, n_label, settings.hit, settings.froc_min_probability
    )
    return detection, candidates


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every true voxel of ``mask``, or ``None`` when it has none."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _shift_centroid(embolus: EmbolusRecord, box: tuple[slice, ...]) -> EmbolusRecord:
    """The embolus with its centroid in the full volume's indices (it was found in the cropped box)."""
    return replace(
        embolus, centroid=tuple(round(c + s.start, 2) for c, s in zip(embolus.centroid, box, strict=True))
    )


def _case_row(
    pair: CasePair,
    metrics: dict[str, float | int],
    detection: DetectionResult,
    candidates: CaseCandidates | None,
    study: StudyCall,
    spacing: np.ndarray,
    voxel_mm3: float,
) -> dict[str, Any]:
    """The case's row of ``per_case.csv``: volumes, voxel metrics, detection counts, the study-level call and
    the files scored."""
    return {
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
        **_study_columns(study),
        "spacing_mm": "x".join(f"{s:.4g}" for s in spacing),
        "pred": str(pair.pred),
        "label": str(pair.label),
        "prob": "" if pair.prob is None else str(pair.prob),
    }


def _study_columns(study: StudyCall) -> dict[str, Any]:
    """The case's study-level columns of ``per_case.csv``: score, call and where they came from."""
    return {
        "study_score": study.score,
        "study_pe_present": study.pe_present,
        "study_score_source": study.source,
    }
