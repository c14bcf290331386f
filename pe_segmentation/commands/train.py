"""``pe-seg train``: train a network from a YAML recipe, with the original project's flags as overrides."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from pe_segmentation.config import Config, load_config
from pe_segmentation.errors import ConfigError, user_error

log = logging.getLogger(__name__)

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a segmentation network from a YAML recipe",
        description="Train a network. Any config key can be overridden with --set SECTION.KEY=VALUE; the flags "
        "below are shortcuts for common keys (and the original project's flags).",
    )
    parser.add_argument(
        "--config", "-c", type=Path, help="YAML recipe (configs/*.yaml); defaults when omitted"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set optimizer.lr=3e-4 (repeatable)",
    )
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


def dataset_overrides(path: str) -> list[str]:
    """``--dataset PATH``: the path, and its layout guessed from what it is (``data.dataset`` can still be set)."""
    candidate = Path(path)
    if candidate.suffix.lower() == ".json":
        kind = "datalist"
    elif (candidate / "datalist.json").is_file():
        kind = "synthetic"
    else:
        kind = "folder"
    return [f"data.path={path}", f"data.dataset={kind}"]


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
    overrides = [*flag_overrides(args), *args.overrides]
    if args.config is None and args.resume is not None:
        from pe_segmentation.config import apply_overrides
        from pe_segmentation.training import resume_config

        return Config.from_dict(apply_overrides(resume_config(args.resume).to_dict(), overrides))
    return load_config(args.config, overrides)


@contextlib.contextmanager
def _no_leftover_run_folder(run_dir: Path | None) -> Iterator[None]:
    """Remove ``run_dir`` if this run created it and fails with a user error before its first checkpoint.

    A run refused for its data, config or checkpoint then leaves nothing that looks like a run; a run that
    wrote a checkpoint is kept (it can be resumed), and so is any folder that existed before.
    """
    created = run_dir is not None and not run_dir.exists()
    try:
        yield
    except Exception as err:  # user errors only, also when MONAI wrapped them (a transform refusing a label)
        refused = user_error(err) is not None
        if refused and created and run_dir is not None and not (run_dir / "checkpoints" / "last.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def run(args: argparse.Namespace) -> int:
    from pe_segmentation.training import run_training

    config = config_from_args(args)
    new_folder = None if args.resume is not None else Path(config.output.run_dir).expanduser()
    with _no_leftover_run_folder(new_folder):
        result = run_training(
            config,
            resume=args.resume,
            init_weights=args.checkpoint,
            progress=not args.no_progress and not args.quiet and sys.stderr.isatty(),
        )
    if result is not None:  # None on non-zero ranks of a distributed run
        log.info("run folder: %s", result.run_dir)
        if result.best_dice is not None:
            log.info("best validation Dice %.4f at epoch %d", result.best_dice, result.best_epoch)
    return 0
