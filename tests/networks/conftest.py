"""Tiny configurations of every registered network, so that the network tests stay fast on 2 CPU cores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn as nn

from pe_segmentation.networks import build_network

# the smallest sensible setting of each network (base width 4-12, depth 2-3)
TINY: dict[str, dict[str, Any]] = {
    "unet": {"base_channels": 4, "depth": 2},
    "r2unet": {"base_channels": 4, "depth": 2},
    "attention_unet": {"base_channels": 4, "depth": 2},
    "r2_attention_unet": {"base_channels": 4, "depth": 2},
    "nested_unet": {"base_channels": 4, "depth": 2},
    "monai_unet": {"base_channels": 4, "depth": 2, "num_res_units": 1},
    "monai_attention_unet": {"base_channels": 4, "depth": 2},
    "monai_unetpp": {"base_channels": 4},
    "monai_segresnet": {"base_channels": 8, "depth": 2},
    "monai_dynunet": {"base_channels": 4, "depth": 2},
    "monai_swinunetr": {
        "base_channels": 12,
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 1, 1, 1),
        "window_size": 4,
    },
}


@pytest.fixture
def tiny_network() -> Callable[..., nn.Module]:
    """Factory: ``tiny_network(name, spatial_dims, **overrides)`` builds a tiny, seeded network."""

    def make(name: str, spatial_dims: int, **overrides: Any) -> nn.Module:
        torch.manual_seed(0)
        return build_network(name, spatial_dims=spatial_dims, **{**TINY[name], **overrides})

    return make
