"""What one network call costs in memory: the activation figure the memory budget plans windows with.

:func:`measure_window_activation` runs the network as the sliding window runs it (autocast, memory format,
test-time flips) on two small windows under :class:`_LiveBytes`, a dispatch mode that counts the bytes of the
tensors each op makes until the last view of them is gone, and fits ``fixed + per_voxel * voxels``: a
convolutional network's activations grow with the window. For the shipped recipe's UNet (bf16, channels-last)
the fit on 32^3 and 48^3 windows gives 43 MiB + 336 bytes per voxel, exactly what two 96^3 windows measure
(610 MiB). What the counted tensors leave out, oneDNN's scratch and the heap's fragmentation, is a factor on top
(:data:`ACTIVATION_RSS_KEPT`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pe_segmentation.runtime.allocator import keeps_freed_memory

#: Resident memory of the network per byte of the activations :class:`_LiveBytes` counts: oneDNN's scratch
#: and the heap's fragmentation, which varies from run to run. With freed memory kept for reuse
#: (:mod:`pe_segmentation.runtime.allocator`) the process grew by 0.76-0.99 GiB over six windows of the shipped
#: recipe's UNet, two 96^3 windows at a time in bf16, for 0.57 GiB of tensors (1.33-1.74x); without it by
#: less. Traced stage by stage on a 512 x 512 x 400 CT (docs/inference.md, "Where the memory goes") the
#: network stage grew by 1.2-2.1x its counted activations. These factors cover the worst of those runs.
ACTIVATION_RSS_KEPT = 2.2
ACTIVATION_RSS = 1.5


@dataclass(frozen=True)
class WindowActivation:
    """The memory one network call takes beyond its input: ``fixed_bytes`` plus ``bytes_per_voxel`` for each
    voxel of the windows it is given (activations are proportional to the window for a convolutional network;
    the fixed part is, e.g., the half-precision copies of the weights that autocast keeps)."""

    fixed_bytes: int
    bytes_per_voxel: float
    rss_factor: float = 1.0

    def for_batch(self, sw_batch_size: int, roi_size: Sequence[int]) -> int:
        """Resident bytes of one call on ``sw_batch_size`` windows of ``roi_size`` (tensors times
        :attr:`rss_factor`)."""
        tensors = self.fixed_bytes + self.bytes_per_voxel * sw_batch_size * math.prod(roi_size)
        return int(tensors * self.rss_factor)


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensors that ops create while it is active, and their peak.

    Each storage is counted once, from the op that made it until the last tensor viewing it is gone (a
    finalizer on every tensor of it). Tensors made before (the input, the weights) are not counted; memory an
    op uses only inside itself (oneDNN's scratch) is not either (:data:`ACTIVATION_RSS_KEPT` covers it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._views: dict[int, list[int]] = {}  # storage address -> [tensors alive, bytes]

    def _release(self, key: int) -> None:
        entry = self._views.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            del self._views[key]
            self.live -= entry[1]

    def __torch_dispatch__(
        self, func: Any, types: Iterable[type], args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        result = func(*args, **(kwargs or {}))
        for value in tree_flatten(result)[0]:
            if not isinstance(value, torch.Tensor) or value.device.type == "meta":
                continue
            storage = value.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0:
                continue
            entry = self._views.get(key)
            if entry is None:
                self._views[key] = [1, size]
                self.live += size
                self.peak = max(self.peak, self.live)
            else:
                entry[0] += 1
            weakref.finalize(value, self._release, key)
        return result


def measure_call_bytes(call: Callable[[torch.Tensor], Any], sample: torch.Tensor) -> int:
    """Peak bytes of the tensors ``call(sample)`` makes (see :class:`_LiveBytes`), under ``torch.no_grad``."""
    counter = _LiveBytes()
    with torch.no_grad(), counter:
        result = call(sample)
        del result
    return counter.peak


def probe_sizes(roi_size: Sequence[int], multiple: int = 16) -> list[tuple[int, ...]]:
    """Two small windows to measure a network's activations on: multiples of ``multiple`` (what a 4-level UNet
    takes without padding), the larger about half the window, so the measurement costs a few percent of one
    window's time. Empty when the window is too small to scale down."""
    small, large = [], []
    for r in roi_size:
        top = max((int(r) // 2) // multiple * multiple, 2 * multiple)
        if top > int(r):
            return []
        large.append(top)
        small.append(max(top - multiple, 2 * multiple) if top > 2 * multiple else top)
    if small == large:
        return [tuple(large)]
    return [tuple(small), tuple(large)]


def measure_window_activation(
    call: Callable[[torch.Tensor], Any],
    in_channels: int,
    roi_size: Sequence[int],
    device: torch.device,
) -> WindowActivation:
    """Measure what one window of ``roi_size`` costs ``call`` (the network as the inferer runs it: autocast,
    memory format, test-time flips) in memory: once on two small windows, fitting ``fixed + per_voxel * voxels``
    (:func:`probe_sizes`). A network that refuses those sizes is measured on one whole window, all per voxel."""
    factor = ACTIVATION_RSS_KEPT if keeps_freed_memory() else ACTIVATION_RSS
    sizes = probe_sizes(roi_size)
    points: list[tuple[int, int]] = []
    try:
        for size in sizes:
            sample = torch.zeros((1, in_channels, *size), device=device)
            points.append((math.prod(size), measure_call_bytes(call, sample)))
    except (RuntimeError, ValueError):
        points = []
    if len(points) == 2 and points[1][0] > points[0][0]:
        (v1, p1), (v2, p2) = points
        per_voxel = max((p2 - p1) / (v2 - v1), 0.0)
        return WindowActivation(max(int(p1 - per_voxel * v1), 0), per_voxel, factor)
    sample = torch.zeros((1, in_channels, *roi_size), device=device)
    return WindowActivation(0, measure_call_bytes(call, sample) / math.prod(roi_size), factor)
