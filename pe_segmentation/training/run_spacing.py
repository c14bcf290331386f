"""The one spacing a run trains at (:func:`run_spacing`), settled before its transforms are built.

Every network of pe-seg is trained and run at one fixed voxel size. A recipe may give it
(``preprocessing.spacing``); where it gives none (``null``, or a ``null`` axis), the run works it out from its
training cases' headers by the training-set rule of :mod:`pe_segmentation.data.target_spacing` and writes the
numbers into its config, so ``config.yaml``, every checkpoint's config and a bundle's recipe hold them.
Checkpoints also record how the spacing was chosen (:data:`SPACING_KEY`). A resumed run keeps its spacing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pe_segmentation.config import Config, replace_section
from pe_segmentation.data.target_spacing import RULE_NAME, training_set_spacing

log = logging.getLogger("pe_segmentation.training")

#: The checkpoint entry ``{"mm": [x, y, z], "source": ...}``: the spacing and how it was chosen.
SPACING_KEY = "spacing"
#: ``source``: the recipe gave every axis.
FROM_RECIPE = "recipe"
#: ``source``: the recipe gave some axes, the rule the others.
FROM_RECIPE_AND_RULE = f"recipe, null axes by the {RULE_NAME}"


def run_spacing(
    config: Config, train_items: Sequence[Mapping[str, str]], resumed: Mapping[str, Any] | None = None
) -> tuple[Config, dict[str, Any]]:
    """``config`` with a fixed ``preprocessing.spacing``, and the checkpoint entry saying how it was chosen.

    Args:
        config: the run config.
        train_items: the run's training cases (after the split): the rule reads their image headers.
        resumed: the checkpoint a resumed run continues from: its spacing is kept.

    Raises:
        InputDataError: a training case whose header cannot be read (only when the rule is needed).
    """
    kept = _resumed_spacing(config, resumed)
    if kept is not None:
        mm, source = kept
        log.info("spacing %s mm, kept from the resumed run (%s)", _text(mm), source)
    elif config.preprocessing.fixed_spacing is not None:
        mm, source = list(config.preprocessing.fixed_spacing), FROM_RECIPE
        log.info("spacing %s mm, from the recipe (preprocessing.spacing)", _text(mm))
    else:
        given = config.preprocessing.spacing or (None, None, None)
        target = training_set_spacing(train_items)
        mm = [float(t if g is None else g) for g, t in zip(given, target.mm, strict=True)]
        if all(g is None for g in given):
            source = RULE_NAME
            log.info("preprocessing.spacing is null: training at %s", target.describe())
        else:
            source = FROM_RECIPE_AND_RULE
            log.info(
                "training at %s mm: the null axes of preprocessing.spacing from %s",
                _text(mm),
                target.describe(),
            )
    return replace_section(config, "preprocessing", spacing=mm), {"mm": mm, "source": source}


def _resumed_spacing(config: Config, resumed: Mapping[str, Any] | None) -> tuple[list[float], str] | None:
    """The spacing of the run being resumed and its source, or ``None`` (a new run, or an old checkpoint that
    holds none); a config asking for another spacing is warned about and overruled."""
    if resumed is None:
        return None
    saved = (resumed.get("config") or {}).get("preprocessing") or {}
    spacing = saved.get("spacing")
    if spacing is None or None in spacing:
        return None
    mm = [float(v) for v in spacing]
    asked = config.preprocessing.fixed_spacing
    if asked is not None and list(asked) != mm:
        log.warning(
            "resuming keeps the run's spacing %s mm; the config's %s mm is not used (a new run changes it)",
            _text(mm),
            _text(asked),
        )
    record = resumed.get(SPACING_KEY) or {}
    return mm, str(record.get("source", FROM_RECIPE))


def _text(mm: Sequence[float]) -> str:
    return " x ".join(f"{v:g}" for v in mm)
