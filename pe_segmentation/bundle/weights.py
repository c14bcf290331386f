"""A bundle's ``models/model.pt`` and ``configs/recipe.yaml`` from a training checkpoint: the network weights and
the resolved config they were trained with, made portable (no machine-specific paths, no optimizer state)."""

from __future__ import annotations

import os
from pathlib import Path

from pe_segmentation.config import Config, OutputConfig, config_to_yaml, replace_section
from pe_segmentation.errors import CheckpointError
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.runtime import load_checkpoint, save_checkpoint, saved_config


def portable_config(config: Config) -> Config:
    """``config`` without the machine-specific paths of the run that used it (data path, split file, run
    folder), as a bundle ships it."""
    config = replace_section(config, "data", path=None, split_file=None)
    return replace_section(config, "output", run_dir=OutputConfig.run_dir)


def export_weights(
    checkpoint: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    recipe: str | os.PathLike[str] | None = None,
    config: Config | None = None,
) -> Path:
    """Write a bundle's ``model.pt`` from a training checkpoint: the network weights and the resolved config
    they were trained with (made portable), no optimizer or RNG state; optionally the same config as a recipe.

    The file is a pe-seg checkpoint (``kind: bundle``), so ``Predictor.from_checkpoint``,
    ``pe-seg infer --checkpoint`` and fine-tuning (``pe-seg train --checkpoint``) read it, and MONAI's
    ``ckpt_export`` takes its weights with ``--key_in_ckpt model``.

    Args:
        checkpoint: a pe-seg training checkpoint (``best.pt``, ``last.pt``) or a bundle's ``model.pt``.
        destination: the ``model.pt`` to write (atomically).
        recipe: also write the config as a pe-seg recipe YAML here (the bundle's ``configs/recipe.yaml``).
        config: the config to record instead of the checkpoint's (the bundle trainer's, whose data section
            names the data set's layout rather than the run's case list); its network must be the checkpoint's,
            and its spacing becomes the checkpoint's (the one the weights were trained at).

    Raises:
        CheckpointError: the checkpoint is unreadable, holds no valid config or one without a fixed spacing, or
            ``config`` names another network.
    """
    source = load_checkpoint(checkpoint)
    trained = saved_config(source, checkpoint, "a bundle needs the config of its weights")
    if config is not None and config.model != trained.model:
        raise CheckpointError(f"{checkpoint}: holds a {trained.model.name} network other than the config's")
    spacing = trained.preprocessing.fixed_spacing
    if spacing is None:
        raise CheckpointError(
            f"{checkpoint}: its config has no fixed spacing, so a bundle could not run it; record the spacing "
            f"it was trained at first: `pe-seg checkpoint set-spacing {checkpoint} --spacing SX SY SZ --output "
            "NEW.pt`"
        )
    # the spacing the weights were trained at, also where the given config (a recipe) leaves it null
    config = replace_section(config or trained, "preprocessing", spacing=list(spacing))
    config = portable_config(config)
    trainer = source.get("trainer") or {}
    payload = {
        "kind": "bundle",
        "model": source["model"],
        "config": config.to_dict(),
        "trainer": {
            key: trainer[key] for key in ("epoch", "iteration", "best_dice", "best_epoch") if key in trainer
        },
        "metrics": source.get("metrics") or {},
        "source": {"file": Path(checkpoint).name, "kind": source.get("kind")},
        "spacing": source.get("spacing") or {"mm": list(spacing), "source": "recipe"},
    }
    for key in ("versions", "saved_at"):  # the training run's, not this export's
        if key in source:
            payload[key] = source[key]
    path = save_checkpoint(destination, payload)
    if recipe is not None:
        _write_recipe(recipe, config)
    return path


def _write_recipe(path: str | os.PathLike[str], config: Config) -> None:
    """Write ``config`` as the bundle's recipe YAML (atomically), with a header that says what it is."""
    header = (
        "# The pe-seg recipe of models/model.pt (its resolved training config), written with the weights by\n"
        "# `python -m pe_segmentation.bundle export`; configs/train.yaml retrains it. Edit with care: the\n"
        "# weights in models/ were trained with exactly these settings.\n"
    )
    atomic_write_text(path, header + config_to_yaml(config))
