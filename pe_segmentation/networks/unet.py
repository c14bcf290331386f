"""The UNet family: UNet, R2UNet, Attention UNet and R2-Attention UNet on one encoder/decoder skeleton.

The four networks differ only in two choices, so they are one class, :class:`EncoderDecoderUNet`, and four
thin subclasses that fix those choices (through two private bases, one per block type, whose constructors
take exactly the parameters of their networks):

==========================  =====================================  ===========================
network                     block at every level                   skip connection
==========================  =====================================  ===========================
:class:`UNet`               :class:`~.blocks.ConvBlock`            concatenation
:class:`R2UNet`             :class:`~.blocks.RecurrentResidualBlock`  concatenation
:class:`AttentionUNet`      :class:`~.blocks.ConvBlock`            attention-gated concatenation
:class:`R2AttentionUNet`    :class:`~.blocks.RecurrentResidualBlock`  attention-gated concatenation
==========================  =====================================  ===========================

Widths double per level from ``base_channels``: the default ``base_channels=32, depth=4`` gives five levels of
32, 64, 128, 256 and 512 channels. That is the seed repository's topology (five levels, four 2x poolings) at
half its width (64..1024), about a quarter of its parameters and FLOPs, which suits 3D CTPA patches on one GPU
or a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from pe_segmentation.networks.blocks import (
    ActSpec,
    AttentionGate,
    ConvBlock,
    NoGate,
    NormSpec,
    RecurrentResidualBlock,
    check_common_args,
    level_channels,
    make_downsample,
    make_head,
    make_upsample,
)
from pe_segmentation.networks.padding import crop_to, fit_to_multiple

BLOCK_TYPES = ("conv", "recurrent")


def _make_block(
    block: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    norm: NormSpec,
    act: ActSpec,
    dropout: float,
    recurrence: int,
) -> nn.Module:
    if block == "conv":
        return ConvBlock(spatial_dims, in_channels, out_channels, norm=norm, act=act, dropout=dropout)
    return RecurrentResidualBlock(
        spatial_dims, in_channels, out_channels, recurrence=recurrence, norm=norm, act=act, dropout=dropout
    )


class EncoderStage(nn.Module):
    """Optional 2x max-pooling followed by a feature block."""

    def __init__(self, block: nn.Module, down: nn.Module | None = None) -> None:
        super().__init__()
        self.down = down if down is not None else nn.Identity()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.down(x))


def build_encoder(
    make_block: Callable[[int, int], nn.Module], spatial_dims: int, in_channels: int, channels: list[int]
) -> nn.ModuleList:
    """The encoder of every pe-seg UNet: one stage per level, each but the first after a 2x max-pooling.

    Args:
        make_block: builds a level's feature block from its input and output channels.
        spatial_dims: 2 or 3.
        in_channels: channels of the network input.
        channels: channels of each level (:func:`~.blocks.level_channels`).
    """
    return nn.ModuleList(
        [EncoderStage(make_block(in_channels, channels[0]))]
        + [
            EncoderStage(make_block(channels[i - 1], channels[i]), make_downsample(spatial_dims))
            for i in range(1, len(channels))
        ]
    )


class DecoderStage(nn.Module):
    """Up-sample the coarser features, gate the skip with them, concatenate ``[skip, up]``, apply a block."""

    def __init__(self, up: nn.Module, gate: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.up = up
        self.gate = gate
        self.block = block

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """The stage's output from the coarser features ``x`` and its skip, popped from the end of ``skips``.

        Popped inside :meth:`merge`, the skip is freed once merged, before the block runs (passed as an argument
        it would live to the end of the call): a fifth of a window's activations at inference, the same numbers.
        """
        return self.block(self.merge(x, skips.pop()))

    def merge(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``[gated skip, up-sampled x]``: the block's input."""
        return torch.cat([self.gate(skip, x), self.up(x)], dim=1)


class EncoderDecoderUNet(nn.Module):
    """UNet skeleton parametrised by block type and skip gating; returns logits ``(B, C, *spatial)``.

    Prefer the named subclasses (:class:`UNet`, :class:`R2UNet`, :class:`AttentionUNet`,
    :class:`R2AttentionUNet`); this class exists so that the four share one implementation.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels: input channels (1 for a CT window).
        out_channels: output classes; 2 (background, embolus) for softmax, 1 for sigmoid.
        base_channels: channels of the first level; each deeper level doubles them.
        depth: number of 2x down-sampling steps (levels = depth + 1). Inputs are padded to a multiple of
            ``2**depth`` (see ``pad_input``).
        norm: ``"batch"``, ``"instance"``, ``"group"``, ``"none"`` or a MONAI norm tuple.
        dropout: dropout rate at the end of every block (0 disables it).
        upsample: ``"deconv"``, ``"nontrainable"`` (interpolation) or ``"pixelshuffle"``.
        act: MONAI activation spec used after every normalisation.
        block: ``"conv"`` (double convolution) or ``"recurrent"`` (recurrent residual unit).
        attention: gate every skip connection with an additive attention gate.
        recurrence: recurrent steps ``t`` of the recurrent block (ignored for ``block="conv"``).
        pad_input: zero-pad inputs whose spatial size is not a multiple of ``2**depth`` and crop the output
            back; with ``False`` such inputs raise ``ValueError`` naming sizes that work.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        base_channels: int = 32,
        depth: int = 4,
        norm: NormSpec = "instance",
        dropout: float = 0.0,
        upsample: str = "deconv",
        act: ActSpec = ("relu", {"inplace": True}),
        block: str = "conv",
        attention: bool = False,
        recurrence: int = 2,
        pad_input: bool = True,
    ) -> None:
        super().__init__()
        check_common_args(
            spatial_dims, in_channels, out_channels, base_channels, depth, norm, dropout, upsample
        )
        if block not in BLOCK_TYPES:
            raise ValueError(f"block must be one of {', '.join(BLOCK_TYPES)}, got {block!r}.")
        if block == "recurrent" and (not isinstance(recurrence, int) or recurrence < 1):
            raise ValueError(f"recurrence (t) must be an integer >= 1, got {recurrence!r}.")

        self.spatial_dims = spatial_dims
        self.depth = depth
        self.multiple = 2**depth
        self.pad_input = pad_input
        channels = level_channels(base_channels, depth)

        def make(cin: int, cout: int) -> nn.Module:
            return _make_block(block, spatial_dims, cin, cout, norm, act, dropout, recurrence)

        self.encoder = build_encoder(make, spatial_dims, in_channels, channels)
        # decoder stages run from the deepest level up to level 0
        self.decoder = nn.ModuleList(
            [
                DecoderStage(
                    up=make_upsample(spatial_dims, channels[i + 1], channels[i], upsample),
                    gate=AttentionGate(spatial_dims, channels[i], channels[i + 1]) if attention else NoGate(),
                    block=make(2 * channels[i], channels[i]),
                )
                for i in reversed(range(depth))
            ]
        )
        self.head = make_head(spatial_dims, channels[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = list(x.shape[2:])
        x = fit_to_multiple(x, self.multiple, self.pad_input)
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        skips.pop()  # the deepest level's output is x itself
        for stage in self.decoder:
            x = stage(x, skips)
        return crop_to(self.head(x), size)


class _ConvUNet(EncoderDecoderUNet):
    """:class:`EncoderDecoderUNet` with double-conv blocks; a subclass's ``_attention`` says if skips are gated."""

    _attention = False

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        base_channels: int = 32,
        depth: int = 4,
        norm: NormSpec = "instance",
        dropout: float = 0.0,
        upsample: str = "deconv",
        act: ActSpec = ("relu", {"inplace": True}),
        pad_input: bool = True,
    ) -> None:
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            base_channels,
            depth,
            norm,
            dropout,
            upsample,
            act,
            block="conv",
            attention=self._attention,
            pad_input=pad_input,
        )


class _RecurrentUNet(EncoderDecoderUNet):
    """:class:`EncoderDecoderUNet` with recurrent residual blocks (``recurrence`` = t); ``_attention`` as above."""

    _attention = False

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        base_channels: int = 32,
        depth: int = 4,
        norm: NormSpec = "instance",
        dropout: float = 0.0,
        upsample: str = "deconv",
        act: ActSpec = ("relu", {"inplace": True}),
        recurrence: int = 2,
        pad_input: bool = True,
    ) -> None:
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            base_channels,
            depth,
            norm,
            dropout,
            upsample,
            act,
            block="recurrent",
            attention=self._attention,
            recurrence=recurrence,
            pad_input=pad_input,
        )


class UNet(_ConvUNet):
    """UNet (Ronneberger et al. 2015): double-conv blocks, max-pooling, skip concatenation.

    Args: see :class:`EncoderDecoderUNet` (without ``block``, ``attention`` and ``recurrence``).
    """


class R2UNet(_RecurrentUNet):
    """R2U-Net (Alom et al. 2018): recurrent residual conv units instead of double convs; ``recurrence`` = t.

    Args: see :class:`EncoderDecoderUNet` (without ``block`` and ``attention``).
    """


class AttentionUNet(_ConvUNet):
    """Attention U-Net (Oktay et al. 2018): UNet whose skips pass through additive attention gates.

    Args: see :class:`EncoderDecoderUNet` (without ``block``, ``attention`` and ``recurrence``).
    """

    _attention = True


class R2AttentionUNet(_RecurrentUNet):
    """R2-Attention U-Net: recurrent residual units and attention-gated skips.

    Args: see :class:`EncoderDecoderUNet` (without ``block`` and ``attention``).
    """

    _attention = True
