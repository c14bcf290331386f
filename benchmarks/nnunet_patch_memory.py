"""Time and memory of one forward of the published PE plan's network at a given patch (issue 19).

The published nnU-Net PE model is a residual-encoder U-Net (ResEnc M: 7 stages, 32..320 features, 1/3/4/6/6/6/6
blocks) run at a 224 x 320 x 320 patch. Instance normalisation makes its output depend on the tile, so it must
run at that patch: this script says what one such tile costs (random weights, built by nnU-Net's own builder),
in fp32 as nnU-Net runs it on a CPU and under bf16 autocast as ``pe-seg infer --nnunet`` does, each in its own
process (so that the peak resident memory is that forward's), and prints the ratio:

    .venv/bin/python benchmarks/nnunet_patch_memory.py --patch 128 128 128
    .venv/bin/python benchmarks/nnunet_patch_memory.py --precision bf16 --patch 224 320 320   # one precision

Needs pe-seg's ``nnunet`` extra (``make setup-nnunet``).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "inference"))

import nnunet_models  # the nnU-Net model folders of the tests

#: The published plan's stride per stage (patch 224 x 320 x 320 -> 7 x 5 x 5 at the bottom) and ResEnc M's blocks.
STRIDES = [[1, 1, 1]] + [[2, 2, 2]] * 5 + [[1, 2, 2]]
BLOCKS = [1, 3, 4, 6, 6, 6, 6]


def peak_gib() -> float:
    """The process's peak resident memory so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=("both", "fp32", "bf16"), default="both")
    parser.add_argument("--patch", type=int, nargs=3, default=(224, 320, 320), help="z y x, the plan's order")
    args = parser.parse_args()
    if args.precision == "both":
        seconds = {}
        for precision in ("fp32", "bf16"):
            command = [sys.executable, __file__, "--precision", precision, "--patch", *map(str, args.patch)]
            printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
            print(printed, flush=True)
            seconds[precision] = float(printed.split(" forward ")[1].split(" s,")[0])
        print(f"bf16 is {seconds['fp32'] / seconds['bf16']:.2f}x faster than fp32 per tile")
        return
    plans = nnunet_models.plans("resenc", (1.0, 0.74, 0.74), tuple(args.patch), stages=7, features=32)
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch["strides"], arch["n_blocks_per_stage"] = STRIDES, BLOCKS
    network = nnunet_models.build_network(plans, nnunet_models.dataset(), seed=0).eval()
    network = network.to(memory_format=torch.channels_last_3d)
    parameters = sum(p.numel() for p in network.parameters()) / 1e6
    tile = torch.zeros((1, 1, *args.patch)).to(memory_format=torch.channels_last_3d)
    before = peak_gib()
    start = time.perf_counter()
    with (
        torch.inference_mode(),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"),
    ):
        network(tile)
    seconds = time.perf_counter() - start
    print(
        f"ResEnc {parameters:.0f} M parameters, patch {tuple(args.patch)}, {args.precision}: forward "
        f"{seconds:.1f} s, peak resident memory {peak_gib():.2f} GiB ({peak_gib() - before:.2f} GiB above the "
        f"{before:.2f} GiB before the forward)"
    )


if __name__ == "__main__":
    main()
