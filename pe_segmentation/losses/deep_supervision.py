"""Deep supervision: one loss applied to every output of a deep-supervised network, with per-level weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def deep_supervision_weights(n: int) -> list[float]:
    """Weights ``1, 1/2, 1/4, ...`` for ``n`` outputs (final output first), normalised to sum to 1."""
    if n < 1:
        raise ValueError(f"need at least one output, got {n}.")
    raw = [0.5**i for i in range(n)]
    total = sum(raw)
    return [w / total for w in raw]


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to each output of a deep-supervised network and sum with per-level weights.

    Accepted outputs:

    * a list/tuple of logits, final (full-resolution) output first, possibly at decreasing resolutions
      (targets are resized to each output with nearest-neighbour interpolation, which keeps integer labels
      integer);
    * a stacked tensor ``(B, N, C, *spatial)`` such as MONAI ``DynUNet`` returns in training mode;
    * a single logits tensor (plain ``loss``), so one wrapped loss serves training and validation.

    Args:
        loss: the per-output loss, e.g. from :func:`~pe_segmentation.losses.build_loss`.
        weights: one weight per output, final first; defaults to halving per level. Always normalised to sum
            to 1, so the total stays on the scale of a single loss.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        values = None if weights is None else [float(w) for w in weights]
        if values is not None and (not values or any(w < 0 for w in values) or sum(values) <= 0):
            raise ValueError(f"weights must be non-negative with a positive sum, got {weights!r}.")
        self.loss = loss
        self.weights = values

    def level_weights(self, n: int) -> list[float]:
        """The normalised weights used for ``n`` outputs."""
        if self.weights is None:
            return deep_supervision_weights(n)
        if len(self.weights) != n:
            raise ValueError(
                f"DeepSupervisionLoss has {len(self.weights)} weights but the network gave {n} outputs."
            )
        total = sum(self.weights)
        return [w / total for w in self.weights]

    @staticmethod
    def resize_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Nearest-neighbour resize of ``target`` ``(B, C, *spatial)`` to ``size``; the dtype is kept."""
        if tuple(target.shape[2:]) == tuple(size):
            return target
        resized = F.interpolate(target.float(), size=tuple(size), mode="nearest")
        return resized.to(target.dtype)

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            if outputs.dim() != target.dim() + 1:
                return self.loss(outputs, target)
            outputs = outputs.unbind(1)
        levels = list(outputs)
        total = target.new_zeros((), dtype=torch.float32)
        for weight, output in zip(self.level_weights(len(levels)), levels, strict=True):
            total = total + weight * self.loss(output, self.resize_target(target, output.shape[2:]))
        return total
