"""``pe-seg train``: train a network from a YAML recipe, with the original project's flags as overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pe_segmentation.api import dataset_overrides, train, training_config
from pe_segmentation.config import Config
from pe_segmentation.errors import ConfigError

# The original project's flags and the config key each one sets.
LEGACY_FLAGS = {
    "model": "model.name",
    "loss": "loss.name",
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "lr": "optimizer.lr",
    "seed": "training.seed",
    "run_dir": "output.run_dir",
}


def add_config_arguments(parser: argparse.ArgumentParser, set_example: str) -> None:
    """``--config`` and ``--set``: the recipe and its overrides, as every command that reads a training config
    takes them (``pe-seg train``, ``pe-seg preprocess``)."""
    parser.add_argument(
        "--config", "-c", type=Path, help="YAML recipe (configs/*.yaml); defaults when omitted"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config key, e.g. --set {set_example} (repeatable)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a segmentation network from a YAML recipe",
        description="Train a network. Any config key can be overridden with --set SECTION.KEY=VALUE; the flags "
        "below are shortcuts for common keys (and the original project's flags).",
    )
    add_config_arguments(parser, "optimizer.lr=3e-4")
    parser.add_argument("--resume", type=Path, help="continue a run: its folder or one of its checkpoints")
    parser.add_argument("--checkpoint", type=Path, help="start from these weights only (fine-tuning)")
    parser.add_argument("--model", help="network name (model.name)")
    parser.add_argument("--loss", help="loss name (loss.name)")
    parser.add_argument(
        "--dataset", help="datalist JSON, synthetic folder or images/labels folder (data.path)"
    )
    parser.add_argument("--epochs", "--epoch", type=int, help="training.epochs")
    parser.add_argument(
        "--batch-size", "--batch_size", dest="batch_size", type=int, help="training.batch_size"
    )
    parser.add_argument("--lr", type=float, help="optimizer.lr")
    parser.add_argument("--seed", type=int, help="training.seed")
    parser.add_argument("--gpu", help="GPU index (training.device=cuda:N); 'cpu' or -1 for the CPU")
    parser.add_argument("--parallel", action="store_true", help="one DDP process per visible GPU")
    parser.add_argument("--run-dir", "--output", dest="run_dir", help="output.run_dir")
    parser.add_argument(
        "--no-progress", action="store_true", help="plain log lines instead of a progress bar"
    )
    parser.set_defaults(handler=run)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides that the shortcut flags stand for (applied before explicit ``--set``)."""
    overrides = [
        f"{key}={getattr(args, flag)}"
        for flag, key in LEGACY_FLAGS.items()
        if getattr(args, flag) is not None
    ]
    if args.dataset is not None:
        overrides += dataset_overrides(args.dataset)
    if args.gpu is not None:
        gpu = str(args.gpu).strip().lower()
        if gpu in ("cpu", "-1"):
            overrides.append("training.device=cpu")
        elif gpu.isdigit():
            overrides.append(f"training.device=cuda:{gpu}")
        else:
            raise ConfigError(f"--gpu {args.gpu!r}: expected a GPU index such as 0, or cpu")
    if args.parallel:
        overrides.append("training.distributed=true")
    return overrides


def config_from_args(args: argparse.Namespace) -> Config:
    """The run's config: the recipe (or, for ``--resume`` without ``--config``, the run's saved config), then the
    shortcut flags, then ``--set`` overrides (last wins)."""
    return training_config(args.config, [*flag_overrides(args), *args.overrides], args.resume)


def run(args: argparse.Namespace) -> int:
    """Handler of ``pe-seg train``: :func:`pe_segmentation.train` with the config of the flags."""
    train(
        config_from_args(args),
        resume=args.resume,
        init_weights=args.checkpoint,
        progress=not args.no_progress and not args.quiet and sys.stderr.isatty(),
    )
    return 0
