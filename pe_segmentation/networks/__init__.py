"""Segmentation networks: pe-seg's UNet family and UNet++, MONAI's networks, one registry and export.

Build any of them by name::

    from pe_segmentation.networks import build_network
    net = build_network("r2unet", spatial_dims=3, base_channels=32, depth=4)

All networks output raw logits ``(B, out_channels, *spatial)``; ``out_channels=2`` (background, embolus) with
a softmax is the project default.
"""

from __future__ import annotations

from pe_segmentation.networks.blocks import (
    AttentionGate,
    ConvBlock,
    InstanceNorm,
    NoGate,
    RecurrentConv,
    RecurrentResidualBlock,
)
from pe_segmentation.networks.export import export_torchscript, load_torchscript, to_torchscript
from pe_segmentation.networks.monai_nets import MonaiNetwork
from pe_segmentation.networks.nested_unet import NestedUNet
from pe_segmentation.networks.registry import (
    NETWORKS,
    available_networks,
    build_network,
    network_parameters,
    resolve_name,
)
from pe_segmentation.networks.unet import AttentionUNet, EncoderDecoderUNet, R2AttentionUNet, R2UNet, UNet

__all__ = [
    "NETWORKS",
    "AttentionGate",
    "AttentionUNet",
    "ConvBlock",
    "EncoderDecoderUNet",
    "InstanceNorm",
    "MonaiNetwork",
    "NestedUNet",
    "NoGate",
    "R2AttentionUNet",
    "R2UNet",
    "RecurrentConv",
    "RecurrentResidualBlock",
    "UNet",
    "available_networks",
    "build_network",
    "export_torchscript",
    "load_torchscript",
    "network_parameters",
    "resolve_name",
    "to_torchscript",
]
