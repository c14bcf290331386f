"""Sliding-window inference that keeps one output map and a window-thick slab of sums, not whole-volume sums.

MONAI's ``sliding_window_inference`` blends the windows into two whole-volume float32 buffers, the weighted sum
of each output channel and the sum of the weights, divides them at the end and returns the quotient; the caller
then applies its activation, which makes a third volume. For a 512 x 512 x 400 CTPA on a 1 mm grid that is
three 131 MB maps for one channel, and more for more channels.

MONAI cuts the windows in a fixed order, the first spatial axis slowest, so once the windows that start at
plane ``s`` of that axis are done, no later window touches a plane before ``s``: those planes are final.
:class:`SlabSlidingWindowInferer` keeps the sums only for the window-thick slab still open, divides and
activates each slab of planes as it closes, and writes it into the output map (float32, or float16 to halve
it). It cuts the same windows (:func:`~pe_segmentation.runtime.inferer.window_slices`), weighs them with the same
Gaussian (MONAI's ``compute_importance_map``) and adds them in the same order, so its result equals MONAI's bit
for bit in float32 (``tests/runtime/test_stitching.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map
from monai.inferers import Inferer
from tqdm import tqdm

from pe_segmentation.runtime.inferer import window_slices

#: What the stitcher stores per voxel of the open slab, in bytes, besides its output channels: the weight sum.
ACCUMULATOR_BYTES = 4


def open_slab_bytes(shape: Sequence[int], roi_size: Sequence[int], channels: int) -> int:
    """Bytes of the open slab's sums (float32, ``channels`` weighted sums and one weight sum) for a volume of
    ``shape`` (spatial) tiled with ``roi_size`` windows: the stitcher's memory besides its output map."""
    size = [max(int(s), int(r)) for s, r in zip(shape, roi_size, strict=True)]
    planes = int(roi_size[0]) * int(torch.tensor(size[1:]).prod())
    return planes * ACCUMULATOR_BYTES * (int(channels) + 1)


class SlabSlidingWindowInferer(Inferer):
    """Gaussian-weighted sliding windows over a ``(1, C, *spatial)`` volume, stitched slab by slab.

    Args:
        roi_size: window size (one entry per spatial axis).
        sw_batch_size: windows per network call.
        overlap: window overlap in [0, 1).
        sigma_scale: the Gaussian's sigma relative to the window (MONAI's default, 0.125).
        sw_device: where the network runs; default: the input's device.
        device: where the open slab's sums live; default: the input's device.
        activation: applied to each finished slab (e.g. ``torch.sigmoid``); ``None`` keeps the blended output.
        output_dtype: dtype of the output map (float32; float16 halves it).
        progress: a progress bar over the windows.
        tiling: the windows of a (padded) volume shape, first axis slowest with non-decreasing starts along it;
            default: MONAI's (:func:`~pe_segmentation.runtime.inferer.window_slices`). Another model's own
            tiling (nnU-Net's steps) plugs in here.
        importance: the weight map of a window (``roi_size``); default: MONAI's Gaussian of ``sigma_scale``.

    Raises:
        ValueError: a window size of the wrong length, an overlap outside [0, 1) or a window batch below 1.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        *,
        sigma_scale: float = 0.125,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        output_dtype: torch.dtype = torch.float32,
        progress: bool = False,
        tiling: Callable[[Sequence[int]], list[tuple[slice, ...]]] | None = None,
        importance: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.roi_size = tuple(int(r) for r in roi_size)
        if not self.roi_size or any(r < 1 for r in self.roi_size):
            raise ValueError(f"roi_size must be positive integers, got {list(roi_size)}")
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if int(sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.sigma_scale = float(sigma_scale)
        self.sw_device = sw_device
        self.device = device
        self.activation = activation
        self.output_dtype = output_dtype
        self.progress = progress
        self.tiling = tiling
        if importance is not None and tuple(importance.shape) != self.roi_size:
            raise ValueError(f"importance map has shape {tuple(importance.shape)}, expected {self.roi_size}")
        self.importance = importance

    def __call__(
        self,
        inputs: torch.Tensor,
        network: Callable[..., Any],
        *args: Any,
        condition: torch.Tensor | None = None,
        out: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Run ``network`` over the windows of ``inputs`` and return the stitched (activated) output.

        Args:
            inputs: ``(1, C, *spatial)``.
            network: called as ``network(windows, *args, **kwargs)`` with a ``(B, C, *roi)`` batch (and
                ``condition=`` its windows of ``condition``, when given); returns ``(B, C_out, *roi)``.
            condition: a ``(1, C', *spatial)`` map sliced alongside the windows (MONAI's ``condition``).
            out: where to write the ``(1, C_out, *spatial)`` result (any layout, e.g. a view into a larger map);
                default: a new tensor of ``output_dtype`` on ``device``.
        """
        if inputs.ndim != len(self.roi_size) + 2 or inputs.shape[0] != 1:
            raise ValueError(
                f"expected one volume (1, C, {len(self.roi_size)} spatial axes), got shape {tuple(inputs.shape)}"
            )
        inputs = torch.as_tensor(inputs)
        shape = tuple(int(s) for s in inputs.shape[2:])
        pads = [max(r - s, 0) for r, s in zip(self.roi_size, shape, strict=True)]
        low = [p // 2 for p in pads]
        if any(pads):  # MONAI pads a volume smaller than a window with zeros, half on each side
            flat = [v for p, lo in zip(reversed(pads), reversed(low), strict=True) for v in (lo, p - lo)]
            inputs = F.pad(inputs, flat, mode="constant", value=0.0)
            if condition is not None:
                condition = F.pad(condition, flat, mode="constant", value=0.0)
        state = _SlabState(self, inputs, shape, low, out)
        padded = tuple(int(n) for n in inputs.shape[2:])
        if self.tiling is not None:
            windows = self.tiling(padded)
        else:
            windows = window_slices(padded, self.roi_size, self.overlap)
        starts = range(0, len(windows), self.sw_batch_size)
        for first in tqdm(starts, desc="windows", unit="batch", disable=not self.progress):
            batch = windows[first : first + self.sw_batch_size]
            call_kwargs = dict(kwargs)
            if condition is not None:
                call_kwargs["condition"] = _cut(condition, batch, state.sw_device)
            result = network(_cut(inputs, batch, state.sw_device), *args, **call_kwargs)
            if isinstance(result, (list, tuple)):
                result = result[0]
            state.add(batch, result)
            del result, call_kwargs  # not held while the next batch's activations are allocated
        return state.finish()


def _cut(volume: torch.Tensor, windows: Sequence[tuple[slice, ...]], device: torch.device) -> torch.Tensor:
    """The windows of a ``(1, C, *spatial)`` volume as one ``(B, C, *roi)`` batch on ``device``."""
    indices = [(slice(None), slice(None), *window) for window in windows]
    parts = [volume[index] for index in indices]
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).to(device)


class _SlabState:
    """The open slab of one run: weighted sums and weight sums of the planes ``[base, base + roi[0])``."""

    def __init__(
        self,
        inferer: SlabSlidingWindowInferer,
        inputs: torch.Tensor,
        shape: tuple[int, ...],
        low: list[int],
        out: torch.Tensor | None,
    ) -> None:
        self.inferer = inferer
        self.shape = shape
        self.low = low
        self.padded = tuple(int(s) for s in inputs.shape[2:])
        self.sw_device = torch.device(inferer.sw_device or inputs.device)
        self.device = torch.device(inferer.device or inputs.device)
        self.dtype = inputs.dtype
        if inferer.importance is not None:
            weight = inferer.importance.to(self.sw_device)
        else:
            weight = compute_importance_map(
                inferer.roi_size, mode="gaussian", sigma_scale=inferer.sigma_scale, device=self.sw_device
            )
        self.weight = weight.to(dtype=self.dtype)[None, None]
        self.weight_here = self.weight.to(self.device)
        self.out = out
        self.sums: torch.Tensor | None = None
        self.counts = torch.zeros(
            (1, 1, inferer.roi_size[0], *self.padded[1:]), dtype=self.dtype, device=self.device
        )
        self.base = 0

    def add(self, windows: Sequence[tuple[slice, ...]], result: torch.Tensor) -> None:
        """Blend one batch of window outputs into the open slab, closing the planes no later window touches."""
        if self.sums is None:
            channels = int(result.shape[1])
            self.sums = torch.zeros(
                (1, channels, *self.counts.shape[2:]), dtype=self.dtype, device=self.device
            )
            if self.out is None:
                self.out = torch.empty(
                    (1, channels, *self.shape), dtype=self.inferer.output_dtype, device=self.device
                )
            elif tuple(self.out.shape) != (1, channels, *self.shape):
                raise ValueError(
                    f"out has shape {tuple(self.out.shape)}, expected {(1, channels, *self.shape)}"
                )
        weighted = (result * self.weight).to(self.device)
        for window, values in zip(windows, weighted, strict=True):
            start = window[0].start
            if start > self.base:
                self._close(start)
            planes = slice(start - self.base, start - self.base + self.inferer.roi_size[0])
            index: tuple[int | slice, ...] = (0, slice(None), planes, *window[1:])
            self.sums[index] += values
            self.counts[index] += self.weight_here[0]

    def finish(self) -> torch.Tensor:
        """Close the last slab and return the output map."""
        if self.sums is None or self.out is None:
            raise ValueError("no window to stitch")
        self._close(self.padded[0])
        return self.out

    def _close(self, until: int) -> None:
        """Write planes ``[base, until)`` (padded coordinates) to the output and move the slab to ``until``."""
        assert self.sums is not None
        assert self.out is not None
        done = until - self.base
        blended = self.sums[:, :, :done] / self.counts[:, :, :done]
        if self.inferer.activation is not None:
            blended = self.inferer.activation(blended)
        # padded planes [base, until) hold output planes [base - low, until - low) of the unpadded volume
        first, last = max(self.base, self.low[0]), min(until, self.low[0] + self.shape[0])
        if last > first:
            crop = tuple(slice(lo, lo + size) for lo, size in zip(self.low[1:], self.shape[1:], strict=True))
            index = (slice(None), slice(None), slice(first - self.base, last - self.base), *crop)
            part = blended[index]
            self.out[:, :, first - self.low[0] : last - self.low[0]] = part.to(
                self.out.device, self.out.dtype
            )
        keep = self.sums.shape[2] - done
        for buffer in (self.sums, self.counts):
            if keep > 0:
                carried = buffer[:, :, done:]
                buffer[:, :, :keep] = carried if done >= keep else carried.clone()
            buffer[:, :, keep:] = 0
        self.base = until
