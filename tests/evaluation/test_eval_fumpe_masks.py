"""Per-embolus evaluation on real clot shapes: FUMPE's expert masks (labels only, no CT).

The masks are third-party data read from ``../shared/data/fumpe_labels`` (see its README) and never committed;
these tests skip where the folder is absent. Four masks keep them fast: PAT016 (15 emboli, the most in FUMPE,
down to 2-voxel ones), PAT005 (one cast of 92,000 voxels across both pulmonary arteries), PAT010 (one
segmental clot) and PAT024 (empty). Expected values are computed here independently with numpy and scipy.
The slice direction of these files cannot be trusted, which none of these checks depends on.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pe_segmentation.evaluation.detection import (
    HitCriterion,
    detect_emboli,
    froc_candidates,
    froc_curve,
    label_components,
    sensitivity_at,
)
from pe_segmentation.evaluation.matching import CasePair
from pe_segmentation.evaluation.scoring import evaluate_case
from pe_segmentation.evaluation.voxel_metrics import confusion_counts, overlap_metrics

ROOT = Path(__file__).resolve().parents[2]
FUMPE = Path(os.environ.get("PE_SEG_FUMPE_LABELS", ROOT.parent / "shared/data/fumpe_labels"))
if not (FUMPE / "PAT016.nii.gz").is_file():
    FUMPE = Path("/work/shared/data/fumpe_labels")
pytestmark = pytest.mark.skipif(
    not (FUMPE / "PAT016.nii.gz").is_file(), reason="FUMPE masks not present (../shared/data/fumpe_labels)"
)

CASES = ("PAT016", "PAT005", "PAT010", "PAT024")
FULL_26 = np.ones((3, 3, 3), dtype=bool)


class Mask:
    """A FUMPE mask cropped to its bounding box (with a margin), with its voxel size."""

    def __init__(self, name: str) -> None:
        image = nib.load(FUMPE / f"{name}.nii.gz")  # the file-level test reads through pe-seg's reader
        array = np.asarray(image.dataobj) > 0
        self.full_shape = array.shape
        self.spacing = np.asarray(image.header.get_zooms()[:3], dtype=float)
        nonzero = np.nonzero(array)
        if nonzero[0].size:
            box = tuple(
                slice(max(int(i.min()) - 4, 0), min(int(i.max()) + 5, n))
                for i, n in zip(nonzero, array.shape, strict=True)
            )
            array = array[box]
        else:  # an empty mask: its emptiness is checked above; a small stand-in keeps the tests fast
            self.empty_in_full = not array.any()
            array = np.zeros((8, 8, 8), dtype=bool)
        self.mask = np.ascontiguousarray(array)


@pytest.fixture(scope="module")
def masks() -> dict[str, Mask]:
    return {name: Mask(name) for name in CASES}


def scipy_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, count = ndimage.label(mask, structure=FULL_26)
    return labels, int(count)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def expected_detection(label: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """(emboli detected, false-positive components) under the default rule (any voxel of overlap)."""
    label_cc, n_label = scipy_components(label)
    pred_cc, n_pred = scipy_components(pred)
    detected = sum(bool(pred[label_cc == e].any()) for e in range(1, n_label + 1))
    false_positives = sum(not label[pred_cc == c].any() for c in range(1, n_pred + 1))
    return detected, false_positives


def test_embolus_counts_are_the_26_connected_components(masks: dict[str, Mask]):
    # PAT016 holds FUMPE's largest count (README: range 0-15), PAT024 is one of its two empty masks
    expected = {"PAT016": 15, "PAT005": 1, "PAT010": 1, "PAT024": 0}
    for name, case in masks.items():
        assert scipy_components(case.mask)[1] == expected[name], name
        assert label_components(case.mask)[1] == expected[name], name
        result = detect_emboli(case.mask, case.mask, voxel_volume_mm3=float(np.prod(case.spacing)))
        assert result.n_emboli == expected[name], name
    assert masks["PAT024"].full_shape == (512, 512, 139)
    assert masks["PAT024"].empty_in_full


def test_the_mask_itself_finds_every_embolus_without_false_positives(masks: dict[str, Mask]):
    for name in ("PAT016", "PAT005", "PAT010"):
        mask = masks[name].mask
        result = detect_emboli(mask, mask)
        assert result.sensitivity == 1.0, name
        assert result.false_positives == 0, name
        assert result.predicted_components == result.n_emboli, name
        assert all(e.coverage == 1.0 and e.best_iou == 1.0 for e in result.emboli), name
        assert overlap_metrics(confusion_counts(mask, mask))["dice"] == 1.0, name
    empty = detect_emboli(masks["PAT024"].mask, masks["PAT024"].mask)
    assert empty.n_emboli == 0
    assert empty.false_positives == 0
    assert np.isnan(empty.sensitivity)


@pytest.mark.parametrize("deleted", [1, 4, 14])
def test_deleting_the_smallest_emboli_lowers_sensitivity_by_that_count(masks: dict[str, Mask], deleted: int):
    mask = masks["PAT016"].mask
    labels, count = scipy_components(mask)
    sizes = np.bincount(labels.ravel())[1:]
    smallest = np.argsort(sizes, kind="stable")[:deleted] + 1
    pred = mask & ~np.isin(labels, smallest)
    result = detect_emboli(pred, mask)
    assert result.n_emboli == count
    assert result.n_detected == count - deleted
    assert result.sensitivity == pytest.approx((count - deleted) / count)
    assert result.false_positives == 0
    missed = sorted(e.voxels for e in result.emboli if not e.detected)
    assert missed == sorted(sizes[smallest - 1].tolist())  # exactly the deleted ones
    assert sorted(e.voxels for e in result.emboli) == sorted(sizes.tolist())


@pytest.mark.parametrize("shift", [(2, 0, 0), (0, 3, 1), (-2, 2, -2)])
def test_shifted_prediction_matches_as_the_rule_says(masks: dict[str, Mask], shift: tuple[int, int, int]):
    for name in ("PAT016", "PAT005", "PAT010"):
        mask = masks[name].mask  # the crop's 4-voxel margin holds the shift, so np.roll wraps only zeros
        pred = np.roll(mask, shift, axis=(0, 1, 2))
        result = detect_emboli(pred, mask)
        detected, false_positives = expected_detection(mask, pred)
        assert (result.n_detected, result.false_positives) == (detected, false_positives), name
        assert overlap_metrics(confusion_counts(pred, mask))["dice"] == pytest.approx(dice(pred, mask)), name
        if name != "PAT016":  # large clots: still found, Dice below 1
            assert result.sensitivity == 1.0
            assert result.false_positives == 0
        assert dice(pred, mask) < 1.0


def test_eroded_prediction_keeps_the_thick_emboli(masks: dict[str, Mask]):
    for name in ("PAT016", "PAT005", "PAT010"):
        mask = masks[name].mask
        pred = ndimage.binary_erosion(mask, iterations=1)
        result = detect_emboli(pred, mask)
        detected, false_positives = expected_detection(mask, pred)
        assert (result.n_detected, result.false_positives) == (detected, false_positives), name
        assert false_positives == 0  # an eroded clot lies inside its embolus
        expected_dice = dice(pred, mask)
        assert overlap_metrics(confusion_counts(pred, mask))["dice"] == pytest.approx(expected_dice), name
        assert expected_dice < 1.0
    # the large cast survives erosion; PAT016's 2-voxel clots do not
    assert (
        detect_emboli(ndimage.binary_erosion(masks["PAT005"].mask), masks["PAT005"].mask).sensitivity == 1.0
    )
    assert detect_emboli(ndimage.binary_erosion(masks["PAT016"].mask), masks["PAT016"].mask).sensitivity < 1.0


def test_a_cast_across_both_pulmonary_arteries_is_one_embolus(masks: dict[str, Mask]):
    case = masks["PAT005"]
    mask = case.mask
    extent_mm = (np.ptp(np.nonzero(mask)[0]) + 1) * case.spacing[0]
    assert extent_mm > 100  # left to right across the mediastinum: a saddle / cast, not one branch
    # a prediction cut into pieces by removing three slabs along its left-right extent
    pred = mask.copy()
    xs = np.nonzero(mask.any(axis=(1, 2)))[0]
    for fraction in (0.25, 0.5, 0.75):
        cut = int(xs[0] + fraction * (xs[-1] - xs[0]))
        pred[cut : cut + 2] = False
    pieces = scipy_components(pred)[1]
    assert pieces >= 3
    result = detect_emboli(pred, mask)
    assert result.n_emboli == 1
    assert result.n_detected == 1
    assert result.predicted_components == pieces
    assert result.false_positives == 0  # pieces inside one embolus are neither extra hits nor false positives
    # under a 50 % coverage rule it is found only if one piece alone covers half of it
    best_piece = max(np.bincount(scipy_components(pred)[0].ravel())[1:])
    half = detect_emboli(pred, mask, HitCriterion("overlap", 0.5))
    assert half.n_detected == int(best_piece >= 0.5 * mask.sum())


def test_froc_on_real_emboli(masks: dict[str, Mask]):
    # PAT016: each embolus scored by its rank in size (largest highest), plus 3 false blobs in empty space
    mask = masks["PAT016"].mask
    labels, count = scipy_components(mask)
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    probability = np.zeros(mask.shape, np.float32)
    for rank, component in enumerate(order):
        probability[labels == component + 1] = 0.95 - 0.05 * rank  # 0.95 ... 0.25
    far = np.argwhere(~ndimage.binary_dilation(mask, iterations=6))  # 3x3x3 blobs there touch no embolus
    rng = np.random.default_rng(0)
    for score, point in zip((0.9, 0.6, 0.3), far[rng.choice(len(far), 3, replace=False)], strict=True):
        probability[tuple(slice(max(int(p) - 1, 0), int(p) + 2) for p in point)] = score
    blob_cc, false_blobs = scipy_components((probability > 0) & ~mask)
    assert false_blobs == 3
    candidates = froc_candidates(probability, labels, count, min_probability=0.1)
    assert candidates.n_emboli == count
    assert int(candidates.false_positive.sum()) == false_blobs
    curve = froc_curve([candidates])
    assert curve.sensitivity[-1] == 1.0
    # independently: at threshold t, sensitivity = emboli scored >= t over 15; FP = blobs scored >= t
    blob_scores = sorted(
        (float(probability[blob_cc == b].max()) for b in range(1, false_blobs + 1)),
        reverse=True,
    )
    for fps in range(false_blobs + 1):
        # the most lenient threshold with at most `fps` false positives: just above the next blob's score
        limit = blob_scores[fps] if fps < false_blobs else 0.0
        expected = sum(0.95 - 0.05 * r > limit + 1e-6 for r in range(count)) / count
        assert sensitivity_at(curve, [float(fps)])[0] == pytest.approx(expected)


@pytest.mark.slow
def test_file_level_evaluation_on_a_real_nifti_header(masks: dict[str, Mask], tmp_path: Path):
    # the FUMPE file itself is the label (qform only, sform code 0); the prediction drops PAT016's 5 smallest
    label_path = FUMPE / "PAT016.nii.gz"
    image = nib.load(label_path)
    label = np.asarray(image.dataobj) > 0
    labels, count = scipy_components(label)
    sizes = np.bincount(labels.ravel())[1:]
    pred = label & ~np.isin(labels, np.argsort(sizes, kind="stable")[:5] + 1)
    pred_path = tmp_path / "PAT016_pred.nii.gz"
    nib.save(nib.Nifti1Image(pred.astype(np.uint8), None, image.header), pred_path)
    case = evaluate_case(CasePair("PAT016", pred_path, label_path))
    row = case.row
    assert row["emboli"] == count == 15
    assert row["emboli_detected"] == 10
    assert row["false_positives"] == 0
    assert row["dice"] == pytest.approx(dice(pred, label))
    voxel_mm3 = float(np.prod(image.header.get_zooms()[:3]))
    assert row["label_volume_ml"] == pytest.approx(label.sum() * voxel_mm3 / 1000, rel=1e-5)
    sizes_mm3 = sorted(e.volume_mm3 for e in case.detection.emboli)
    assert sizes_mm3 == pytest.approx(sorted(sizes * voxel_mm3), rel=1e-5)
