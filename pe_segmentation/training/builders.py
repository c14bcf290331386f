"""The parts of a run built from its config: the network, the loss, the optimizer, and the seeding and memory
layout they start from."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pe_segmentation.config import Config
from pe_segmentation.losses import DeepSupervisionLoss, build_loss
from pe_segmentation.networks import build_network
from pe_segmentation.runtime.memory_format import channels_last_format


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA).

    Not MONAI's ``set_determinism``: it also forces ``cudnn.deterministic`` and turns off cuDNN's autotuner,
    which slows 3D convolutions on GPUs; the CPU repeatability pe-seg promises needs only the seeds.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(config: Config) -> nn.Module:
    """The network of ``config.model`` (random weights)."""
    return build_network(config.model.name, **dict(config.model.params))


def build_loss_function(config: Config) -> nn.Module:
    """The loss of ``config.loss``, wrapped for deep supervision when the loss or the network asks for it."""
    loss = build_loss(config.loss.name, **dict(config.loss.params))
    if config.loss.deep_supervision or config.model.params.get("deep_supervision"):
        return DeepSupervisionLoss(loss)
    return loss


def build_optimizer(config: Config, parameters: Any) -> torch.optim.Optimizer:
    """Adam (betas from the config, 0.9/0.999 by default, as the original project), AdamW, or SGD with
    Nesterov momentum (``optimizer.momentum``, 0.99 by default as nnU-Net)."""
    opt = config.optimizer
    if opt.name == "adam":
        return torch.optim.Adam(parameters, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
    if opt.name == "adamw":
        return torch.optim.AdamW(parameters, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
    return torch.optim.SGD(
        parameters, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=opt.momentum > 0
    )


def memory_format_of(config: Config) -> torch.memory_format | None:
    """The memory format of network inputs and weights: channels-last when ``training.channels_last``, else
    ``None`` (torch's default)."""
    return channels_last_format(config.patch.spatial_dims, config.training.channels_last)
