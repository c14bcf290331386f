"""What training and inference share: devices and precision, the memory allocator, checkpoints, torch.distributed,
the sliding-window inferers and the memory budget of a prediction.

Nothing here knows about a training run or a prediction; both build on it::

    from pe_segmentation.runtime import load_checkpoint, resolve_precision, select_device

    device = select_device("auto")
    precision = resolve_precision("auto", device)  # bf16 on CPUs with AMX/AVX512-BF16, fp16/bf16 on GPUs
    checkpoint = load_checkpoint("runs/unet/checkpoints/best.pt")  # weights_only, with a clear error
"""

from __future__ import annotations

from pe_segmentation.runtime.allocator import keep_freed_memory, release_freed_memory
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
from pe_segmentation.runtime.inferer import AutocastInferer, build_inferer, count_windows, window_size
from pe_segmentation.runtime.memory_budget import (
    MemoryEstimate,
    MemoryPlan,
    budget_bytes,
    network_stage_bytes,
    plan_memory,
    postprocess_stage_bytes,
    preprocess_stage_bytes,
)
from pe_segmentation.runtime.memory_format import channels_last_format, to_memory_format
from pe_segmentation.runtime.precision import Precision, cpu_supports_bf16, resolve_precision, select_device
from pe_segmentation.runtime.stitching import SlabSlidingWindowInferer
from pe_segmentation.runtime.window_memory import WindowActivation, measure_window_activation

__all__ = [
    "AutocastInferer",
    "DistributedContext",
    "MemoryEstimate",
    "MemoryPlan",
    "Precision",
    "SlabSlidingWindowInferer",
    "WindowActivation",
    "budget_bytes",
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
    "measure_window_activation",
    "network_stage_bytes",
    "plan_memory",
    "postprocess_stage_bytes",
    "preprocess_stage_bytes",
    "release_freed_memory",
    "resolve_precision",
    "save_checkpoint",
    "saved_config",
    "select_device",
    "stitch_device",
    "to_memory_format",
    "under_launcher",
    "visible_devices",
    "window_size",
]
