"""What each sliding window runs: the network reduced to one channel, the embolus log-odds.

:class:`EmbolusLogit` keeps the sliding-window buffers at one channel instead of one per class, so no
multi-class logits exist at the original resolution, and averages test-time flips
(:func:`flip_combinations`) inside the window. Given a ``condition`` (the artery territory, sliced by MONAI's
sliding window alongside the image), it skips the windows that hold none of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn as nn

#: The log-odds given to a window that was not run (probability about 1e-13). A voxel of the territory lies
#: only in windows that were run, so blending never mixes this value into a territory voxel.
SKIPPED_LOG_ODDS = -30.0


def flip_combinations(spatial_dims: int, allowed: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes of a ``(B, C, *spatial)`` batch: ``()`` (no flip) first, then
    single-axis flips, and so on (8 for 3D, 4 for 2D).

    Args:
        spatial_dims: 2 or 3.
        allowed: the spatial axes (0-based) that may be flipped (an nnU-Net trainer's mirroring axes); default
            all of them.
    """
    spatial = range(spatial_dims) if allowed is None else sorted({int(a) for a in allowed})
    if any(not 0 <= a < spatial_dims for a in spatial):
        raise ValueError(f"flip axes {list(spatial)} outside the {spatial_dims} spatial axes")
    axes = [2 + a for a in spatial]
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


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

    Attributes:
        windows_run: windows the network ran on since the last :meth:`reset_counts`.
        windows_skipped: windows skipped because their ``condition`` was all zero.
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
        self.windows_run = 0
        self.windows_skipped = 0

    def reset_counts(self) -> None:
        """Start counting run and skipped windows afresh (once per case)."""
        self.windows_run = 0
        self.windows_skipped = 0

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

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Embolus log-odds ``(B, 1, *spatial)`` of a batch of windows.

        Args:
            x: the windows, ``(B, C, *spatial)``.
            condition: where emboli can be, sliced like ``x`` (MONAI's sliding window passes its
                ``condition`` this way); a window whose condition is all zero is not run and gets
                :data:`SKIPPED_LOG_ODDS`. ``None`` runs every window.
        """
        if condition is None:
            self.windows_run += x.shape[0]
            return self._averaged_log_odds(x)
        keep = condition.flatten(1).ne(0).any(dim=1).to(x.device)
        kept = int(keep.sum())
        self.windows_run += kept
        self.windows_skipped += x.shape[0] - kept
        if kept == x.shape[0]:
            return self._averaged_log_odds(x)
        out = torch.full(
            (x.shape[0], 1, *x.shape[2:]), SKIPPED_LOG_ODDS, dtype=torch.float32, device=x.device
        )
        if kept:
            subset = x[keep]  # boolean indexing returns the standard layout: restore the network's
            if self.memory_format is not None:
                subset = subset.contiguous(memory_format=self.memory_format)
            out[keep] = self._averaged_log_odds(subset)
        return out

    def _averaged_log_odds(self, x: torch.Tensor) -> torch.Tensor:
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
