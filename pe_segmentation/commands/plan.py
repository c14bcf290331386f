"""``pe-seg plan``: fingerprint a data set and write the training recipe planned from it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pe_segmentation.api import plan


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``plan`` sub-command to ``pe-seg``'s sub-parsers."""
    parser = subparsers.add_parser(
        "plan",
        help="fingerprint a data set and plan a training recipe for a GPU or the CPU",
        description=(
            "Read every case of a datalist once and write OUTPUT/fingerprint.json and fingerprint.png "
            "(spacings, shapes, HU inside the labels, emboli per case and their sizes, cases without emboli, "
            "anything odd) and OUTPUT/plan.yaml, a recipe for pe-seg train --config: target spacing, CT "
            "normalisation from the labelled voxels, patch and batch size for the GPU memory named (or the "
            "CPU), a residual DynUNet's depth and width, deep supervision. The rules are nnU-Net v2's; "
            "docs/planning.md compares them."
        ),
    )
    parser.add_argument(
        "--dataset", required=True, type=Path, help="MSD-style datalist JSON, or a pe-seg synth folder"
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--gpu-memory",
        type=float,
        metavar="GB",
        help="plan for a GPU with this much memory (GB as nvidia-smi shows); default: this machine's GPU",
    )
    target.add_argument("--cpu", action="store_true", help="plan for training on the CPU")
    parser.add_argument(
        "--output", "-o", type=Path, default=Path("plan"), help="folder for the three files (default: plan)"
    )
    parser.add_argument("--image-key", default="image", help="datalist entry of the image (e.g. 'dicom')")
    parser.add_argument("--seed", type=int, default=0, help="seeds the labelled voxels sampled (default: 0)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handler of ``pe-seg plan``: :func:`pe_segmentation.plan` with the flags."""
    plan(
        args.dataset,
        args.output,
        gpu_memory=args.gpu_memory,
        cpu=args.cpu,
        image_key=args.image_key,
        seed=args.seed,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    return 0
