"""``set_checkpoint_spacing``: a checkpoint saved without a fixed spacing, given the spacing its network was
trained at, as a new file (what ``pe-seg checkpoint set-spacing`` runs).

Every model runs at the one spacing it was trained at, read from its checkpoint's config. Checkpoints saved
before that rule (``preprocessing.spacing: null``, the network run at each input's own spacing) are refused
by the predictor; this records their spacing without retraining. The old file is only read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from pe_segmentation.config import replace_section
from pe_segmentation.errors import CheckpointError, ConfigError, OutputError
from pe_segmentation.runtime import load_checkpoint, save_checkpoint, saved_config

#: The ``source`` of the checkpoint's ``spacing`` entry when it was recorded by hand.
SET_BY_HAND = "set by hand (pe-seg checkpoint set-spacing)"


def set_checkpoint_spacing(
    checkpoint: str | os.PathLike[str], spacing: Sequence[float], output: str | os.PathLike[str]
) -> Path:
    """Write ``output``: ``checkpoint`` with ``preprocessing.spacing`` set to ``spacing`` (atomically).

    Args:
        checkpoint: a pe-seg checkpoint (training checkpoint or a bundle's ``model.pt``); never modified.
        spacing: the voxel size (mm, along R, A, S) the network was trained at: for a run with a null
            spacing, the spacing of its training cases (the demo's phantoms: 2.24 2.24 2.5).
        output: the new checkpoint; must not exist yet.

    Returns:
        ``output``.

    Raises:
        ConfigError: ``spacing`` is not 3 positive numbers.
        OutputError: ``output`` exists (the checkpoint itself included).
        CheckpointError: ``checkpoint`` is unreadable, holds no valid config, or already records another
            spacing (a network runs at the spacing it was trained at; that cannot be changed afterwards).
    """
    source, target = Path(checkpoint).expanduser(), Path(output).expanduser()
    mm = _checked_spacing(spacing)
    if target.exists():
        raise OutputError(f"{target}: already exists; give a new file for the checkpoint with its spacing")
    data = load_checkpoint(source)
    config = saved_config(data, source, "so no spacing to set")
    recorded = config.preprocessing.spacing or (None, None, None)
    if any(old is not None and not math.isclose(old, new) for old, new in zip(recorded, mm, strict=True)):
        raise CheckpointError(
            f"{source}: already records the spacing {list(recorded)} mm, the one its network was trained at; "
            "it is not changed"
        )
    config = replace_section(config, "preprocessing", spacing=mm)
    payload = {key: value for key, value in data.items() if key not in ("format", "format_version")}
    payload["config"] = config.to_dict()
    payload["spacing"] = {"mm": mm, "source": SET_BY_HAND}
    return save_checkpoint(target, payload)


def _checked_spacing(spacing: Sequence[float]) -> list[float]:
    values = [float(v) for v in spacing]
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"spacing: expected 3 positive numbers (mm along R, A, S), got {list(spacing)}")
    return values
