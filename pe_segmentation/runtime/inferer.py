"""The whole-volume inferer shared by validation and prediction: one definition of how a network sees a CT."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer

from pe_segmentation.config import Config
from pe_segmentation.runtime.precision import Precision


def build_inferer(
    config: Config,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    *,
    roi_size: Sequence[int] | None = None,
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Inferer:
    """Gaussian-weighted sliding windows of the training patch size over a preprocessed volume.

    3D networks get ``SlidingWindowInferer``; 2D networks (``patch.spatial_dims == 2``) get ``SliceInferer``,
    which runs the 2D window over every axial slice and stacks the results, so outputs are volumes either way.

    Args:
        config: the run's config (``validation.roi_size`` or ``patch.patch_size``; overlap and window batch).
        overlap: window overlap in [0, 1); default ``validation.overlap``.
        sw_batch_size: windows per forward pass; default ``validation.sw_batch_size``.
        roi_size: window size; default ``validation.roi_size`` or the training patch size.
        sw_device: where each batch of windows runs (the network's device); default: the input's device.
        device: where the whole-volume output is stitched; default: the input's device. A GPU run whose volume
            does not fit on the GPU passes ``sw_device="cuda"`` and ``device="cpu"``: windows go to the GPU one
            batch at a time while the volume and its output stay in host memory.
        progress: show MONAI's progress bar over the windows.

    Raises:
        ValueError: an overlap outside [0, 1), a window batch below 1, or a window size of the wrong length.
    """
    roi = tuple(roi_size or window_size(config))
    overlap = config.validation.overlap if overlap is None else float(overlap)
    sw_batch_size = config.validation.sw_batch_size if sw_batch_size is None else int(sw_batch_size)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
    if len(roi) != config.patch.spatial_dims or any(int(r) < 1 for r in roi):
        raise ValueError(f"roi_size must be {config.patch.spatial_dims} positive integers, got {list(roi)}")
    common: dict[str, Any] = {
        "roi_size": roi,
        "sw_batch_size": sw_batch_size,
        "overlap": overlap,
        "mode": "gaussian",
        # a volume smaller than a window is padded with air, as training pads its patches
        "cval": config.preprocessing.air_value,
        "sw_device": sw_device,
        "device": device,
        "progress": progress,
    }
    if config.patch.spatial_dims == 2:
        return SliceInferer(spatial_dim=2, **common)
    return SlidingWindowInferer(**common)


def window_size(config: Config) -> tuple[int, ...]:
    """The sliding window of a run: ``validation.roi_size``, else the training patch size."""
    return tuple(int(r) for r in (config.validation.roi_size or config.patch.patch_size or ()))


def window_slices(shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    """The windows MONAI's sliding window cuts from a volume of ``shape`` (after padding it to at least the
    window), in MONAI's order: the first axis slowest.

    Windows lie ``roi * (1 - overlap)`` apart (a whole window where the volume is one window wide); the last
    one along each axis is moved back to end at the volume's edge. One definition for :func:`count_windows` and
    :class:`~pe_segmentation.runtime.stitching.SlabSlidingWindowInferer`, the same as MONAI's.
    """
    roi = tuple(int(r) for r in roi_size)
    size = tuple(max(int(s), r) for s, r in zip(shape, roi, strict=True))
    interval = tuple(r if r == s else max(int(r * (1 - overlap)), 1) for r, s in zip(roi, size, strict=True))
    return [tuple(s) for s in dense_patch_slices(size, roi, interval)]


def count_windows(config: Config, shape: Sequence[int], overlap: float | None = None) -> int:
    """How many windows the inferer of :func:`build_inferer` runs over a volume of ``shape``.

    MONAI tiles the (padded) volume with windows ``roi * (1 - overlap)`` apart; a 2D network's windows tile
    each slice along the last axis. Reports use it to say how many windows the territory saved.
    """
    roi = window_size(config)
    overlap = config.validation.overlap if overlap is None else float(overlap)
    planes, spatial = (
        (int(shape[-1]), tuple(shape[:2])) if config.patch.spatial_dims == 2 else (1, tuple(shape))
    )
    return planes * len(window_slices(spatial, roi, overlap))


class AutocastInferer(Inferer):
    """Run another inferer with the network under autocast and, optionally, channels-last inputs.

    MONAI's engines autocast only on CUDA (``amp=True``); this wrapper gives bf16 autocast on CPUs too and
    converts every network input (each sliding window) to the requested memory format.

    Args:
        inferer: the inferer to wrap (``SimpleInferer`` for training, sliding window for validation).
        precision: the run's :class:`Precision`.
        memory_format: ``torch.channels_last_3d`` / ``torch.channels_last``, or ``None``.
    """

    def __init__(
        self, inferer: Inferer, precision: Precision, memory_format: torch.memory_format | None = None
    ):
        super().__init__()
        self.inferer = inferer
        self.precision = precision
        self.memory_format = memory_format

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        memory_format = self.memory_format
        cast = self.precision.uses_autocast

        def fn(x: torch.Tensor, *a: Any, **k: Any) -> Any:
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            out = network(x, *a, **k)
            # float32 logits: sliding-window blending and the losses then work at full precision
            return _to_float(out) if cast else out

        with self.precision.autocast():
            return self.inferer(inputs, fn, *args, **kwargs)


def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    return value
