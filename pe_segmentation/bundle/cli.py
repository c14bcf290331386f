"""``python -m pe_segmentation.bundle export CHECKPOINT BUNDLE_DIR`` / ``check BUNDLE_DIR``: build and check a
bundle's weights and metadata (``scripts/bundle_weights.sh`` / ``make bundle-weights`` call ``export``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pe_segmentation.bundle.metadata import check_metadata, model_problems
from pe_segmentation.bundle.weights import export_weights
from pe_segmentation.config import Config
from pe_segmentation.errors import CheckpointError, ConfigError, InputDataError
from pe_segmentation.inference.bundle_folder import METADATA_FILE, MODEL_FILE, RECIPE_FILE
from pe_segmentation.runtime import load_checkpoint


def _export_command(args: argparse.Namespace) -> int:
    root = Path(args.bundle)
    model = root / MODEL_FILE
    export_weights(args.checkpoint, model, root / RECIPE_FILE)
    config = Config.from_dict(load_checkpoint(model)["config"])
    metadata = json.loads((root / METADATA_FILE).read_text(encoding="utf-8"))
    problems = check_metadata(metadata) + model_problems(metadata, config)
    size = model.stat().st_size / 2**20
    print(f"wrote {model} ({size:.1f} MiB, {config.model.name}) and {root / RECIPE_FILE}")
    for line in problems:
        print(f"error: {root / METADATA_FILE}: {line}", file=sys.stderr)
    return 4 if problems else 0


def _check_command(args: argparse.Namespace) -> int:
    root = Path(args.bundle)
    metadata = json.loads((root / METADATA_FILE).read_text(encoding="utf-8"))
    problems = check_metadata(metadata)
    if (root / MODEL_FILE).is_file():
        problems += model_problems(metadata, Config.from_dict(load_checkpoint(root / MODEL_FILE)["config"]))
    for line in problems:
        print(f"error: {root / METADATA_FILE}: {line}", file=sys.stderr)
    if not problems:
        print(f"{root}: metadata has every mandatory field and fits the weights")
    return 4 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pe_segmentation.bundle export CHECKPOINT BUNDLE_DIR`` / ``check BUNDLE_DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m pe_segmentation.bundle", description="Build and check pe-seg's MONAI bundle."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="write BUNDLE/models/model.pt and configs/recipe.yaml from a run"
    )
    export.add_argument("checkpoint", help="a pe-seg training checkpoint (e.g. runs/x/checkpoints/best.pt)")
    export.add_argument("bundle", help="the bundle folder (bundles/pe_segmentation)")
    export.set_defaults(handler=_export_command)
    check = commands.add_parser(
        "check", help="check BUNDLE/configs/metadata.json (mandatory fields, weights)"
    )
    check.add_argument("bundle", help="the bundle folder")
    check.set_defaults(handler=_check_command)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (ConfigError, CheckpointError, InputDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
