"""Building blocks shared by every pe-seg network.

Each block is defined once here and composed by :mod:`pe_segmentation.networks.unet` (UNet, R2UNet, Attention
UNet, R2-Attention UNet) and :mod:`pe_segmentation.networks.nested_unet` (UNet++). Convolutions,
normalisation, pooling, dropout, activations and up-sampling come from MONAI's factories and blocks, so that
2D and 3D share one code path.

All modules are TorchScript-scriptable (``torch.jit.script``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import UpSample
from monai.networks.layers.factories import Conv, Dropout, Norm, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer

NORM_NAMES = ("batch", "instance", "group", "none")
"""Normalisation names accepted by the pe-seg networks (a MONAI norm tuple is accepted too)."""

UPSAMPLE_MODES = ("deconv", "nontrainable", "pixelshuffle")
"""Up-sampling modes: transposed conv, 1x1 conv + (bi/tri)linear interpolation, or sub-pixel convolution."""

NormSpec = str | tuple | None
ActSpec = str | tuple


class InstanceNorm(nn.GroupNorm):
    """Affine instance normalisation (per-sample, per-channel statistics), fast in every memory format.

    Mathematically ``torch.nn.InstanceNorm{2,3}d(affine=True)``, with the same ``weight``/``bias`` parameters
    and no buffers (state dicts are interchangeable), and stored as a ``GroupNorm`` with one channel per
    group. The forward pass picks the faster of two identical PyTorch kernels, which matters for bfloat16 and
    channels-last on CPU (measured in docs/networks.md):

    * without autograd (inference) ``group_norm``: ``instance_norm`` reshapes through ``batch_norm``, copies a
      channels-last input to NCDHW and returns NCDHW, 4-5x slower in that layer and a layout change for the
      next convolution;
    * with autograd (training) ``instance_norm``: the channels-last bfloat16 ``group_norm`` backward is about
      9x slower than ``instance_norm``'s.

    Args:
        num_channels: channels of the input.
        eps: added to the variance.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__(num_channels, num_channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def level_channels(base_channels: int, depth: int, cap: int | None = None) -> list[int]:
    """Channels of each of the ``depth + 1`` levels: ``base_channels`` doubled per level, at most ``cap``."""
    widths = [base_channels * 2**level for level in range(depth + 1)]
    return [min(w, cap) for w in widths] if cap else widths


def _check_norm(norm: NormSpec) -> None:
    if norm is None or isinstance(norm, tuple):
        return
    if str(norm).lower() not in NORM_NAMES:
        raise ValueError(f"norm must be one of {', '.join(NORM_NAMES)} or a MONAI norm tuple, got {norm!r}.")


def make_norm(norm: NormSpec, spatial_dims: int, channels: int) -> nn.Module | None:
    """Normalisation layer for ``channels`` channels, or ``None`` for ``"none"``.

    Args:
        norm: ``"batch"``, ``"instance"`` (affine, as in nnU-Net; see :class:`InstanceNorm`), ``"group"``
            (with ``gcd(8, channels)`` groups: 8 for the usual widths, fewer for tiny test networks),
            ``"none"``/``None``, or a MONAI ``(name, kwargs)`` norm spec.
        spatial_dims: 2 or 3.
        channels: number of channels the layer will see.
    """
    _check_norm(norm)
    if norm is None:
        return None
    if isinstance(norm, tuple):
        return get_norm_layer(norm, spatial_dims, channels)
    name = str(norm).lower()
    if name == "none":
        return None
    if name == "instance":
        return InstanceNorm(channels)
    if name == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    return Norm[Norm.BATCH, spatial_dims](channels)


def check_common_args(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    base_channels: int,
    depth: int,
    norm: NormSpec,
    dropout: float,
    upsample: str,
) -> None:
    """Validate the arguments every pe-seg network shares; raise ``ValueError`` naming the fix."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not isinstance(base_channels, int) or base_channels < 1:
        raise ValueError(f"base_channels must be a positive integer, got {base_channels!r}.")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth (number of down-sampling steps) must be an integer >= 1, got {depth!r}.")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {upsample!r}.")
    _check_norm(norm)


def _dropout(rate: float) -> nn.Module:
    return Dropout[Dropout.DROPOUT, 1](p=rate) if rate > 0 else nn.Identity()


class ConvNormAct(nn.Sequential):
    """``kernel_size`` convolution (same padding) -> normalisation -> activation.

    The convolution has no bias when a normalisation follows: the norm's shift would cancel it (and its
    gradient would be zero).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: NormSpec,
        act: ActSpec,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        norm_layer = make_norm(norm, spatial_dims, out_channels)
        self.add_module(
            "conv",
            Conv[Conv.CONV, spatial_dims](
                in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm_layer is None
            ),
        )
        self.add_module("norm", norm_layer if norm_layer is not None else nn.Identity())
        self.add_module("act", get_act_layer(act))


class ConvBlock(nn.Sequential):
    """The UNet double convolution: two (3x3[x3] conv -> norm -> activation), then optional dropout.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (of both convolutions).
        norm: normalisation, see :func:`make_norm`.
        act: MONAI activation spec.
        dropout: dropout rate applied once at the end of the block.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: NormSpec = "instance",
        act: ActSpec = ("relu", {"inplace": True}),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.add_module("conv_0", ConvNormAct(spatial_dims, in_channels, out_channels, norm, act))
        self.add_module("conv_1", ConvNormAct(spatial_dims, out_channels, out_channels, norm, act))
        self.add_module("dropout", _dropout(dropout))


class RecurrentConv(nn.Module):
    """Recurrent convolutional layer (RCL) of R2U-Net (Alom et al. 2018).

    One conv -> norm -> activation unit with shared weights is applied ``t + 1`` times, each time to the block
    input plus the previous state: ``h_0 = f(x)``, ``h_k = f(x + h_{k-1})``. The recurrence widens the
    receptive field without adding parameters.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels (the recurrence needs them equal).
        recurrence: number of recurrent steps ``t`` (>= 1; R2U-Net uses 2).
        norm: normalisation, see :func:`make_norm`.
        act: MONAI activation spec.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        recurrence: int = 2,
        norm: NormSpec = "instance",
        act: ActSpec = ("relu", {"inplace": True}),
    ) -> None:
        super().__init__()
        if recurrence < 1:
            raise ValueError(f"recurrence (t) must be >= 1, got {recurrence!r}.")
        self.recurrence = recurrence
        self.conv = ConvNormAct(spatial_dims, channels, channels, norm, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        for _ in range(self.recurrence):
            h = self.conv(x + h)
        return h


class RecurrentResidualBlock(nn.Module):
    """Recurrent residual convolutional unit (RRCU) of R2U-Net, the drop-in replacement of :class:`ConvBlock`.

    A 1x1 convolution maps the input to ``out_channels``; two :class:`RecurrentConv` layers follow and their
    output is added back to the projected input (residual connection).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        recurrence: recurrent steps ``t`` of each RCL.
        norm: normalisation, see :func:`make_norm`.
        act: MONAI activation spec.
        dropout: dropout rate applied once at the end of the block.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        recurrence: int = 2,
        norm: NormSpec = "instance",
        act: ActSpec = ("relu", {"inplace": True}),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.project = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=1)
        self.body = nn.Sequential(
            RecurrentConv(spatial_dims, out_channels, recurrence, norm, act),
            RecurrentConv(spatial_dims, out_channels, recurrence, norm, act),
        )
        self.dropout = _dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        return self.dropout(x + self.body(x))


class AttentionGate(nn.Module):
    """Additive attention gate of Attention U-Net (Oktay et al. 2018), applied to a skip connection.

    The skip features ``x`` (fine grid) are scaled voxel-wise by coefficients ``alpha`` in (0, 1) computed
    from ``x`` and the gating signal ``g`` taken from the next coarser decoder level (half the resolution), as
    in the paper: ``alpha = sigmoid(psi(relu(W_x x + W_g g + b_g)) + b_psi)``, where ``W_x`` is a stride-2
    2x2[x2] convolution that brings ``x`` onto ``g``'s grid and ``alpha`` is resampled (bi/trilinear) back
    onto ``x``'s grid. Computing the gate at the coarse resolution is what keeps it cheap.

    Args:
        spatial_dims: 2 or 3.
        x_channels: channels of the skip features.
        g_channels: channels of the gating signal.
        inter_channels: channels of the intermediate (additive) space; defaults to
            ``max(1, x_channels // 2)``.
    """

    def __init__(
        self, spatial_dims: int, x_channels: int, g_channels: int, inter_channels: int | None = None
    ):
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(1, x_channels // 2)
        conv = Conv[Conv.CONV, spatial_dims]
        self.theta_x = conv(x_channels, inter, kernel_size=2, stride=2, bias=False)
        self.phi_g = conv(g_channels, inter, kernel_size=1, bias=True)
        self.psi = conv(inter, 1, kernel_size=1, bias=True)
        self.interp_mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``alpha`` with shape ``(B, 1, *x.shape[2:])`` and values in (0, 1)."""
        q = self.psi(F.relu(self.theta_x(x) + self.phi_g(g)))
        alpha = torch.sigmoid(q)
        return F.interpolate(alpha, size=x.shape[2:], mode=self.interp_mode, align_corners=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(x, g)


class NoGate(nn.Module):
    """Identity stand-in for :class:`AttentionGate` (plain skip connection), with the same call signature."""

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x


def make_downsample(spatial_dims: int) -> nn.Module:
    """2x max-pooling, the down-sampling of every pe-seg UNet."""
    return Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)


def make_upsample(spatial_dims: int, in_channels: int, out_channels: int, mode: str) -> nn.Module:
    """2x up-sampling from ``in_channels`` to ``out_channels`` with MONAI's ``UpSample``.

    Args:
        mode: ``"deconv"`` (2x2[x2] transposed conv), ``"nontrainable"`` (1x1 conv, then bi/trilinear
            interpolation) or ``"pixelshuffle"`` (3x3[x3] conv + sub-pixel shuffle).
    """
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {mode!r}.")
    return UpSample(
        spatial_dims,
        in_channels,
        out_channels,
        scale_factor=2,
        mode=mode,
        interp_mode="linear",
        align_corners=False,
    )


def make_head(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """1x1[x1] convolution from features to class logits."""
    return Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=1)
