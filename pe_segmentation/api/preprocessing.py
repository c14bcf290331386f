"""``preprocess``: a run's cases preprocessed once into the preprocessed store, what ``pe-seg preprocess`` does."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from pe_segmentation.api.training import training_config
from pe_segmentation.config import Config, apply_overrides, replace_section
from pe_segmentation.training import PreprocessResult, preprocess_cases

log = logging.getLogger(__name__)


def preprocess(
    config: Config | str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    progress: bool = False,
) -> PreprocessResult:
    """Preprocess the cases of a training config into its store (``data.store_dir``, default
    ``<run_dir>/cache/store``), so that ``pe-seg train`` with the same config reads patches from it at once.

    Whatever ``data.cache`` the config names, the store is written (``pe-seg train`` reads it with
    ``data.cache: store``). Cases already stored with the same preprocessing and unchanged input files are
    kept; ``data.num_workers`` processes preprocess cases side by side.

    Args:
        config: a :class:`~pe_segmentation.config.Config` or a recipe YAML; ``None``: the defaults.
        overrides: ``SECTION.KEY=VALUE`` overrides applied on top.
        progress: a progress bar.

    Returns:
        The store folder, counts, per-case seconds and sizes.

    Raises:
        ConfigError, InputDataError, OutputError: the one-line reason the cases cannot be preprocessed.
    """
    if isinstance(config, Config):
        if overrides:
            config = Config.from_dict(apply_overrides(config.to_dict(), list(overrides)))
    else:
        config = training_config(config, overrides)
    result = preprocess_cases(replace_section(config, "data", cache="store"), progress=progress)
    seconds = sorted(result.seconds)
    median = seconds[len(seconds) // 2] if seconds else 0.0
    log.info(
        "%d case(s) in %s: %d preprocessed now (median %.1f s each), %d already there; %.2f GB against "
        "%.2f GB of input files",
        result.cases,
        result.store,
        result.written,
        median,
        result.reused,
        result.store_bytes / 1e9,
        result.source_bytes / 1e9,
    )
    return result
