"""Device and numeric precision of a run: which device, which autocast dtype, whether gradients are scaled.

``training.device``: ``auto`` takes CUDA when a GPU is visible (the process's local GPU under DDP), else the
CPU; ``cpu``, ``cuda`` and ``cuda:N`` are taken as given and checked.

``training.precision``:

=========  ==============================================  ===========================================
value      CUDA                                            CPU
=========  ==============================================  ===========================================
``auto``   fp16 autocast + gradient scaling                bf16 autocast when the CPU has native bf16
                                                           (AVX512-BF16 / AMX), else fp32
``bf16``   bf16 autocast (GPUs with bf16 support)          bf16 autocast (emulated, slow, on CPUs without
                                                           native bf16: a warning says so)
``fp16``   fp16 autocast + gradient scaling                refused: fp16 training needs CUDA
``fp32``   no autocast                                     no autocast
=========  ==============================================  ===========================================

Autocast covers the network's forward pass only; losses are computed in float32 (pe-seg's losses cast the
logits) and optimizer states stay float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pe_segmentation.errors import ConfigError

log = logging.getLogger(__name__)

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def select_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """The ``torch.device`` of a run.

    Args:
        spec: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``training.device``).
        local_rank: the process's GPU index under DDP; it picks the GPU for ``auto`` and ``cuda`` (and wins
            over ``cuda:N``, with a warning, since each process must own its GPU).

    Raises:
        ConfigError: an unknown spec, or CUDA asked for where none (or not that GPU) is visible.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"training.device: expected auto, cpu, cuda or cuda:N, got {spec!r}")
    spec = spec.strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        spec = "cuda"
    if spec != "cuda" and not (spec.startswith("cuda:") and spec[5:].isdigit()):
        raise ConfigError(f"training.device: expected auto, cpu, cuda or cuda:N, got {spec!r}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"training.device: {spec} asked for, but no CUDA GPU is visible (torch {torch.__version__}); "
            "use device: cpu or auto"
        )
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if spec == "cuda" else int(spec[5:])
    if local_rank is not None:
        if spec != "cuda" and index != local_rank:
            log.warning(
                "training.device %s ignored under DDP: process %d uses cuda:%d", spec, local_rank, local_rank
            )
        index = local_rank
    if index >= count:
        raise ConfigError(f"training.device: cuda:{index} asked for, but only {count} GPU(s) are visible")
    return torch.device("cuda", index)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX).

    Autocast to bf16 works on every CPU, but without these instructions it is emulated and slower than fp32.
    ``PE_SEG_CPU_BF16=0/1`` overrides the detection.
    """
    override = os.environ.get("PE_SEG_CPU_BF16")
    if override is not None:
        return override.strip().lower() in ("1", "true", "yes")
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private oneDNN query not in this build: read the CPU flags
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


@dataclass(frozen=True)
class Precision:
    """The numeric precision of a run on one device.

    Attributes:
        name: ``fp32``, ``bf16`` or ``fp16`` (what ``auto`` resolved to).
        device_type: ``cpu`` or ``cuda``.
    """

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, ``None`` for fp32."""
        return _DTYPES[self.name]

    @property
    def uses_autocast(self) -> bool:
        return self.dtype is not None

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
        return self.name == "fp16"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to :attr:`dtype` on :attr:`device_type` (nothing for fp32)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield


def resolve_precision(spec: str, device: torch.device) -> Precision:
    """Resolve ``training.precision`` for ``device`` (see the module docstring's table).

    Raises:
        ConfigError: fp16 on a CPU, or bf16 on a GPU without bf16 support.
    """
    spec = str(spec).strip().lower()
    if spec not in ("auto", *_DTYPES):
        raise ConfigError(f"training.precision: expected auto, fp32, bf16 or fp16, got {spec!r}")
    kind = device.type
    if kind not in ("cpu", "cuda"):
        return Precision("fp32", kind)
    if spec == "auto":
        if kind == "cuda":
            return Precision("fp16", kind)
        return Precision("bf16" if cpu_supports_bf16() else "fp32", kind)
    if spec == "fp16" and kind == "cpu":
        raise ConfigError("training.precision: fp16 needs a CUDA device; on a CPU use bf16, fp32 or auto")
    if spec == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"training.precision: {torch.cuda.get_device_name(device)} has no bf16 support; use fp16 or auto"
        )
    if spec == "bf16" and kind == "cpu" and not cpu_supports_bf16():
        log.warning(
            "training.precision bf16: this CPU has no native bf16 (AVX512-BF16/AMX); fp32 is faster here"
        )
    return Precision(spec, kind)
