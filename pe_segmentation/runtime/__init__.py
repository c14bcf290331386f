"""What training and inference share: devices and precision, the memory allocator, checkpoints, torch.distributed
and the sliding-window inferer.

Nothing here knows about a training run or a prediction; both build on it::

    from pe_segmentation.runtime import load_checkpoint, resolve_precision, select_device

    device = select_device("auto")
    precision = resolve_precision("auto", device)  # bf16 on CPUs with AMX/AVX512-BF16, fp16/bf16 on GPUs
    checkpoint = load_checkpoint("runs/unet/checkpoints/best.pt")  # weights_only, with a clear error
"""

from __future__ import annotations

from pe_segmentation.runtime.allocator import keep_freed_memory
from pe_segmentation.runtime.checkpoint import (
    check_architecture,
    find_resume_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    saved_config,
)
from pe_segmentation.runtime.devices import (
    inference_device,
    inference_precision,
    stitch_device,
    visible_devices,
)
from pe_segmentation.runtime.distributed import DistributedContext, init_distributed, launch, under_launcher
from pe_segmentation.runtime.inferer import AutocastInferer, build_inferer, count_windows
from pe_segmentation.runtime.memory_format import channels_last_format, to_memory_format
from pe_segmentation.runtime.precision import Precision, cpu_supports_bf16, resolve_precision, select_device

__all__ = [
    "AutocastInferer",
    "DistributedContext",
    "Precision",
    "build_inferer",
    "channels_last_format",
    "check_architecture",
    "count_windows",
    "cpu_supports_bf16",
    "find_resume_checkpoint",
    "inference_device",
    "inference_precision",
    "init_distributed",
    "keep_freed_memory",
    "launch",
    "load_checkpoint",
    "load_model_weights",
    "resolve_precision",
    "save_checkpoint",
    "saved_config",
    "select_device",
    "stitch_device",
    "to_memory_format",
    "under_launcher",
    "visible_devices",
]
