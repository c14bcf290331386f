"""Per-embolus detection: emboli found, false positives per scan, and the FROC curve.

An *embolus* is a 26-connected component of the reference label; a *predicted component* is a 26-connected
component of the prediction. Whether a predicted component detects an embolus is decided by a
:class:`HitCriterion`:

* ``overlap`` (default): the component covers at least one voxel of the embolus and at least ``threshold`` of
  the embolus's voxels (``threshold=0``: any voxel). This is the segmentation analogue of the CAD-PE rule that a
  marker inside an embolus detects it; the extent of the overlap is what the voxel metrics measure.
* ``iou``: the intersection over union of the component and the embolus is at least ``threshold``.

An embolus is detected when some predicted component hits it. A predicted component that hits no embolus is a
false positive. So a component spanning two emboli detects both; two components inside one embolus detect it
once and neither counts as a false positive (CAD-PE likewise disregarded extra markers in an embolus).

FROC: with a probability map, candidates are the 26-connected components of ``probability >= min_probability``,
each scored by its highest probability. Lowering a score threshold admits candidates in score order; each
threshold gives one operating point (false positives per scan over all scans, per-embolus sensitivity over all
emboli). Sensitivity at a given FP rate is read from this step curve as the best sensitivity reached without
exceeding that rate (``"step"``, the default); ``"linear"`` interpolates between operating points instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pe_segmentation.data.embolus_sizes import size_class

#: 26-connectivity in 3D (8 in 2D): voxels touching by a face, an edge or a corner belong together.
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)
#: The false-positive rates at which FROC sensitivities are reported (CAD-PE, LUNA16).
FROC_FP_RATES = (0.5, 1.0, 2.0, 4.0, 8.0)
HIT_CRITERIA = ("overlap", "iou")


@dataclass(frozen=True)
class HitCriterion:
    """When a predicted component counts as detecting an embolus.

    Args:
        kind: ``"overlap"``: the component covers at least ``threshold`` of the embolus's voxels, and at least one
            voxel; ``"iou"``: the component's IoU with the embolus is at least ``threshold``.
        threshold: in [0, 1] for ``overlap``; in (0, 1] for ``iou``.
    """

    kind: str = "overlap"
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in HIT_CRITERIA:
            raise ValueError(f"hit criterion must be one of {', '.join(HIT_CRITERIA)}, got {self.kind!r}")
        low_ok = self.threshold >= 0 if self.kind == "overlap" else self.threshold > 0
        if not (math.isfinite(self.threshold) and low_ok and self.threshold <= 1):
            bound = "[0, 1]" if self.kind == "overlap" else "(0, 1]"
            raise ValueError(f"{self.kind} hit threshold must be in {bound}, got {self.threshold}")

    def hits(
        self, overlap: np.ndarray, embolus_voxels: np.ndarray, component_voxels: np.ndarray
    ) -> np.ndarray:
        """Boolean matrix of hits from overlap counts ``(emboli, components)`` and the sizes of both."""
        overlap = np.asarray(overlap, dtype=np.float64)
        emboli = np.asarray(embolus_voxels, dtype=np.float64)[:, None]
        components = np.asarray(component_voxels, dtype=np.float64)[None, :]
        if self.kind == "overlap":
            return (overlap > 0) & (overlap >= self.threshold * emboli)
        union = emboli + components - overlap
        with np.errstate(invalid="ignore", divide="ignore"):
            return (overlap > 0) & (overlap / union >= self.threshold)

    def describe(self) -> str:
        if self.kind == "overlap":
            if self.threshold == 0:
                return "a predicted component overlapping the embolus by at least one voxel"
            return f"a predicted component covering at least {self.threshold:.0%} of the embolus's voxels"
        return f"a predicted component with IoU >= {self.threshold:g} with the embolus"


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a binary mask (8-connected in 2D): ``(labels, count)``, labels 1..count."""
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got {mask.ndim}D")
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)


def _overlap_matrix(label_cc: np.ndarray, n_label: int, pred_cc: np.ndarray, n_pred: int) -> np.ndarray:
    """Voxels shared by embolus ``e`` and component ``c`` at ``[e - 1, c - 1]``."""
    both = (label_cc > 0) & (pred_cc > 0)
    pairs = label_cc[both].astype(np.int64) * (n_pred + 1) + pred_cc[both].astype(np.int64)
    counts = np.bincount(pairs, minlength=(n_label + 1) * (n_pred + 1))
    return counts.reshape(n_label + 1, n_pred + 1)[1:, 1:]


def _sizes(components: np.ndarray, count: int) -> np.ndarray:
    return np.bincount(components.ravel(), minlength=count + 1)[1:]


def _centroids(components: np.ndarray, count: int) -> list[tuple[float, ...]]:
    """Centre of mass (voxel indices) of each component, computed inside its bounding box."""
    centroids = []
    for index, box in enumerate(ndimage.find_objects(components, max_label=count), start=1):
        coords = np.nonzero(components[box] == index)
        centroids.append(tuple(float(c.mean()) + s.start for c, s in zip(coords, box, strict=True)))
    return centroids


def _maxima(values: np.ndarray, components: np.ndarray, count: int) -> np.ndarray:
    """Highest value inside each component, computed inside its bounding box."""
    boxes = ndimage.find_objects(components, max_label=count)
    return np.array(
        [values[box][components[box] == index].max() for index, box in enumerate(boxes, start=1)],
        dtype=np.float64,
    )


@dataclass(frozen=True)
class EmbolusRecord:
    """One reference embolus and how the prediction treated it.

    Attributes:
        index: component number in the label (1-based, scipy's scan order).
        voxels: its size in voxels; ``volume_mm3`` in cubic millimetres; ``size_class`` one of ``central``
            (> 500 mm^3), ``segmental`` (50-500) and ``small`` (< 50), the phantom generator's classes.
        detected: whether a predicted component hits it.
        coverage: fraction of its voxels inside the predicted mask.
        best_iou: the highest IoU of one predicted component with it.
        centroid: its centre of mass in voxel indices.
    """

    index: int
    voxels: int
    volume_mm3: float
    size_class: str
    detected: bool
    coverage: float
    best_iou: float
    centroid: tuple[float, ...]


@dataclass
class DetectionResult:
    """Per-embolus detection in one case."""

    emboli: list[EmbolusRecord] = field(default_factory=list)
    predicted_components: int = 0
    false_positives: int = 0

    @property
    def n_emboli(self) -> int:
        return len(self.emboli)

    @property
    def n_detected(self) -> int:
        return sum(e.detected for e in self.emboli)

    @property
    def sensitivity(self) -> float:
        """Detected emboli over emboli; NaN in a case without emboli."""
        return self.n_detected / self.n_emboli if self.emboli else math.nan


def match_components(
    label_cc: np.ndarray,
    n_label: int,
    pred_cc: np.ndarray,
    n_pred: int,
    criterion: HitCriterion,
    voxel_volume_mm3: float = 1.0,
) -> DetectionResult:
    """Detection result from already-labelled components (see :func:`label_components`)."""
    overlap = _overlap_matrix(label_cc, n_label, pred_cc, n_pred)
    label_sizes, pred_sizes = _sizes(label_cc, n_label), _sizes(pred_cc, n_pred)
    hits = criterion.hits(overlap, label_sizes, pred_sizes)
    covered = overlap.sum(axis=1)
    union = label_sizes[:, None] + pred_sizes[None, :] - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(overlap > 0, overlap / np.maximum(union, 1), 0.0)
    centroids = _centroids(label_cc, n_label)
    emboli = []
    for e in range(n_label):
        volume = float(label_sizes[e]) * voxel_volume_mm3
        emboli.append(
            EmbolusRecord(
                index=e + 1,
                voxels=int(label_sizes[e]),
                volume_mm3=volume,
                size_class=size_class(volume),
                detected=bool(hits[e].any()),
                coverage=float(covered[e] / label_sizes[e]),
                best_iou=float(iou[e].max()) if n_pred else 0.0,
                centroid=tuple(round(float(c), 2) for c in centroids[e]),
            )
        )
    false_positives = int((~hits.any(axis=0)).sum()) if n_pred else 0
    return DetectionResult(emboli, predicted_components=n_pred, false_positives=false_positives)


def detect_emboli(
    pred: np.ndarray,
    label: np.ndarray,
    criterion: HitCriterion | None = None,
    voxel_volume_mm3: float = 1.0,
) -> DetectionResult:
    """Per-embolus detection of a binary prediction against a binary label (non-zero = embolus).

    Args:
        pred: the predicted mask.
        label: the reference mask, same shape.
        criterion: the hit rule (default: overlap by at least one voxel).
        voxel_volume_mm3: volume of one voxel, for embolus volumes and size classes.
    """
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have the same shape, got {pred.shape} and {label.shape}")
    label_cc, n_label = label_components(label)
    pred_cc, n_pred = label_components(pred)
    return match_components(label_cc, n_label, pred_cc, n_pred, criterion or HitCriterion(), voxel_volume_mm3)


@dataclass(frozen=True)
class CaseCandidates:
    """Scored detection candidates of one scan, reduced to what the FROC needs.

    Attributes:
        scores: highest probability inside each candidate.
        false_positive: whether each candidate hits no embolus.
        embolus_scores: per embolus, the highest score of a candidate hitting it (``-inf``: never detected).
    """

    scores: np.ndarray
    false_positive: np.ndarray
    embolus_scores: np.ndarray

    @property
    def n_emboli(self) -> int:
        return int(self.embolus_scores.size)


def froc_candidates(
    probability: np.ndarray,
    label_cc: np.ndarray,
    n_label: int,
    criterion: HitCriterion | None = None,
    min_probability: float = 0.1,
) -> CaseCandidates:
    """Candidates of one scan: components of ``probability >= min_probability``, scored by their maximum.

    Args:
        probability: embolus probability in [0, 1].
        label_cc: labelled emboli (from :func:`label_components` of the reference).
        n_label: number of emboli.
        criterion: the hit rule, applied to whole candidates.
        min_probability: the lowest probability a candidate may contain; the FROC curve ends at this threshold.
    """
    probability = np.asarray(probability)
    if probability.shape != label_cc.shape:
        raise ValueError(
            f"probability and label must have the same shape, got {probability.shape} and {label_cc.shape}"
        )
    if not 0 < min_probability <= 1:
        raise ValueError(f"min_probability must be in (0, 1], got {min_probability}")
    criterion = criterion or HitCriterion()
    cand_cc, n_cand = label_components(probability >= min_probability)
    scores = _maxima(probability, cand_cc, n_cand) if n_cand else np.zeros(0)
    overlap = _overlap_matrix(label_cc, n_label, cand_cc, n_cand)
    hits = criterion.hits(overlap, _sizes(label_cc, n_label), _sizes(cand_cc, n_cand))
    embolus_scores = (
        np.where(hits, scores[None, :], -np.inf).max(axis=1) if n_cand else np.full(n_label, -np.inf)
    )
    return CaseCandidates(scores, np.asarray(~hits.any(axis=0)), embolus_scores)


@dataclass(frozen=True)
class FROCCurve:
    """Operating points of a score threshold sweep, from the strictest (no candidate) to the most lenient.

    Attributes:
        thresholds: score thresholds (a candidate counts when its score is >= the threshold); the first is
            ``inf``.
        fp_per_scan: false positives per scan at each threshold (non-decreasing).
        sensitivity: detected emboli over all emboli at each threshold (non-decreasing; NaN without emboli).
        n_scans: scans in the sweep; ``n_emboli``: emboli in them.
    """

    thresholds: np.ndarray
    fp_per_scan: np.ndarray
    sensitivity: np.ndarray
    n_scans: int
    n_emboli: int


def froc_curve(cases: Sequence[CaseCandidates]) -> FROCCurve:
    """The FROC operating points of candidates from several scans, one per distinct candidate score."""
    if not cases:
        raise ValueError("an FROC curve needs at least one scan")
    scores = np.concatenate([c.scores for c in cases])
    fp_scores = np.sort(scores[np.concatenate([c.false_positive for c in cases])])
    embolus_scores = np.concatenate([c.embolus_scores for c in cases])
    detectable = np.sort(embolus_scores[np.isfinite(embolus_scores)])
    n_scans, n_emboli = len(cases), int(embolus_scores.size)
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    fp_counts = fp_scores.size - np.searchsorted(fp_scores, thresholds, side="left")
    detected = detectable.size - np.searchsorted(detectable, thresholds, side="left")
    sensitivity = detected / n_emboli if n_emboli else np.full(thresholds.size, np.nan)
    return FROCCurve(
        thresholds, fp_counts / n_scans, np.asarray(sensitivity, dtype=np.float64), n_scans, n_emboli
    )


def threshold_at(curve: FROCCurve, fp_rates: Sequence[float] = FROC_FP_RATES) -> np.ndarray:
    """The score threshold of the step reading of :func:`sensitivity_at` at each false-positive rate: the
    lowest threshold whose operating point has at most that many false positives per scan (``inf`` when even
    the strictest candidate exceeds it). A predictor keeping only clots whose highest probability reaches it
    (``inference.min_peak``) works at that point on these scans."""
    rates = np.asarray(fp_rates, dtype=np.float64)
    index = np.searchsorted(curve.fp_per_scan, rates + 1e-12, side="right") - 1
    return curve.thresholds[np.clip(index, 0, None)]


def sensitivity_at(
    curve: FROCCurve, fp_rates: Sequence[float] = FROC_FP_RATES, interpolation: str = "step"
) -> np.ndarray:
    """Sensitivity of ``curve`` at each false-positive rate.

    Args:
        curve: the FROC operating points.
        fp_rates: false positives per scan to read at.
        interpolation: ``"step"``: the best sensitivity of an operating point with at most that many false
            positives per scan (what a user can actually pick; never optimistic). ``"linear"``: interpolated
            linearly between operating points (LUNA16's reading); beyond the last point both give its
            sensitivity.
    """
    if interpolation not in ("step", "linear"):
        raise ValueError(f"interpolation must be 'step' or 'linear', got {interpolation!r}")
    rates = np.asarray(fp_rates, dtype=np.float64)
    fps, sens = curve.fp_per_scan, curve.sensitivity
    if interpolation == "step":
        index = np.searchsorted(fps, rates + 1e-12, side="right") - 1
        return sens[np.clip(index, 0, None)]
    unique_fps, first = np.unique(fps, return_index=True)
    last = (
        np.append(first[1:], fps.size) - 1
    )  # sensitivity is non-decreasing: the last point per FP rate is best
    return np.interp(rates, unique_fps, sens[last])
