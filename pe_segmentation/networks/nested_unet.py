"""Nested UNet (UNet++, Zhou et al. 2018) with optional deep supervision and pruned inference.

Node ``X[i][j]`` sits at level ``i`` (resolution ``1 / 2**i``) and column ``j``. Column 0 is the encoder;
every other node sees all earlier nodes of its level (dense skips) plus the up-sampled node below-left of it::

    X[i][j] = block(cat(X[i][0], ..., X[i][j-1], up(X[i+1][j-1])))

The top row ``X[0][1..depth]`` ends in 1x1 heads. With deep supervision every head is trained, and at
inference the network can be *pruned* to a shallower column ``L`` (``inference_level``): only nodes with
``i + j <= L`` are computed, which trades accuracy for speed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pe_segmentation.networks.blocks import (
    ActSpec,
    ConvBlock,
    NormSpec,
    check_common_args,
    level_channels,
    make_head,
    make_upsample,
)
from pe_segmentation.networks.padding import crop_to, fit_to_multiple
from pe_segmentation.networks.unet import build_encoder


class NestedNode(nn.Module):
    """One UNet++ node: up-sample the node below, concatenate it after the same-level nodes, apply a block."""

    def __init__(self, up: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.up = up
        self.block = block

    def forward(self, below: torch.Tensor, same_level: list[torch.Tensor]) -> torch.Tensor:
        # list concatenation rather than [*same_level, ...]: TorchScript has no starred expressions
        return self.block(torch.cat(same_level + [self.up(below)], dim=1))  # noqa: RUF005


class NestedColumn(nn.ModuleList):
    """Decoder column ``j`` of UNet++: its nodes ``X[0][j+1], X[1][j+1], ...``, one per level, top first.

    A ``ModuleList`` (so checkpoints keep the keys ``columns.<j>.<i>``) whose ``forward`` appends each needed
    node to the table of computed nodes.
    """

    def forward(self, nodes: list[list[torch.Tensor]], j: int, last: int) -> None:
        """Append ``X[i][j+1]`` to ``nodes[i]`` for every level ``i`` with ``i + j + 1 <= last``.

        Args:
            nodes: ``nodes[i]`` holds ``X[i][0], ..., X[i][j]``; grown in place.
            j: this column's index in ``columns`` (its nodes are ``X[.][j+1]``).
            last: the deepest column computed (pruned inference stops early).
        """
        for i, node in enumerate(self):
            if i + j + 1 <= last:
                nodes[i].append(node(nodes[i + 1][j], nodes[i]))


class NestedUNet(nn.Module):
    """UNet++: dense nested skip pathways between a UNet encoder and decoder; returns raw logits.

    Output: in training mode with ``deep_supervision=True`` a list of ``depth`` logit tensors, all at the
    input resolution, ordered from the deepest column (the final output) to the shallowest; otherwise one
    tensor ``(B, out_channels, *spatial)`` from column ``inference_level``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output classes (2 for softmax background/embolus, 1 for sigmoid).
        base_channels: channels of level 0; each deeper level doubles them (default 32 -> 32..512).
        depth: number of 2x down-sampling steps; also the number of decoder columns.
        norm: ``"batch"``, ``"instance"``, ``"group"``, ``"none"`` or a MONAI norm tuple.
        dropout: dropout rate at the end of every block.
        upsample: ``"deconv"``, ``"nontrainable"`` or ``"pixelshuffle"``.
        act: MONAI activation spec.
        deep_supervision: give every top-row node a head and return all of them in training mode.
        inference_level: column (1..depth) whose head is used outside deep-supervised training; columns below
            ``depth`` need ``deep_supervision=True`` (only then are their heads trained). Defaults to
            ``depth``. Can be changed later with :meth:`set_inference_level`.
        pad_input: pad inputs to a multiple of ``2**depth`` and crop back; otherwise such inputs raise.
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
        deep_supervision: bool = False,
        inference_level: int | None = None,
        pad_input: bool = True,
    ) -> None:
        super().__init__()
        check_common_args(
            spatial_dims, in_channels, out_channels, base_channels, depth, norm, dropout, upsample
        )
        self.depth = depth
        self.multiple = 2**depth
        self.pad_input = pad_input
        self.deep_supervision = deep_supervision
        self.inference_level = depth
        self.set_inference_level(depth if inference_level is None else inference_level)

        channels = level_channels(base_channels, depth)

        def block(cin: int, cout: int) -> nn.Module:
            return ConvBlock(spatial_dims, cin, cout, norm=norm, act=act, dropout=dropout)

        self.encoder = build_encoder(block, spatial_dims, in_channels, channels)
        # columns[j - 1][i] is node X[i][j]; X[i][j] concatenates j same-level maps and one up-sampled map
        self.columns = nn.ModuleList(
            [
                NestedColumn(
                    [
                        NestedNode(
                            up=make_upsample(spatial_dims, channels[i + 1], channels[i], upsample),
                            block=block((j + 1) * channels[i], channels[i]),
                        )
                        for i in range(depth - j + 1)
                    ]
                )
                for j in range(1, depth + 1)
            ]
        )
        n_heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList(
            [make_head(spatial_dims, channels[0], out_channels) for _ in range(n_heads)]
        )

    def set_inference_level(self, level: int) -> None:
        """Select the decoder column (1..depth) used outside deep-supervised training; lower is faster."""
        if not isinstance(level, int) or not 1 <= level <= self.depth:
            raise ValueError(f"inference_level must be an integer in 1..{self.depth} (depth), got {level!r}.")
        if level != self.depth and not self.deep_supervision:
            raise ValueError(
                f"inference_level={level} needs deep_supervision=True: without it only the head of column "
                f"{self.depth} is trained."
            )
        self.inference_level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = list(x.shape[2:])
        x = fit_to_multiple(x, self.multiple, self.pad_input)
        all_heads = self.training and self.deep_supervision
        last = self.depth if all_heads else self.inference_level

        # nodes[i] holds X[i][0], X[i][1], ... as they are computed; only nodes with i + j <= last are needed
        nodes: list[list[torch.Tensor]] = []
        for i, stage in enumerate(self.encoder):
            if i <= last:
                x = stage(x)
                nodes.append([x])
        for j, column in enumerate(self.columns):
            column(nodes, j, last)

        outputs: list[torch.Tensor] = []
        if self.deep_supervision:
            for j, head in enumerate(self.heads):
                if all_heads or j + 1 == last:
                    outputs.append(crop_to(head(nodes[0][j + 1]), size))
        else:
            for head in self.heads:
                outputs.append(crop_to(head(nodes[0][last]), size))
        if all_heads:
            outputs.reverse()  # deepest (final) output first
            return outputs
        return outputs[0]
