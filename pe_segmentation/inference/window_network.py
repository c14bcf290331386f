"""What each sliding window runs: the network reduced to one channel, the embolus log-odds.

:class:`EmbolusLogit` keeps the sliding-window buffers at one channel instead of one per class, so no
multi-class logits exist at the original resolution, and averages test-time flips
(:func:`flip_combinations`) inside the window.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn as nn


def flip_combinations(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes of a ``(B, C, *spatial)`` batch: ``()`` (no flip) first, then
    single-axis flips, and so on (8 for 3D, 4 for 2D)."""
    axes = range(2, 2 + spatial_dims)
    return [combo for r in range(spatial_dims + 1) for combo in itertools.combinations(axes, r)]


class EmbolusLogit(nn.Module):
    """A network whose windows yield one channel: the embolus log-odds (optionally averaged over flips).

    For ``C`` output classes with the embolus at index ``embolus_channel`` (1), the log-odds is
    ``logit[1] - logsumexp(other logits)``, so ``sigmoid`` of it is the softmax probability of the embolus
    class; for 2 classes it is ``logit[1] - logit[0]``, which is linear in the logits, so Gaussian blending
    of windows gives exactly the log-odds of the blended logits that MONAI would compute. A 1-channel network
    is taken as a sigmoid network. Logits are taken in float32 even under autocast.

    Args:
        network: the segmentation network (eval mode is set by the caller).
        embolus_channel: output channel of the embolus class.
        flips: test-time augmentation: the axes to flip for each pass (``[()]``: no augmentation); the
            log-odds of all passes are averaged after flipping each back.
        memory_format: memory format of each network input (flipping returns a standard-layout tensor).
    """

    def __init__(
        self,
        network: nn.Module,
        embolus_channel: int = 1,
        flips: Sequence[tuple[int, ...]] = ((),),
        memory_format: torch.memory_format | None = None,
    ) -> None:
        super().__init__()
        if not flips:
            raise ValueError("flips must hold at least one entry (() means no flip)")
        self.network = network
        self.embolus_channel = int(embolus_channel)
        self.flips = [tuple(int(a) for a in f) for f in flips]
        self.memory_format = memory_format

    def log_odds(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, C, ...)`` logits to ``(B, 1, ...)`` float32 embolus log-odds."""
        logits = logits.float()
        channels = logits.shape[1]
        if channels == 1:
            return logits
        index = self.embolus_channel
        if not 0 <= index < channels:
            raise ValueError(f"embolus channel {index} is not among the network's {channels} outputs")
        target = logits[:, index : index + 1]
        others = torch.cat([logits[:, :index], logits[:, index + 1 :]], dim=1)
        if channels == 2:
            return target - others
        return target - torch.logsumexp(others, dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for axes in self.flips:
            inputs = torch.flip(x, axes) if axes else x
            if axes and self.memory_format is not None:
                inputs = inputs.contiguous(memory_format=self.memory_format)
            outputs = self.network(inputs)
            if isinstance(outputs, (list, tuple)):  # deep supervision outside eval mode: the final output
                outputs = outputs[0]
            logit = self.log_odds(outputs)
            if axes:
                logit = torch.flip(logit, axes)
            total = logit if total is None else total + logit
        assert total is not None
        return total if len(self.flips) == 1 else total / len(self.flips)
