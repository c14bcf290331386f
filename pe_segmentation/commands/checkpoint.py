"""``pe-seg checkpoint``: work on a checkpoint file; ``set-spacing`` records the spacing a network was trained
at in a checkpoint saved without one (:func:`~pe_segmentation.api.set_checkpoint_spacing`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pe_segmentation.api import set_checkpoint_spacing

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("checkpoint", help="work on a checkpoint file (set-spacing)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    spacing = actions.add_parser(
        "set-spacing",
        help="write a copy of a checkpoint that records the spacing its network was trained at",
        description="A checkpoint saved with preprocessing.spacing null (before every model had one spacing) "
        "is refused by pe-seg infer. This writes a NEW checkpoint whose config holds the spacing the network "
        "was trained at (for a run with a null spacing, its training cases' spacing; the demo's phantoms: "
        "2.24 2.24 2.5). The old file is left as it is.",
    )
    spacing.add_argument("checkpoint", type=Path, help="the checkpoint (.pt) without a spacing")
    spacing.add_argument(
        "--spacing",
        required=True,
        type=float,
        nargs=3,
        metavar=("SX", "SY", "SZ"),
        help="voxel size in mm along R, A, S that the network was trained at",
    )
    spacing.add_argument(
        "--output", "-o", required=True, type=Path, help="the new checkpoint (must not exist)"
    )
    spacing.set_defaults(handler=run_set_spacing)


def run_set_spacing(args: argparse.Namespace) -> int:
    output = set_checkpoint_spacing(args.checkpoint, args.spacing, args.output)
    log.info("wrote %s (spacing %s mm)", output, " x ".join(f"{v:g}" for v in args.spacing))
    return 0
