"""Channels-last memory format, shared by training and inference: with bf16 on CPUs (oneDNN) and fp16/bf16 on
GPUs, a 3D UNet's convolutions run markedly faster on channels-last weights and inputs (docs/networks.md)."""

from __future__ import annotations

import torch
import torch.nn as nn


def channels_last_format(spatial_dims: int, enabled: bool = True) -> torch.memory_format | None:
    """``torch.channels_last_3d`` for 3D networks, ``torch.channels_last`` for 2D; ``None`` (torch's default
    layout) when not ``enabled``."""
    if not enabled:
        return None
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def to_memory_format(network: nn.Module, memory_format: torch.memory_format | None) -> nn.Module:
    """``network`` with its weights in ``memory_format`` (unchanged for ``None``)."""
    if memory_format is None:
        return network
    # torch's stubs leave out Module.to's memory_format keyword, which it accepts
    return network.to(memory_format=memory_format)  # type: ignore[call-overload]
