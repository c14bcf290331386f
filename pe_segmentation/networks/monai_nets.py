"""MONAI's segmentation networks behind pe-seg's parameter names and output conventions.

Each ``build_monai_*`` function takes pe-seg's common parameters (``spatial_dims``, ``in_channels``,
``out_channels``, ``base_channels``, ``depth``, ``norm``, ``dropout``, ...) and translates them into the MONAI
network's own arguments; any other keyword is passed to the MONAI class unchanged. The network is wrapped in
:class:`MonaiNetwork`, which

* pads inputs to the size multiple the MONAI network needs and crops the output back, so odd patch sizes work;
* returns one logits tensor ``(B, out_channels, *spatial)`` outside deep-supervised training (MONAI's
  ``BasicUNetPlusPlus`` always returns a list, which is unwrapped).

The MONAI module itself is ``wrapper.net`` (load MONAI/pretrained weights into it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from monai.networks.nets import AttentionUnet, BasicUNetPlusPlus, DynUNet, SegResNet, SwinUNETR
from monai.networks.nets import UNet as MonaiUNet

from pe_segmentation.networks.blocks import NormSpec, check_common_args, level_channels
from pe_segmentation.networks.padding import crop_to, pad_to_multiple


class MonaiNetwork(nn.Module):
    """Wrap a MONAI network: pad to ``multiple``, run it, crop back; unwrap list outputs outside training.

    Args:
        net: the MONAI module.
        multiple: spatial sizes are zero-padded up to a multiple of this (1 = no padding).
        list_output: the module returns a list whose first element is the final output (BasicUNetPlusPlus).
        deep_supervision: the module was built with deep supervision; in training mode its full output (a
            list, or DynUNet's stacked ``(B, heads, C, *spatial)`` tensor) is returned.
    """

    def __init__(
        self, net: nn.Module, multiple: int = 1, list_output: bool = False, deep_supervision: bool = False
    ):
        super().__init__()
        self.net = net
        self.multiple = multiple
        self.list_output = list_output
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = list(x.shape[2:])
        y = self.net(pad_to_multiple(x, self.multiple))
        if isinstance(y, torch.Tensor):
            return crop_to(y, size)
        if self.training and self.deep_supervision:
            return [crop_to(t, size) for t in y]
        return crop_to(y[0], size)


def _monai_norm(norm: NormSpec, channels: int) -> str | tuple:
    """Translate a pe-seg norm name into the MONAI spec that one MONAI network uses for all its layers.

    ``"group"`` gets ``gcd(8, channels)`` groups, which divides every deeper (doubled) width too; a MONAI
    tuple passes through. MONAI builds "instance" with torch's own ``InstanceNorm`` (see docs/networks.md for
    what that costs with channels-last bfloat16).
    """
    if isinstance(norm, tuple):
        return norm
    name = str(norm).lower() if norm is not None else "none"
    if name == "instance":
        return ("instance", {"affine": True})
    if name == "batch":
        return "batch"
    if name == "group":
        return ("group", {"num_groups": math.gcd(8, channels)})
    raise ValueError(
        f"MONAI networks need a normalisation: norm must be batch, instance or group, got {norm!r}."
    )


def build_monai_unet(
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    base_channels: int = 32,
    depth: int = 4,
    norm: NormSpec = "instance",
    dropout: float = 0.0,
    num_res_units: int = 2,
    **native: Any,
) -> MonaiNetwork:
    """MONAI ``UNet`` (strided-conv down-sampling, residual units): channels ``base * 2**i``, strides 2."""
    check_common_args(spatial_dims, in_channels, out_channels, base_channels, depth, norm, dropout, "deconv")
    net = MonaiUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=level_channels(base_channels, depth),
        strides=[2] * depth,
        num_res_units=num_res_units,
        norm=_monai_norm(norm, base_channels),
        dropout=dropout,
        **native,
    )
    return MonaiNetwork(net, multiple=2**depth)


def build_monai_attention_unet(
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    base_channels: int = 32,
    depth: int = 4,
    dropout: float = 0.0,
    **native: Any,
) -> MonaiNetwork:
    """MONAI ``AttentionUnet`` (batch norm built in, so no ``norm``): channels ``base * 2**i``, strides 2."""
    check_common_args(
        spatial_dims, in_channels, out_channels, base_channels, depth, "batch", dropout, "deconv"
    )
    net = AttentionUnet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=level_channels(base_channels, depth),
        strides=[2] * depth,
        dropout=dropout,
        **native,
    )
    return MonaiNetwork(net, multiple=2**depth)


def build_monai_unetpp(
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    base_channels: int = 32,
    norm: NormSpec = "instance",
    dropout: float = 0.0,
    upsample: str = "deconv",
    deep_supervision: bool = False,
    **native: Any,
) -> MonaiNetwork:
    """MONAI ``BasicUNetPlusPlus`` (depth 4): features ``(b, b, 2b, 4b, 8b, b)`` for ``base_channels=b``."""
    check_common_args(spatial_dims, in_channels, out_channels, base_channels, 4, norm, dropout, upsample)
    b = base_channels
    net = BasicUNetPlusPlus(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        features=(b, b, 2 * b, 4 * b, 8 * b, b),
        deep_supervision=deep_supervision,
        norm=_monai_norm(norm, b),
        dropout=dropout,
        upsample=upsample,
        **native,
    )
    if not deep_supervision:
        # MONAI still runs the three shallow heads and discards their output: parameters without gradients
        # (DDP would need find_unused_parameters) and wasted convolutions; replace them with no-ops
        for level in (1, 2, 3):
            setattr(net, f"final_conv_0_{level}", nn.Identity())
    # BasicUNetPlusPlus pads mismatched skips itself, but only a multiple of 16 keeps every level aligned
    return MonaiNetwork(net, multiple=16, list_output=True, deep_supervision=deep_supervision)


def build_monai_segresnet(
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    base_channels: int = 16,
    depth: int = 3,
    norm: NormSpec = "group",
    dropout: float = 0.0,
    upsample: str = "nontrainable",
    **native: Any,
) -> MonaiNetwork:
    """MONAI ``SegResNet``: ``init_filters=base_channels``, ``blocks_down=(1, 2, 2, 4, ...)[:depth + 1]``."""
    check_common_args(spatial_dims, in_channels, out_channels, base_channels, depth, norm, dropout, upsample)
    blocks_down = tuple([1, 2, 2] + [4] * max(0, depth - 2))[: depth + 1]
    net = SegResNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        init_filters=base_channels,
        blocks_down=blocks_down,
        blocks_up=(1,) * depth,
        norm=_monai_norm(norm, base_channels),
        dropout_prob=dropout or None,
        upsample_mode=upsample,
        **native,
    )
    return MonaiNetwork(net, multiple=2**depth)


def build_monai_dynunet(
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    base_channels: int = 32,
    depth: int = 4,
    norm: NormSpec = "instance",
    dropout: float = 0.0,
    deep_supervision: bool = False,
    deep_supr_num: int | None = None,
    max_channels: int = 320,
    **native: Any,
) -> MonaiNetwork:
    """MONAI ``DynUNet`` (nnU-Net's network): 3x3[x3] kernels, strides ``[1, 2, ..., 2]`` from ``depth``.

    Filters are ``base * 2**i`` capped at ``max_channels`` (320, as in nnU-Net). With deep supervision MONAI
    returns, in training mode, a stacked tensor ``(B, 1 + deep_supr_num, C, *spatial)``;
    ``deep_supr_num`` defaults to ``max(1, depth - 2)``.
    """
    check_common_args(spatial_dims, in_channels, out_channels, base_channels, depth, norm, dropout, "deconv")
    if depth < 2 and deep_supervision:
        raise ValueError("deep_supervision needs depth >= 2.")
    net = DynUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[3] * (depth + 1),
        strides=[1] + [2] * depth,
        upsample_kernel_size=[2] * depth,
        filters=level_channels(base_channels, depth, cap=max_channels),
        norm_name=_monai_norm(norm, base_channels),
        dropout=dropout or None,
        deep_supervision=deep_supervision,
        deep_supr_num=deep_supr_num if deep_supr_num is not None else max(1, depth - 2),
        **native,
    )
    return MonaiNetwork(net, multiple=2**depth, deep_supervision=deep_supervision)


def build_monai_swinunetr(
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    base_channels: int = 24,
    norm: NormSpec = "instance",
    dropout: float = 0.0,
    **native: Any,
) -> MonaiNetwork:
    """MONAI ``SwinUNETR`` (no ``img_size`` in MONAI 1.6): ``feature_size=base_channels``, a multiple of 12.

    The Swin encoder halves the resolution five times (patch embedding + four stages), so inputs are padded to
    a multiple of 32.
    """
    check_common_args(spatial_dims, in_channels, out_channels, base_channels, 4, norm, dropout, "deconv")
    if base_channels % 12 != 0:
        raise ValueError(
            f"SwinUNETR needs base_channels (feature_size) divisible by 12, got {base_channels}."
        )
    net = SwinUNETR(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=base_channels,
        norm_name=_monai_norm(norm, base_channels),
        drop_rate=dropout,
        **native,
    )
    return MonaiNetwork(net, multiple=32)
