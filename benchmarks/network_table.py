"""Print a Markdown table of every registered network's parameters and GFLOPs at reference input sizes.

    .venv/bin/python benchmarks/network_table.py [--size-3d 96] [--size-2d 512]

Each network is built with its registry defaults (1 input channel, 2 classes) for ``spatial_dims=3`` and
``spatial_dims=2``. FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one forward pass of
batch 1 in eval mode; it counts convolutions, transposed convolutions and matrix products (one
multiply-accumulate = 2 FLOPs), not normalisation, activation or interpolation, which are memory-bound and
small in FLOP terms. Networks are built on PyTorch's ``meta`` device, so nothing is computed; networks that
cannot run on ``meta`` (SwinUNETR reads a tensor value while building its attention mask) run on the CPU.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from pe_segmentation.networks import NETWORKS, available_networks, build_network


def count(name: str, spatial_dims: int, size: int) -> tuple[int, float]:
    """Parameters and forward GFLOPs of network ``name`` on a ``size``-edged input of batch 1."""

    def measure(device: str) -> tuple[int, float]:
        with torch.device(device):
            net: nn.Module = build_network(name, spatial_dims=spatial_dims).eval()
            x = torch.zeros(1, 1, *([size] * spatial_dims))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(x)
        return sum(p.numel() for p in net.parameters()), counter.get_total_flops() / 1e9

    try:
        return measure("meta")
    except (RuntimeError, NotImplementedError):
        return measure("cpu")


def _input_multiple(name: str) -> str:
    net = build_network(name, spatial_dims=2)
    return str(getattr(net, "multiple", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-3d", type=int, default=96, help="cubic 3D patch edge (default 96)")
    parser.add_argument("--size-2d", type=int, default=512, help="square 2D slice edge (default 512)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_grad_enabled(False)

    s3, s2 = args.size_3d, args.size_2d
    header = [
        "network",
        "description",
        "pads to",
        "3D params (M)",
        f"3D GFLOPs @ {s3}^3",
        "2D params (M)",
        f"2D GFLOPs @ {s2}^2",
    ]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in available_networks():
        p3, f3 = count(name, 3, s3)
        p2, f2 = count(name, 2, s2)
        cells = [
            f"`{name}`",
            NETWORKS[name].description,
            _input_multiple(name),
            f"{p3 / 1e6:.2f}",
            f"{f3:.1f}",
            f"{p2 / 1e6:.2f}",
            f"{f2:.1f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
