"""Foreground-class validation metrics against hand-computed values; the evaluator's handlers agree."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.networks.utils import one_hot

from pe_segmentation.training.metrics import (
    VAL_METRICS,
    foreground_metrics,
    metric_handlers,
    validation_postprocessing,
)


def _case(label_box: tuple[slice, ...], pred_box: tuple[slice, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot (1, 2, 4, 4, 4) prediction and label with the given foreground boxes."""
    label = torch.zeros(1, 1, 4, 4, 4)
    pred = torch.zeros(1, 1, 4, 4, 4)
    label[(0, 0, *label_box)] = 1
    pred[(0, 0, *pred_box)] = 1
    return one_hot(pred, 2), one_hot(label, 2)


# label: 8 voxels; prediction: 8 voxels, 4 of them on the label -> TP 4, FP 4, FN 4, TN 52
HALF = _case((slice(0, 2), slice(0, 2), slice(0, 2)), (slice(0, 2), slice(0, 2), slice(1, 3)))
PERFECT = _case((slice(1, 3),) * 3, (slice(1, 3),) * 3)


def test_metrics_of_a_partial_overlap_by_hand():
    values = foreground_metrics(*HALF)
    assert values["val_dice"] == pytest.approx(0.5)
    assert values["val_iou"] == pytest.approx(4 / 12)
    assert values["val_sensitivity"] == pytest.approx(0.5)
    assert values["val_specificity"] == pytest.approx(52 / 56)
    assert values["val_precision"] == pytest.approx(0.5)


def test_background_is_not_averaged_in():
    pred = torch.zeros(1, 1, 4, 4, 4)
    label = torch.zeros(1, 1, 4, 4, 4)
    label[0, 0, :2, :2, :2] = 1
    values = foreground_metrics(one_hot(pred, 2), one_hot(label, 2))
    # a network that finds no clot scores 0, not the ~0.5 of a background/foreground average
    assert values["val_dice"] == 0.0
    assert values["val_sensitivity"] == 0.0
    assert values["val_specificity"] == 1.0


def test_cases_are_averaged():
    pred = torch.cat([HALF[0], PERFECT[0]])
    label = torch.cat([HALF[1], PERFECT[1]])
    values = foreground_metrics(pred, label)
    assert values["val_dice"] == pytest.approx(0.75)
    assert values["val_iou"] == pytest.approx((1 / 3 + 1) / 2)


def test_single_sigmoid_channel_is_the_foreground():
    pred, label = HALF[0][:, 1:], HALF[1][:, 1:]
    assert foreground_metrics(pred, label)["val_dice"] == pytest.approx(0.5)


def test_evaluator_handlers_agree_with_the_reference():
    cases = [HALF, PERFECT]
    post = validation_postprocessing(out_channels=2)

    def step(engine: Engine, index: int) -> list[dict[str, torch.Tensor]]:
        pred, label = cases[index]
        logits = pred[0] * 4.0 - 2.0  # logits whose arg-max is the prediction
        class_map = label[0].argmax(0, keepdim=True).float()
        return [post({"pred": logits, "label": class_map})]

    engine = Engine(step)
    key, extra = metric_handlers(out_channels=2)
    for name, handler in {**key, **extra}.items():
        handler.attach(engine, name)
    engine.run([0, 1])
    reference = foreground_metrics(torch.cat([c[0] for c in cases]), torch.cat([c[1] for c in cases]))
    for name in VAL_METRICS:
        assert engine.state.metrics[name] == pytest.approx(reference[name]), name


def test_an_artery_class_is_left_out_of_the_scores():
    # classes: 0 background, 1 embolus, 2 artery; the artery is predicted perfectly, the embolus as in HALF
    class_map = torch.zeros(1, 4, 4, 4)
    class_map[0, :2, :2, :2] = 1  # embolus (8 voxels)
    class_map[0, 3, :, :] = 2  # artery (16 voxels)
    predicted = torch.zeros(1, 4, 4, 4)
    predicted[0, :2, :2, 1:3] = 1  # 4 of its 8 voxels on the embolus
    predicted[0, 3, :, :] = 2
    logits = one_hot(predicted[None], 3)[0] * 4.0 - 2.0
    post = validation_postprocessing(out_channels=3)({"pred": logits, "label": class_map})
    assert post["pred"].shape[0] == post["label"].shape[0] == 2
    engine = Engine(lambda engine, index: [post])
    key, extra = metric_handlers(out_channels=3)
    for name, handler in {**key, **extra}.items():
        handler.attach(engine, name)
    engine.run([0])
    # the embolus alone: Dice 0.5 (averaging in the perfect artery would give 0.75); precision 4 / 8
    assert engine.state.metrics["val_dice"] == pytest.approx(0.5)
    assert engine.state.metrics["val_precision"] == pytest.approx(0.5)
    assert engine.state.metrics["val_specificity"] == pytest.approx(52 / 56)
