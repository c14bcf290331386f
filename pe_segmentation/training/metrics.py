"""Validation metrics on the embolus (foreground) class only.

Averaging Dice over background and embolus, as ``include_background=True`` does with two output channels,
reports about 0.5 for a network that never finds a clot (background Dice is ~1 on CT): every metric here is
computed on the foreground channel alone. A network with more classes (an artery class beside the embolus, as
phantoms labelled with ``--vessel-label`` train) is scored on the embolus class alone too: the best checkpoint is
the one that segments emboli best, not arteries.

Each metric is a MONAI ignite handler (``MeanDice``, ``MeanIoUHandler``, ``ConfusionMatrix``) over one-hot
predictions and labels, computed per validation case and averaged over cases (cases with no embolus in the
label give no Dice, IoU or sensitivity and are left out of those means, as MONAI's ``ignore_empty`` does).
Under DDP the handlers gather every rank's per-case values before averaging, so all ranks report the same
numbers over the whole validation set.
"""

from __future__ import annotations

from typing import Any

import torch
from ignite.metrics import Metric
from monai.handlers import ConfusionMatrix, MeanDice, MeanIoUHandler
from monai.handlers.utils import from_engine
from monai.transforms import Activationsd, AsDiscreted, Compose, Lambdad

from pe_segmentation.data.phantom import LABEL_EMBOLUS

#: Metric names, in the order of the metrics CSV.
METRIC_NAMES = ("dice", "iou", "sensitivity", "specificity", "precision")
#: Their keys in ``evaluator.state.metrics`` and in the CSV.
VAL_METRICS = tuple(f"val_{name}" for name in METRIC_NAMES)
#: The metric that picks the best checkpoint.
KEY_METRIC = "val_dice"


def _embolus_channels(one_hot: torch.Tensor) -> torch.Tensor:
    """A one-hot ``(C, *spatial)`` map as two channels: not embolus, embolus (class :data:`LABEL_EMBOLUS`)."""
    embolus = one_hot[LABEL_EMBOLUS : LABEL_EMBOLUS + 1]
    return torch.cat([1 - embolus, embolus])


def validation_postprocessing(out_channels: int, threshold: float = 0.5) -> Compose:
    """Decollated ``{"pred": logits, "label": class map}`` -> one-hot ``pred`` and ``label``.

    Softmax outputs (``out_channels >= 2``) take the arg-max class; a single sigmoid channel is thresholded.
    With more than two classes both maps keep two channels, not embolus and embolus, so that the metrics score
    the embolus class alone.
    """
    if out_channels >= 2:
        steps: list[Any] = [
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=(out_channels, out_channels))
        ]
        if out_channels > 2:
            steps.append(Lambdad(keys=("pred", "label"), func=_embolus_channels))
        return Compose(steps)
    return Compose([Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=threshold)])


def _include_background(out_channels: int) -> bool:
    # with one sigmoid channel, channel 0 *is* the embolus; with softmax outputs channel 0 is background
    return out_channels < 2


def metric_handlers(out_channels: int) -> tuple[dict[str, Metric], dict[str, Metric]]:
    """``(key_metric, additional_metrics)`` for a MONAI ``SupervisedEvaluator``, named as :data:`VAL_METRICS`."""
    background = _include_background(out_channels)
    transform = from_engine(["pred", "label"])
    key: dict[str, Metric] = {
        "val_dice": MeanDice(include_background=background, output_transform=transform, save_details=False)
    }
    extra: dict[str, Metric] = {
        "val_iou": MeanIoUHandler(
            include_background=background, output_transform=transform, save_details=False
        )
    }
    for name in ("sensitivity", "specificity", "precision"):
        extra[f"val_{name}"] = ConfusionMatrix(
            include_background=background,
            metric_name=name,
            compute_sample=True,
            output_transform=transform,
            save_details=False,
        )
    return key, extra


def foreground_metrics(
    pred: torch.Tensor, label: torch.Tensor, out_channels: int | None = None
) -> dict[str, Any]:
    """The validation metrics of a batch of one-hot predictions and labels, outside an engine.

    Args:
        pred: one-hot prediction ``(B, C, *spatial)``.
        label: one-hot label of the same shape.
        out_channels: number of network outputs (default ``pred.shape[1]``).

    Returns:
        ``{"val_dice": ..., ...}`` as floats (NaN where undefined for every case).
    """
    from monai.metrics import ConfusionMatrixMetric, DiceMetric, MeanIoU

    channels = pred.shape[1] if out_channels is None else out_channels
    background = _include_background(channels)
    dice = DiceMetric(include_background=background)
    iou = MeanIoU(include_background=background)
    confusion = ConfusionMatrixMetric(
        include_background=background, metric_name=list(METRIC_NAMES[2:]), compute_sample=True
    )
    for metric in (dice, iou, confusion):
        metric(y_pred=pred, y=label)
    values = [dice.aggregate(), iou.aggregate(), *confusion.aggregate()]
    return {key: float(torch.as_tensor(v).squeeze()) for key, v in zip(VAL_METRICS, values, strict=True)}
