"""Voxel metrics against hand-computed values on tiny volumes, and against MONAI's own functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
    get_confusion_matrix,
)
from scipy import ndimage

from pe_segmentation.evaluation.voxel_metrics import (
    VOXEL_METRICS,
    confusion_counts,
    overlap_metrics,
    surface_metrics,
    voxel_metrics,
)

SPACING = (1.0, 1.0, 2.5)  # anisotropic: one step along k is 2.5 mm


def empty(shape=(10, 10, 10)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def test_shifted_slab_hand_computed():
    # Label: a 4x4x2 slab at k = 2, 3; prediction: the same slab one slice higher (k = 3, 4).
    label, pred = empty(), empty()
    label[2:6, 2:6, 2:4] = True
    pred[2:6, 2:6, 3:5] = True
    m = voxel_metrics(pred, label, SPACING, tolerance_mm=2.0)
    # Shared slice k = 3: TP = 16; FP = slice k = 4: 16; FN = slice k = 2: 16; TN = 1000 - 48 = 952.
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (16, 16, 16, 952)
    assert m["dice"] == pytest.approx(32 / 64)
    assert m["iou"] == pytest.approx(16 / 48)
    assert m["sensitivity"] == pytest.approx(16 / 32)
    assert m["precision"] == pytest.approx(16 / 32)
    assert m["specificity"] == pytest.approx(952 / 968)
    assert m["accuracy"] == pytest.approx(968 / 1000)
    # Both slabs are two voxels thick, so every voxel is a surface voxel. Surface distances: the 16 shared
    # voxels are at 0 mm in both directions; the 16 voxels of each slab outside the other lie one k step
    # (2.5 mm) from it. Directed sets: 16 x 0 and 16 x 2.5, whose 95th percentile is 2.5 -> HD95 = 2.5 mm.
    assert m["hd95_mm"] == pytest.approx(2.5)
    # ASSD: mean of all 64 distances = (32 x 0 + 32 x 2.5) / 64.
    assert m["assd_mm"] == pytest.approx(1.25)
    # NSD at 2 mm: the 32 voxels at 0 mm count, the 32 at 2.5 mm do not.
    assert m["nsd"] == pytest.approx(0.5)
    assert surface_metrics(pred, label, SPACING, tolerance_mm=2.5)["nsd"] == pytest.approx(1.0)


def test_hd95_ignores_a_lone_outlier_that_assd_sees():
    # Label: a one-voxel-thick 4x5 plate at k = 2 (20 voxels). Prediction: the plate plus one stray voxel at
    # k = 8 above its corner, 6 k steps = 15 mm away.
    label = empty()
    label[2:6, 2:7, 2] = True
    pred = label.copy()
    pred[2, 2, 8] = True
    m = voxel_metrics(pred, label, SPACING, tolerance_mm=2.0)
    assert m["dice"] == pytest.approx(40 / 41)
    # pred -> label: 20 x 0 mm and 1 x 15 mm; 95th percentile (linear, position 0.95 * 20 = 19) = 0.
    # label -> pred: 20 x 0 mm. HD95 = 0; ASSD = 15 / 41; NSD: 40 of 41 surface voxels within 2 mm.
    assert m["hd95_mm"] == pytest.approx(0.0)
    assert m["assd_mm"] == pytest.approx(15 / 41)
    assert m["nsd"] == pytest.approx(40 / 41)


@pytest.mark.parametrize(
    ("offset", "expected_mm"),
    [((0, 0, 2), 5.0), ((2, 0, 0), 2.0), ((1, 1, 1), math.sqrt(1 + 1 + 2.5**2))],
)
def test_distances_use_the_spacing(offset, expected_mm):
    label, pred = empty(), empty()
    label[4, 4, 4] = True
    pred[4 + offset[0], 4 + offset[1], 4 + offset[2]] = True
    m = voxel_metrics(pred, label, SPACING, tolerance_mm=2.0)
    assert m["dice"] == 0.0
    assert m["hd95_mm"] == pytest.approx(expected_mm, rel=1e-5)
    assert m["assd_mm"] == pytest.approx(expected_mm, rel=1e-5)
    assert m["nsd"] == (1.0 if expected_mm <= 2.0 else 0.0)


def test_both_empty_is_perfect_agreement():
    m = voxel_metrics(empty(), empty(), SPACING)
    assert (m["dice"], m["iou"], m["specificity"], m["accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    assert math.isnan(m["sensitivity"])
    assert math.isnan(m["precision"])
    assert (m["hd95_mm"], m["assd_mm"], m["nsd"]) == (0.0, 0.0, 1.0)


def test_empty_label_with_a_prediction():
    pred = empty()
    pred[1:3, 1:3, 1:3] = True  # 8 false-positive voxels
    m = voxel_metrics(pred, empty(), SPACING)
    assert (m["dice"], m["iou"], m["precision"], m["nsd"]) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(m["sensitivity"])
    assert m["specificity"] == pytest.approx(992 / 1000)
    assert math.isnan(m["hd95_mm"])
    assert math.isnan(m["assd_mm"])


def test_missed_label_with_an_empty_prediction():
    label = empty()
    label[1:3, 1:3, 1:3] = True
    m = voxel_metrics(empty(), label, SPACING)
    assert (m["dice"], m["iou"], m["sensitivity"], m["nsd"]) == (0.0, 0.0, 0.0, 0.0)
    assert m["specificity"] == 1.0
    assert math.isnan(m["precision"])  # the model made no positive call
    assert math.isnan(m["hd95_mm"])
    assert math.isnan(m["assd_mm"])


def test_metric_names_and_counts():
    label = empty()
    label[0:3, 0:3, 0:3] = True
    m = voxel_metrics(label, label, SPACING)
    assert set(VOXEL_METRICS) <= set(m)
    counts = confusion_counts(label, label)
    assert (counts.label_voxels, counts.pred_voxels, counts.total) == (27, 27, 1000)
    assert overlap_metrics(counts)["dice"] == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        voxel_metrics(empty((4, 4, 4)), empty((4, 4, 5)), SPACING)
    with pytest.raises(ValueError, match="one value per axis"):
        surface_metrics(empty(), empty(), (1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        surface_metrics(empty(), empty(), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        surface_metrics(empty(), empty(), SPACING, tolerance_mm=-1)


def _blobs(seed: int, shape=(24, 20, 16), touch_border: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.52
    pred = ndimage.binary_dilation(label, iterations=1) if seed % 2 else ndimage.binary_erosion(label)
    pred ^= ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56  # scattered disagreements
    if touch_border:
        label[0, :5, :5] = True
        pred[-1, -4:, -3:] = True
    assert label.any()
    assert pred.any()
    return pred, label


def _monai(pred: np.ndarray, label: np.ndarray, spacing, tolerance: float) -> dict[str, float]:
    """MONAI's values on the full (uncropped) volumes, one-hot with background as channel 0."""
    y_pred = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))
    y = torch.from_numpy(np.stack([~label, label])[None].astype(np.float32))
    cm = get_confusion_matrix(y_pred, y, include_background=False)
    spacing = [float(s) for s in spacing]
    values = {
        "dice": compute_dice(y_pred, y, include_background=False),
        "iou": compute_iou(y_pred, y, include_background=False),
        "hd95_mm": compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing),
        "assd_mm": compute_average_surface_distance(y_pred, y, symmetric=True, spacing=spacing),
        "nsd": compute_surface_dice(y_pred, y, [tolerance], spacing=spacing),
    }
    for name in ("sensitivity", "specificity", "precision", "accuracy"):
        values[name] = compute_confusion_matrix_metric(name, cm)
    return {name: float(v.reshape(-1)[0]) for name, v in values.items()}


@pytest.mark.parametrize(
    ("seed", "spacing", "touch_border"),
    [
        (0, (1.0, 1.0, 2.5), False),
        (1, (0.7, 0.8, 2.0), False),
        (2, (1.5, 1.5, 1.5), True),
        (3, (0.6, 0.6, 1.25), True),
    ],
)
def test_agrees_with_monai(seed, spacing, touch_border):
    pred, label = _blobs(seed, touch_border=touch_border)
    ours = voxel_metrics(pred, label, spacing, tolerance_mm=1.5)
    theirs = _monai(pred, label, spacing, tolerance=1.5)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
