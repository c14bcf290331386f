"""The data of one process of a run: the cases of ``config.data``, their train/validation split (kept as
``split.json`` in the run folder), the run's one spacing (:mod:`~pe_segmentation.training.run_spacing`, worked
out from the training cases where the recipe gives none) and this process's share of the cases
(:func:`load_run_data`).

The split is made once, by rank 0, and read back by the other ranks, so every process of a DDP run splits the
cases alike; a resumed or repeated run reuses it. With ``data.cache: store`` the cases are put into the
preprocessed store before the loaders are built (:func:`fill_run_store`), unless ``pe-seg preprocess`` did.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.data import DataLoader

from pe_segmentation.config import Config
from pe_segmentation.data.splits import Split, get_or_create_split, load_split
from pe_segmentation.data.store import FillReport, fill_store
from pe_segmentation.errors import ConfigError
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.runtime import distributed as ddp
from pe_segmentation.training.data import (
    PatchBatches,
    build_train_batches,
    build_val_loader,
    load_cases,
    open_store,
)
from pe_segmentation.training.run_spacing import run_spacing

log = logging.getLogger("pe_segmentation.training")


@dataclass(frozen=True)
class RunData:
    """What one process trains and validates on.

    Attributes:
        train_data: the training patch batches of this process.
        val_loader: its whole validation volumes, ``None`` without validation cases.
        config: the run config with its spacing fixed (what the transforms were built with).
        spacing: the checkpoint entry saying how that spacing was chosen (``{"mm", "source"}``).
    """

    train_data: PatchBatches
    val_loader: DataLoader | None
    config: Config
    spacing: dict[str, Any]


def load_run_data(
    config: Config,
    run_dir: Path,
    context: ddp.DistributedContext,
    pin_memory: bool,
    resumed: Mapping[str, Any] | None = None,
) -> RunData:
    """Load the cases, split them (:func:`_split`), fix the run's spacing (from ``resumed``, the checkpoint a
    resumed run continues from, the recipe or the training cases) and build this process's training batches
    and validation loader (disk cache and converted FUMPE masks under ``<run_dir>/cache``).

    Raises:
        ConfigError: no data path, or no training case left after the split.
        InputDataError: unreadable cases.
    """
    cache_dir = run_dir / "cache"
    config, spacing, train_items, val_items = load_run_cases(config, run_dir, context, resumed)
    if config.data.cache == "store":
        fill_run_store(config, [*train_items, *val_items], cache_dir, context)
    rank, world_size = context.rank, context.world_size
    train_data = build_train_batches(config, train_items, cache_dir, rank, world_size, pin_memory)
    val_loader = (
        build_val_loader(config, val_items, cache_dir, rank, world_size, pin_memory) if val_items else None
    )
    log.info(
        "%d training / %d validation cases; %d iterations per epoch of %d patches",
        len(train_items),
        len(val_items),
        len(train_data),
        config.training.batch_size,
    )
    return RunData(train_data, val_loader, config, spacing)


def load_run_cases(
    config: Config,
    run_dir: Path,
    context: ddp.DistributedContext,
    resumed: Mapping[str, Any] | None = None,
) -> tuple[Config, dict[str, Any], list[dict[str, str]], list[dict[str, str]]]:
    """The run's cases, split (:func:`_split`), and its config with the spacing fixed
    (:func:`~pe_segmentation.training.run_spacing.run_spacing`): ``(config, spacing entry, training cases,
    validation cases)``. What a run and ``pe-seg preprocess`` both start from.

    Raises:
        ConfigError: no data path, or no training case left after the split.
        InputDataError: unreadable cases.
    """
    items = load_cases(config.data, run_dir / "cache")
    split = _split(config, items, run_dir, context)
    train_items, val_items = split.select(items) if split is not None else (items, [])
    if not train_items:
        raise ConfigError("no training cases left after the train/validation split")
    config, spacing = run_spacing(config, train_items, resumed)
    return config, spacing, train_items, val_items


def fill_run_store(
    config: Config,
    items: Sequence[Mapping[str, Any]],
    cache_dir: Path,
    context: ddp.DistributedContext,
    progress: bool = True,
) -> FillReport:
    """Put every case of ``items`` into the run's preprocessed store (:func:`open_store`) unless it is there.

    Each process preprocesses its share (every ``world_size``-th case, ``data.num_workers`` at a time) into the
    shared store; after all have, each fills in whatever it still cannot see, which happens only when
    ``data.store_dir`` is not shared between the machines of a multi-node run (each machine then preprocesses
    every case). Returns this process's report.
    """
    store = open_store(config, cache_dir)
    rank, world = context.rank, context.world_size
    workers = config.data.num_workers
    own = fill_store(store, list(items)[rank::world], workers, progress=progress and context.is_main)
    ddp.barrier()
    rest = fill_store(store, items, workers, progress=progress and context.is_main)
    if rest.written and context.distributed:
        log.warning(
            "%s: %d case(s) written by other processes were not there: is data.store_dir on a file system "
            "that all machines share?",
            store.folder,
            rest.written,
        )
    written = own.written + rest.written
    log.info("preprocessed store %s: %d of %d case(s) preprocessed now", store.folder, written, len(items))
    return FillReport(written, len(items) - written, own.seconds + rest.seconds)


def _split(
    config: Config, items: list[dict[str, str]], run_dir: Path, context: ddp.DistributedContext
) -> Split | None:
    """The train/validation split of the run (``None``: ``data.val_fraction`` 0, all cases train).

    Rank 0 reads ``data.split_file`` (or the run's ``split.json``) or creates it, seeded with ``training.seed``;
    the other ranks wait for it and read it; a ``data.split_file`` is copied to the run's ``split.json``.
    """
    if config.data.val_fraction == 0:
        log.warning(
            "data.val_fraction is 0: training on all %d cases without validation (no best.pt)", len(items)
        )
        return None
    path = Path(config.data.split_file).expanduser() if config.data.split_file else run_dir / "split.json"
    if context.is_main:
        split = get_or_create_split(path, items, config.data.val_fraction, config.training.seed)
    ddp.barrier()
    if not context.is_main:
        split = load_split(path)
    if context.is_main and path != run_dir / "split.json":
        atomic_write_text(run_dir / "split.json", path.read_text(encoding="utf-8"))
    return split
