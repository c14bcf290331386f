"""Where and in which precision inference runs.

Precision for prediction (``--precision``):

=========  ====================================================  =========================================
value      CUDA                                                  CPU
=========  ====================================================  =========================================
``auto``   bf16 autocast where the GPU supports it, else fp16    bf16 autocast when the CPU has native bf16
                                                                 (AVX512-BF16 / AMX), else fp32
``bf16``   bf16 autocast                                         bf16 autocast (slow without native bf16)
``fp16``   fp16 autocast                                         refused
``fp32``   no autocast                                           no autocast
=========  ====================================================  =========================================

Training prefers fp16 on CUDA (see :mod:`pe_segmentation.runtime.precision`); prediction has no gradients to
scale, and bf16 keeps fp32's exponent range, so logits cannot overflow, at the same speed on GPUs that have it.

Stitching: the sliding-window output is accumulated on the GPU when the preprocessed volume and its output fit
in a share of the free GPU memory, else in host memory while the windows still run on the GPU
(:func:`stitch_device`).
"""

from __future__ import annotations

import torch

from pe_segmentation.errors import ConfigError
from pe_segmentation.runtime.precision import Precision, resolve_precision, select_device

#: Share of the free GPU memory the whole-volume buffers may take; the rest is left to the network's windows.
GPU_MEMORY_SHARE = 0.5


def _as_cli_error(err: ConfigError, key: str, flag: str) -> ConfigError:
    """The engine names config keys (``training.device``); at the command line they are flags."""
    return ConfigError(str(err).replace(key, flag))


def inference_device(spec: str = "auto") -> torch.device:
    """The device of ``--device``: ``auto`` (CUDA when visible), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ConfigError: an unknown spec or a GPU that is not visible.
    """
    try:
        return select_device(spec)
    except ConfigError as err:
        raise _as_cli_error(err, "training.device", "--device") from None


def inference_precision(spec: str, device: torch.device) -> Precision:
    """The autocast precision of prediction on ``device`` (see the module docstring's table).

    Raises:
        ConfigError: an unknown spec, fp16 on a CPU, or bf16 on a GPU without bf16.
    """
    name = str(spec).strip().lower()
    if name == "auto" and device.type == "cuda":
        return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16", "cuda")
    try:
        return resolve_precision(name, device)
    except ConfigError as err:
        raise _as_cli_error(err, "training.precision", "--precision") from None


def visible_devices(spec: str = "auto") -> list[torch.device]:
    """The devices a multi-case run spreads over: every visible GPU for ``auto``/``cuda`` (one worker each),
    the one named GPU for ``cuda:N``, the CPU otherwise."""
    device = inference_device(spec)
    if device.type != "cuda" or str(spec).strip().lower().startswith("cuda:"):
        return [device]
    return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]


def stitch_device(
    device: torch.device,
    voxels: int,
    channels: int = 1,
    free_bytes: int | None = None,
    share: float = GPU_MEMORY_SHARE,
) -> torch.device:
    """Where the whole-volume input and output live during sliding-window inference.

    On a GPU, MONAI's inferer keeps the input, the output and the count map of the whole volume (float32)
    next to each other. They stay on the GPU when they take at most ``share`` of its free memory; otherwise
    they stay on the CPU and only each batch of windows is copied to the GPU.

    Args:
        device: the network's device.
        voxels: voxels of the preprocessed volume.
        channels: output channels accumulated per voxel.
        free_bytes: free GPU memory; default: asked from CUDA.
        share: share of the free memory the buffers may use.
    """
    if device.type != "cuda":
        return device
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    needed = 4 * voxels * (1 + channels + 1)  # input, output, count map; float32
    return device if needed <= share * free_bytes else torch.device("cpu")
