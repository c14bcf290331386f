"""How much memory a network's training step needs: its activations, traced rather than guessed.

nnU-Net estimates a network's GPU memory from the sizes of its convolutions' feature maps, scaled by a
reference value hand-tuned on a known GPU. pe-seg measures instead: it runs the network's forward pass on
PyTorch's ``meta`` device (shapes only: no memory, no arithmetic, milliseconds) and adds up the storages
autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``), each once. Those saved
activations are what grows with the patch and the batch; the weights are counted apart, with their gradients
and the optimizer's state. The trace fits any network of the registry, residual blocks and deep-supervision
heads included.

The backward pass needs more than what was saved (the gradients of the activations, the operations'
buffers): :data:`PEAK_FACTOR`, measured on this machine's CPU with MONAI's residual DynUNet (depth 3, deep
supervision, batch 2, float32): a forward and backward pass raised the process's peak memory by 2.08 GiB
over 1.54 GiB traced (width 16, 96^3), and by 1.20 GiB over 0.91 GiB (width 32, 64^3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pe_segmentation.networks import build_network

#: The peak of a training step over its traced saved activations (measured, see the module docstring).
PEAK_FACTOR = 1.35
#: Bytes per value of the activations under mixed precision (fp16/bf16 autocast, pe-seg's default on GPUs):
#: convolutions and their normalisations save half-precision tensors, half the traced float32 bytes.
MIXED_PRECISION_FACTOR = 0.5
#: Bytes per parameter during training: the float32 weights, their gradients and two optimizer moments (Adam;
#: SGD with momentum keeps one).
BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class NetworkMemory:
    """The memory of one network at one depth: what each patch voxel costs, and the weights.

    Attributes:
        activation_bytes_per_voxel: float32 bytes autograd saves per voxel of one patch (linear in the voxel
            count once the patch divides by the network's total stride: 0.01% apart between 64^3 and 256^3).
        parameters: how many weights the network has.
    """

    activation_bytes_per_voxel: float
    parameters: int

    def activations(self, patch: Sequence[int], batch: int, mixed_precision: bool = True) -> float:
        """Peak bytes of the activations of a training step over ``batch`` patches of ``patch`` voxels (the
        saved activations times :data:`PEAK_FACTOR`, halved under mixed precision)."""
        factor = PEAK_FACTOR * (MIXED_PRECISION_FACTOR if mixed_precision else 1.0)
        return self.activation_bytes_per_voxel * math.prod(patch) * batch * factor

    @property
    def parameter_bytes(self) -> int:
        """Bytes of the weights, their gradients and the optimizer's state."""
        return self.parameters * BYTES_PER_PARAMETER


def saved_activation_bytes(network: torch.nn.Module, input_shape: Sequence[int]) -> int:
    """Bytes of the tensors autograd saves in one training-mode forward pass of ``input_shape``, weights
    excluded. Each storage counts once, however many operations save it (a convolution saves its input, which
    is also the output the activation before it saved). Runs on whatever device ``network`` is on (``meta``:
    no memory, no arithmetic)."""
    device = next(network.parameters()).device
    weights = {p.untyped_storage()._cdata for p in network.parameters()}
    storages: dict[int, int] = {}
    kept: list[torch.Tensor] = []  # alive until the end, so that no storage's address is reused meanwhile

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in weights:
            storages[storage._cdata] = storage.nbytes()
            kept.append(tensor)
        return tensor

    network.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        network(torch.zeros(tuple(input_shape), device=device))
    kept.clear()
    return sum(storages.values())


def network_memory(name: str, params: Mapping[str, Any], multiple: int) -> NetworkMemory:
    """The memory figures of registered network ``name`` with ``params``, traced on the meta device.

    Args:
        name: a registry name (:func:`~pe_segmentation.networks.build_network`).
        params: its parameters.
        multiple: the network's total stride; the trace runs on a cube of ``4 * multiple`` voxels a side,
            so that the deepest level still has more than one voxel per axis (instance norm needs it).
    """
    with torch.device("meta"):
        network = build_network(name, **dict(params))
    side = 4 * int(multiple)
    in_channels = int(params.get("in_channels", 1))
    saved = saved_activation_bytes(network, (1, in_channels, side, side, side))
    return NetworkMemory(saved / side**3, sum(p.numel() for p in network.parameters()))
