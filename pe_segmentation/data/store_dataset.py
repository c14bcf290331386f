"""Datasets over the preprocessed store (:mod:`pe_segmentation.data.store`): training patches read one box at a
time, validation cases read whole.

:class:`StorePatchDataset` draws ``patch.samples_per_volume`` crop boxes per case from the stored label indices
with the training chain's own sampler (:func:`~pe_segmentation.data.transforms.build_patch_sampler`), reads only
those boxes, and applies :func:`~pe_segmentation.data.transforms.build_patch_transforms` (HU-space
randomisation, the intensity step, augmentation) to them. A volume smaller than a patch is padded virtually,
as the in-memory chain's ``SpatialPadd`` pads it: symmetrically, with air in the image and 0 in the label.

Its items are ``(index, seed)`` pairs from :class:`SeededSampler`: each case's patches depend only on that
seed, not on which data-loader worker reads them, so workers can persist across epochs
(``persistent_workers``) and a run repeats whatever the number of workers. With the seed that the in-memory
chain was given, it gives that chain's patches (up to the store's float16).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from monai.utils import MAX_SEED
from torch.utils.data import Dataset, Sampler

from pe_segmentation.data.settings import AugmentationSettings, PatchSettings, PreprocessingSettings
from pe_segmentation.data.store import PreprocessedStore, StoredCase
from pe_segmentation.data.transforms import (
    air_hu,
    build_intensity_transforms,
    build_patch_sampler,
    build_patch_transforms,
)

KEYS = ("image", "label")


def derived_seed(*parts: int) -> int:
    """A seed made from ``parts`` (e.g. seed, epoch, rank, position), independent of any other such tuple."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0]) % MAX_SEED


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)``: the indices of ``sampler`` (e.g. a ``DistributedSampler``), each with a seed
    derived from ``(seed, epoch, rank, position in the epoch)``; :meth:`set_epoch` sets the epoch (and the
    wrapped sampler's)."""

    def __init__(self, sampler: Sampler[int], seed: int, rank: int = 0) -> None:
        self.sampler = sampler
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]  # the samplers used here all have a length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            yield int(index), derived_seed(self.seed, self.epoch, self.rank, position)


def _padding(shape: Sequence[int], crop: Sequence[int]) -> tuple[list[int], list[int]]:
    """The shape after MONAI's symmetric ``SpatialPad`` to at least ``crop``, and the offset of the volume in it."""
    padded = [max(int(n), int(c)) for n, c in zip(shape, crop, strict=True)]
    return padded, [(p - int(n)) // 2 for p, n in zip(padded, shape, strict=True)]


def _translated(affine: np.ndarray, shift: Sequence[int]) -> torch.Tensor:
    """``affine`` of a grid whose voxel 0 is ``shift`` of the original's."""
    moved = affine.copy()
    moved[:3, 3] += affine[:3, :3] @ np.asarray(shift, dtype=np.float64)
    return torch.as_tensor(moved)


class StorePatchDataset(Dataset):
    """Training patches of ``items`` read from ``store``: item ``(i, seed)`` is the list of
    ``samples_per_volume`` patch dicts of case ``i`` (see the module docstring).

    Args:
        items: the training cases (case dicts), all stored.
        store: the store holding them.
        pre: the preprocessing settings (the intensity step, the padding value).
        patch: the patch settings.
        aug: the augmentation settings, ``None`` for none.
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        store: PreprocessedStore,
        pre: PreprocessingSettings,
        patch: PatchSettings,
        aug: AugmentationSettings | None,
    ) -> None:
        self.folders = [store.case_folder(item) for item in items]
        self.crop = patch.crop_size
        self.pad_value = air_hu(pre)
        self.sampler = build_patch_sampler(KEYS, patch)
        self.positive_classes = patch.positive_classes
        self.negative_classes = patch.negative_classes
        self.transform = build_patch_transforms(pre, patch, aug, KEYS)
        # seeded as one chain, in the in-memory chain's order: the sampler, then the patch transforms
        self._random = Compose([self.sampler, *self.transform.transforms])

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, key: int | tuple[int, int]) -> list[dict[str, Any]]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None:
            self._random.set_random_state(seed=seed)
        case = StoredCase.open(self.folders[index])
        padded, offset = _padding(case.spatial_shape, self.crop)
        foreground = _shifted(case.foreground(self.positive_classes), case.spatial_shape, offset, padded)
        negative = None
        if self.negative_classes is not None:
            negative = _shifted(case.foreground(self.negative_classes), case.spatial_shape, offset, padded)
        centers = self.sampler.sample_centers(padded, foreground, negative=negative)
        patches = [self._patch(case, center, offset) for center in centers]
        return list(self.transform(patches))

    def _patch(self, case: StoredCase, center: Sequence[int], offset: Sequence[int]) -> dict[str, Any]:
        """The patch centred at ``center`` (padded coordinates; MONAI's ``SpatialCrop`` box), padded where it
        leaves the stored volume."""
        start = [int(c) - n // 2 for c, n in zip(center, self.crop, strict=True)]
        inner_start = [max(s - o, 0) for s, o in zip(start, offset, strict=True)]
        inner_stop = [
            min(s - o + n, size)
            for s, o, n, size in zip(start, offset, self.crop, case.spatial_shape, strict=True)
        ]
        image, label = case.read(inner_start, [e - s for s, e in zip(inner_start, inner_stop, strict=True)])
        if image.shape[1:] != tuple(self.crop):
            before = [i - (s - o) for i, s, o in zip(inner_start, start, offset, strict=True)]
            widths = [(0, 0)] + [
                (b, n - b - w) for b, n, w in zip(before, self.crop, image.shape[1:], strict=True)
            ]
            image = np.pad(image, widths, constant_values=self.pad_value)
            label = np.pad(label, widths, constant_values=0)
        affine = _translated(case.affine, [s - o for s, o in zip(start, offset, strict=True)])
        return {
            "image": MetaTensor(torch.from_numpy(image), affine=affine),
            "label": MetaTensor(torch.from_numpy(label), affine=affine),
        }


class StoreCaseDataset(Dataset):
    """Whole validation cases read from ``store``, through the intensity step: what
    :func:`~pe_segmentation.data.transforms.build_val_transforms` gives for them (up to the store's float16).

    Args:
        items: the cases (all stored).
        store: the store holding them.
        pre: the preprocessing settings (the intensity step).
    """

    def __init__(
        self, items: Sequence[Mapping[str, Any]], store: PreprocessedStore, pre: PreprocessingSettings
    ) -> None:
        self.folders = [store.case_folder(item) for item in items]
        self.transform = build_intensity_transforms(pre, KEYS[0])

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = StoredCase.open(self.folders[index])
        image, label = case.read()
        affine = torch.as_tensor(case.affine)
        data = {
            "image": MetaTensor(torch.from_numpy(image), affine=affine),
            "label": MetaTensor(torch.from_numpy(label), affine=affine),
        }
        return dict(self.transform(data))


def _shifted(
    indices: np.ndarray, shape: Sequence[int], offset: Sequence[int], padded: Sequence[int]
) -> np.ndarray:
    """Raveled ``indices`` of a volume of ``shape`` as indices of the volume padded to ``padded`` with ``offset``
    voxels before it."""
    if list(padded) == list(shape):
        return indices
    coords = np.unravel_index(indices, tuple(shape))
    return np.ravel_multi_index(tuple(c + o for c, o in zip(coords, offset, strict=True)), tuple(padded))
