"""TensorBoard picture of a validation case (:class:`ValidationImages`).

MONAI's ``TensorBoardImageHandler`` writes a 3D volume as an animated GIF of every slice; one axial slice of
image, label and prediction side by side is what a reader of the run wants to see.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events


def _slice_panel(
    image: np.ndarray, mask: np.ndarray | None, colour: tuple[float, float, float]
) -> np.ndarray:
    """RGB (3, rows, cols) of an axial slice ``[x, y]``, radiological view, ``mask`` blended in ``colour``."""
    grey = np.clip(np.flip(image.T, axis=(0, 1)), 0.0, 1.0)
    rgb = np.stack([grey] * 3)
    if mask is not None:
        shown = np.flip(mask.T, axis=(0, 1)) > 0
        for channel, weight in enumerate(colour):
            rgb[channel][shown] = 0.5 * rgb[channel][shown] + 0.5 * weight
    return rgb


class ValidationImages:
    """TensorBoard picture of the first validation case: one axial slice of the image, the label (green)
    and the prediction (red), side by side, on the slice with most label voxels."""

    def __init__(self, writer: Any, trainer: Engine, tag: str = "val/image_label_prediction") -> None:
        self.writer = writer
        self.trainer = trainer
        self.tag = tag

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, evaluator: Engine) -> None:
        if evaluator.state.iteration != 1:
            return
        output = evaluator.state.output
        item = output[0] if isinstance(output, (list, tuple)) else output
        if not isinstance(item, Mapping) or "image" not in item or "pred" not in item:
            return
        image = torch.as_tensor(item["image"]).detach().float().cpu().numpy()[0]
        label = _foreground(item.get("label"))
        pred = _foreground(item["pred"])
        if image.ndim == 2:  # a 2D case: one slice already
            image, label, pred = image[..., None], _add_z(label), _add_z(pred)
        if label is not None and label.any():
            z = int(np.argmax(label.reshape(-1, label.shape[-1]).sum(axis=0)))
        else:
            z = image.shape[-1] // 2
        panels = [
            _slice_panel(image[..., z], None, (0, 0, 0)),
            _slice_panel(image[..., z], None if label is None else label[..., z], (0.0, 1.0, 0.0)),
            _slice_panel(image[..., z], pred[..., z], (1.0, 0.0, 0.0)),
        ]
        picture = np.concatenate(panels, axis=2).astype(np.float32)
        self.writer.add_image(self.tag, picture, self.trainer.state.iteration, dataformats="CHW")


def _foreground(value: Any) -> np.ndarray | None:
    """The embolus mask ``[x, y, (z)]`` of a one-hot (C >= 2) or single-channel prediction/label."""
    if value is None:
        return None
    array = torch.as_tensor(value).detach().float().cpu().numpy()
    return array[1] if array.shape[0] >= 2 else array[0]


def _add_z(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else array[..., None]
