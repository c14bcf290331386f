"""Data of a training run: the cases of ``config.data``, the training patch stream and the validation volumes.

Training: every epoch each process draws its share of the training volumes (a ``DistributedSampler``,
shuffled with ``training.seed + epoch``; one process takes all), each volume yields
``patch.samples_per_volume`` random patches, and :class:`PatchBatches` regroups the patch stream into batches
of exactly ``training.batch_size`` patches (the last batch of an epoch may be smaller). The random state of the
patch sampling and augmentation is re-seeded at the start of each epoch from ``(seed, epoch, rank)``, in the
main process and in data-loader workers alike, so an epoch's patches depend only on those three numbers: a
resumed run draws the same patches as an uninterrupted one.

Validation: whole preprocessed volumes, one per batch; under DDP each process takes every ``world_size``-th
case (when there are fewer cases than processes, cases are repeated so that every process has one, which
counts them twice in the means).

With ``data.cache: store`` both read the preprocessed store (:mod:`pe_segmentation.data.store`): training
reads only the patches it samples (:class:`~pe_segmentation.data.store_dataset.StorePatchDataset`), with
data-loader workers that persist across epochs; each volume's patches then depend on a seed drawn from
``(seed, epoch, rank, its place in the epoch)`` rather than on the worker that reads it (a re-seeding that
persistent workers cannot get when each epoch starts).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from pe_segmentation.config import Config, DataConfig
from pe_segmentation.data.datasets import (
    build_dataset,
    from_cadpe,
    from_datalist,
    from_folder,
    from_fumpe,
    from_synthetic,
)
from pe_segmentation.data.store import PreprocessedStore
from pe_segmentation.data.store_dataset import (
    SeededSampler,
    StoreCaseDataset,
    StorePatchDataset,
    derived_seed,
)
from pe_segmentation.data.transforms import (
    build_geometry_transforms,
    build_train_transforms,
    build_val_transforms,
)
from pe_segmentation.errors import ConfigError
from pe_segmentation.io.volume import check_same_geometry
from pe_segmentation.io.volume_files import is_volume_file, read_volume_header

log = logging.getLogger(__name__)

KEYS = ("image", "label")


def load_cases(data: DataConfig, cache_dir: str | Path) -> list[dict[str, str]]:
    """The case list of ``data.dataset`` at ``data.path`` (see :mod:`pe_segmentation.data.datasets`).

    Args:
        data: the ``data`` section.
        cache_dir: where FUMPE's converted masks are kept.

    Raises:
        ConfigError: ``data.path`` not set.
        InputDataError: the data set cannot be read.
    """
    if data.path is None:
        raise ConfigError("data.path: not set; give the datalist file or data set folder to train on")
    path = Path(data.path).expanduser()
    if data.dataset == "datalist":
        items = from_datalist(path, "training", image_key=data.image_key)
    elif data.dataset == "synthetic":
        items = from_synthetic(path, image_key=data.image_key)
    elif data.dataset == "folder":
        items = from_folder(path / "images", path / "labels")
    elif data.dataset == "fumpe":
        items = from_fumpe(path, Path(cache_dir) / "fumpe_labels")
    else:
        items = from_cadpe(path)
    check_label_grids(items)
    return items


#: How far (mm, or direction cosine) a label's affine may differ from its image's: writers round differently.
LABEL_GRID_TOLERANCE = 1e-3


def check_label_grids(items: Sequence[Mapping[str, str]]) -> None:
    """Refuse a case whose label file lies on another voxel grid than its image file (headers only).

    MONAI's transforms would otherwise resample or crop the two apart without a word, and the network
    would learn from labels that miss their clots. DICOM images are left to the reader (their grid is only
    known after the series is validated); FUMPE masks are put on their series' grid when converted.

    Raises:
        InputDataError: one line naming both files and how their grids differ.
    """
    for item in items:
        image, label = item.get("image"), item.get("label")
        if not image or not label or not is_volume_file(image) or Path(image).is_dir():
            continue
        check_same_geometry(
            read_volume_header(label),
            read_volume_header(image),
            Path(label),
            Path(image),
            tol=LABEL_GRID_TOLERANCE,
        )


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for the data randomness of one epoch on one process, independent of everything else."""
    return derived_seed(seed, epoch, rank)


def open_store(config: Config, cache_dir: str | Path) -> PreprocessedStore:
    """The preprocessed store of ``config``: in ``data.store_dir`` (default ``cache_dir/store``), the folder of
    its preprocessing's geometry settings."""
    root = Path(config.data.store_dir).expanduser() if config.data.store_dir else Path(cache_dir) / "store"
    return PreprocessedStore(root, build_geometry_transforms(config.preprocessing, KEYS))


def _chain_dataset(
    items: Sequence[Mapping[str, str]], transforms: Any, config: Config, cache_dir: str | Path
) -> Dataset[Any]:
    """``items`` through a transform chain, cached as ``data.cache`` says (every cache but the store)."""
    return build_dataset(
        items, transforms, cache=config.data.cache, cache_dir=cache_dir, num_workers=config.data.num_workers
    )


def _plain(value: Any) -> Any:
    return value.as_tensor() if hasattr(value, "as_tensor") else value


class PatchBatches:
    """Regroups the patches of a volume loader into batches of ``batch_size`` patches.

    Each item of ``loader`` is a collated dict whose ``image`` and ``label`` hold the patches of one or more
    volumes (MONAI's ``list_data_collate`` flattens the per-volume patch lists). Batches hold plain tensors
    (no MetaTensor metadata, which the training step does not use and which costs time per operation).

    Args:
        loader: the volume loader (its sampler may be a ``DistributedSampler``).
        batch_size: patches per batch.
        patches_per_item: patches each loader item yields (to compute the length).
        seed: the run's seed; with :meth:`set_epoch`, fixes the random state of each epoch.
        rank: this process's rank (part of each epoch's seed).
    """

    def __init__(
        self, loader: DataLoader, batch_size: int, patches_per_item: int, seed: int = 0, rank: int = 0
    ) -> None:
        if batch_size < 1 or patches_per_item < 1:
            raise ValueError(
                f"batch_size and patches_per_item must be >= 1, got {batch_size}, {patches_per_item}"
            )
        self.loader = loader
        self.batch_size = int(batch_size)
        self.patches_per_item = int(patches_per_item)
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.loader) * self.patches_per_item / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Fix this epoch's case order and random patch sampling/augmentation (call before iterating)."""
        self.epoch = int(epoch)
        sampler = self.loader.sampler
        if isinstance(sampler, (DistributedSampler, SeededSampler)):
            sampler.set_epoch(self.epoch)
        seed = epoch_seed(self.seed, self.epoch, self.rank)
        transform = getattr(self.loader.dataset, "transform", None)
        set_random_state = getattr(transform, "set_random_state", None)
        if set_random_state is not None:
            set_random_state(seed=seed)  # the transforms of the main process (num_workers = 0)
        generator = self.loader.generator
        if generator is not None:
            generator.manual_seed(seed)  # worker seeds derive from it (MONAI's worker_init_fn)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        pending: dict[str, list[torch.Tensor]] = {k: [] for k in KEYS}
        count = 0
        for item in self.loader:
            for key in KEYS:
                pending[key].append(_plain(item[key]))
            count += int(item[KEYS[0]].shape[0])
            while count >= self.batch_size:
                batch, count = self._take(pending, self.batch_size), count - self.batch_size
                yield batch
        if count:
            yield self._take(pending, count)

    @staticmethod
    def _take(pending: dict[str, list[torch.Tensor]], size: int) -> dict[str, torch.Tensor]:
        batch = {}
        for key, parts in pending.items():
            joined = parts[0] if len(parts) == 1 else torch.cat(parts)
            batch[key] = joined[:size]
            parts[:] = [joined[size:]] if joined.shape[0] > size else []
        return batch


def build_train_batches(
    config: Config,
    items: Sequence[Mapping[str, Any]],
    cache_dir: str | Path,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> PatchBatches:
    """The training patch stream of one process (see the module docstring); with ``data.cache: store`` the
    cases must be in the store already (:func:`~pe_segmentation.training.run_data.fill_run_store`)."""
    augmentation = config.augmentation if config.training.augment else None
    dataset: Dataset
    store = config.data.cache == "store"
    if store:
        dataset = StorePatchDataset(
            items, open_store(config, cache_dir), config.preprocessing, config.patch, augmentation
        )
    else:
        dataset = _chain_dataset(
            items,
            build_train_transforms(config.preprocessing, config.patch, augmentation, keys=KEYS),
            config,
            cache_dir,
        )
    sampler: Sampler[Any] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.training.seed, drop_last=False
    )
    if store:
        sampler = SeededSampler(sampler, config.training.seed, rank)
    workers = config.data.num_workers
    loader = DataLoader(
        dataset,
        batch_size=1,
        sampler=sampler,
        num_workers=workers,
        generator=torch.Generator().manual_seed(config.training.seed),
        pin_memory=pin_memory,
        # the other datasets' workers are re-seeded per epoch when they start; the store's items carry seeds
        persistent_workers=store and workers > 0,
        prefetch_factor=4 if workers else None,
    )
    return PatchBatches(
        loader,
        config.training.batch_size,
        config.patch.samples_per_volume,
        seed=config.training.seed,
        rank=rank,
    )


def build_val_loader(
    config: Config,
    items: Sequence[Mapping[str, Any]],
    cache_dir: str | Path,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Whole validation volumes of one process: every ``world_size``-th case starting at ``rank``."""
    items = list(items)
    if world_size > 1:
        if len(items) < world_size:
            log.warning(
                "%d validation case(s) for %d processes: some cases are validated twice",
                len(items),
                world_size,
            )
            items = [items[i % len(items)] for i in range(world_size)]
        items = items[rank::world_size]
    dataset: Dataset
    if config.data.cache == "store":  # read whole from the store, one case at a time
        dataset = StoreCaseDataset(items, open_store(config, cache_dir), config.preprocessing)
    else:
        dataset = _chain_dataset(
            items, build_val_transforms(config.preprocessing, keys=KEYS), config, cache_dir
        )
    return DataLoader(
        dataset, batch_size=1, shuffle=False, num_workers=config.data.num_workers, pin_memory=pin_memory
    )
