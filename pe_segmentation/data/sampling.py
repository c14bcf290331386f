"""Where positive and negative training patches may be centred, without a list of every background voxel.

MONAI's positive/negative patch sampler draws a voxel from the raveled indices of the label's foreground or of
its background (``map_binary_to_indices``, or ``FgBgToIndicesd`` to cache them). The background list holds
nearly every voxel of the volume: computing it on each draw took 70 ms on a 160x160x128 phantom, about an
eighth of a CPU training iteration, and caching it costs 8 bytes per voxel, twice the cached float32 image.
Emboli are a few thousand voxels, so pe-seg caches only the foreground indices (:class:`ForegroundIndicesd`)
and serves the background as :class:`BackgroundIndices`, a read-only view that computes its k-th element from
the foreground on demand. It has the length and elements of MONAI's array, so the sampler draws exactly the
voxels it drew before.

:class:`RandOffsetPosNegCropd` draws the training patches from these indices, the sampled voxel anywhere in
its patch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandCropByPosNegLabeld
from monai.transforms.utils import (
    correct_crop_centers,
    generate_pos_neg_label_crop_centers,
    map_binary_to_indices,
)
from monai.utils import fall_back_tuple

#: Key postfix under which :class:`ForegroundIndicesd` stores a label's foreground indices.
FG_INDICES_POSTFIX = "_fg_indices"
#: ... and the indices of the classes that hard-negative patches are centred on.
NEGATIVE_CLASS_INDICES_POSTFIX = "_negative_class_indices"


def foreground_indices(label: Any, classes: Sequence[int] | None = None) -> np.ndarray:
    """Sorted raveled spatial indices of the foreground of ``label`` ``(C, *spatial)``, as MONAI's
    ``map_binary_to_indices`` defines it: non-zero voxels of a one-channel label; of a multi-channel label,
    voxels where any channel but the first (one-hot background) is non-zero. With ``classes``, the voxels of a
    one-channel class map whose value is one of them (of a one-hot label: those channels)."""
    array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if array.ndim < 2:
        raise ValueError(f"expected a channel-first label (C, *spatial), got shape {array.shape}")
    if classes is not None:
        chosen = list(classes)
        if array.shape[0] == 1:
            return np.flatnonzero(np.isin(array[0], chosen))
        return np.flatnonzero(array[chosen].reshape(len(chosen), -1).any(axis=0))
    if array.shape[0] == 1:
        return np.flatnonzero(array[0])
    return np.flatnonzero(array[1:].reshape(array.shape[0] - 1, -1).any(axis=0))


class BackgroundIndices:
    """The sorted raveled indices of the voxels *not* in ``foreground``, computed per element.

    Element k is ``k + #{j : foreground[j] - j <= k}``: ``foreground[j] - j`` is the number of background
    voxels before the j-th foreground voxel, so it counts the foreground voxels that precede the k-th background
    voxel. Deliberately not a ``Sequence``: MONAI turns sequences into arrays, which would build the list this
    class avoids.

    Args:
        foreground: sorted raveled foreground indices.
        size: number of voxels of the volume.
    """

    def __init__(self, foreground: np.ndarray, size: int) -> None:
        foreground = np.asarray(foreground, dtype=np.int64).ravel()
        if foreground.size and (foreground[0] < 0 or foreground[-1] >= size):
            raise ValueError(f"foreground indices must lie in [0, {size})")
        if foreground.size > 1 and np.any(np.diff(foreground) <= 0):
            raise ValueError("foreground indices must be sorted and unique")
        self.size = int(size)
        self._shifted = foreground - np.arange(foreground.size, dtype=np.int64)

    def __len__(self) -> int:
        return self.size - self._shifted.size

    def __getitem__(self, k: int) -> np.int64:
        k = int(k)
        if not -len(self) <= k < len(self):
            raise IndexError(f"background index {k} out of range for {len(self)} voxels")
        k %= len(self)
        return np.int64(k + np.searchsorted(self._shifted, k, side="right"))


class ForegroundIndicesd(MapTransform):
    """Store :func:`foreground_indices` of each label under ``{key}_fg_indices``.

    Deterministic, so dataset caches keep the indices and patch sampling needs no pass over the label. Written
    here because MONAI's ``FgBgToIndicesd`` also stores the background indices (see the module docstring).
    """

    def __init__(
        self,
        keys: Sequence[Hashable] | Hashable,
        classes: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
        postfix: str = FG_INDICES_POSTFIX,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.classes = None if classes is None else tuple(classes)
        self.postfix = postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            # a tensor, not an array: pe-seg's disk cache loads with torch.load(weights_only=True)
            d[f"{key}{self.postfix}"] = torch.from_numpy(foreground_indices(d[key], self.classes))
        return d


class RandOffsetPosNegCropd(RandCropByPosNegLabeld):
    """``RandCropByPosNegLabeld`` whose sampled voxel lies anywhere in the patch, not always at its centre.

    MONAI centres each patch on the sampled foreground (or background) voxel. A network with a receptive field
    as large as the patch then learns where the patch centre is (zero padding tells it) and that emboli sit
    there: it scores well on training patches and marks false positives in every sliding window at inference.
    This subclass moves each centre by a uniform random offset that keeps the sampled voxel inside the patch
    (as nnU-Net's foreground oversampling does), then pulls the centre back inside the volume as MONAI does.
    Hand-written because MONAI's crop has no such option; it draws from the transform's own random state, so
    seeded runs stay repeatable.

    Hard negatives: with ``negative_indices_key`` (the indices of, say, the patent arteries and veins, stored by
    :class:`ForegroundIndicesd`), each negative draw is moved onto one of those voxels with probability
    ``negative_class_fraction``. A negative drawn anywhere off the emboli mostly lands in fat, muscle or lung;
    the vessels that look like clot would be seen in a few patches per epoch. Off by default, and then the
    draws are exactly MONAI's.
    """

    def __init__(
        self,
        *args: Any,
        negative_indices_key: str | None = None,
        negative_class_fraction: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 <= negative_class_fraction <= 1.0:
            raise ValueError(f"negative_class_fraction must be in [0, 1], got {negative_class_fraction}")
        self.negative_indices_key = negative_indices_key
        self.negative_class_fraction = float(negative_class_fraction)
        self._negative_indices: Any = None

    def randomize(
        self,
        label: torch.Tensor | None = None,
        fg_indices: Any = None,
        bg_indices: Any = None,
        image: torch.Tensor | None = None,
    ) -> None:
        source = label if label is not None else image
        if source is None:
            raise ValueError("RandOffsetPosNegCropd needs the label or the image for the spatial shape")
        shape = source.peek_pending_shape() if isinstance(source, MetaTensor) else source.shape[1:]
        fg, bg = self._indices(label, image, shape, fg_indices, bg_indices)
        # MONAI annotates a 1-tuple, stores a list
        self.cropper.centers = self.sample_centers(  # type: ignore[assignment]
            shape, fg, bg, negative=self._negative_indices
        )

    def sample_centers(
        self,
        shape: Sequence[int],
        fg: NdarrayOrTensor,
        bg: NdarrayOrTensor | BackgroundIndices | None = None,
        negative: NdarrayOrTensor | None = None,
    ) -> list[list[int]]:
        """``num_samples`` patch centres in a volume of spatial ``shape`` whose label foreground is the raveled
        indices ``fg`` (background: every other voxel when ``bg`` is ``None``), drawn from this transform's
        random state; ``negative``: the raveled indices hard negatives are drawn from (see the class
        docstring). A patch of size n centred at c covers ``[c - n // 2, c - n // 2 + n)``.

        What :meth:`randomize` draws from a volume; the preprocessed store draws from its stored indices
        without reading the volume."""
        cropper = self.cropper
        shape = [int(n) for n in shape]
        if bg is None:
            bg = BackgroundIndices(torch.as_tensor(fg).cpu().numpy(), math.prod(shape))
        size = [int(n) for n in fall_back_tuple(cropper.spatial_size, default=shape)]
        # The sampled voxels themselves: MONAI's sampler with a 1-voxel crop, which it never moves. A case
        # without emboli (a normal scan, trained on on purpose) gets only negative patches; MONAI's warning
        # about it would repeat for every draw of every such case.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
            drawn = generate_pos_neg_label_crop_centers(
                (1,) * len(size),
                cropper.num_samples,
                cropper.pos_ratio,
                shape,
                fg,
                bg,  # type: ignore[arg-type]  # MONAI only takes len() and items, which BackgroundIndices serves
                cropper.R,
                cropper.allow_smaller,
            )
        voxels = self._hard_negatives(drawn, shape, fg, negative)
        # A patch of size n centred at c covers [c - n // 2, c - n // 2 + n): a voxel v stays inside for centres
        # v + d with d in [n // 2 - n + 1, n // 2]; pulling the centre back inside the volume keeps it there.
        low = np.array([n // 2 - n + 1 for n in size])
        high = np.array([n // 2 for n in size])
        return [
            [
                int(c)
                for c in correct_crop_centers(
                    (np.asarray(voxel, dtype=int) + cropper.R.randint(low, high + 1)).tolist(),
                    size,
                    shape,
                    cropper.allow_smaller,
                )
            ]
            for voxel in voxels
        ]

    def _hard_negatives(
        self,
        voxels: Sequence[Sequence[int]],
        shape: Sequence[int],
        fg: NdarrayOrTensor,
        negative: NdarrayOrTensor | None,
    ) -> list[Sequence[int]]:
        """``voxels`` with each negative draw (a voxel not in ``fg``) moved, with probability
        ``negative_class_fraction``, onto a voxel of ``negative``."""
        if negative is None or self.negative_class_fraction == 0.0 or len(negative) == 0:
            return list(voxels)
        positives = np.sort(torch.as_tensor(fg).cpu().numpy().ravel())
        choices = torch.as_tensor(negative).cpu().numpy().ravel()
        moved: list[Sequence[int]] = []
        for voxel in voxels:
            index = int(np.ravel_multi_index(tuple(int(v) for v in voxel), tuple(shape)))
            at = int(np.searchsorted(positives, index))
            is_positive = at < positives.size and int(positives[at]) == index
            if not is_positive and self.cropper.R.rand() < self.negative_class_fraction:
                chosen = int(choices[self.cropper.R.randint(choices.size)])
                voxel = [int(v) for v in np.unravel_index(chosen, tuple(shape))]
            moved.append(voxel)
        return moved

    def _indices(
        self,
        label: torch.Tensor | None,
        image: torch.Tensor | None,
        shape: Sequence[int],
        fg_indices: NdarrayOrTensor | None,
        bg_indices: NdarrayOrTensor | None,
    ) -> tuple[NdarrayOrTensor, NdarrayOrTensor | BackgroundIndices]:
        """The foreground and background indices to draw from: given, cached, or computed from the label."""
        cropper = self.cropper
        fg = cropper.fg_indices if fg_indices is None else fg_indices
        bg = cropper.bg_indices if bg_indices is None else bg_indices
        if fg is not None and bg is not None:
            return fg, bg
        if label is None:
            raise ValueError("RandOffsetPosNegCropd needs the label (or precomputed fg/bg indices)")
        if image is not None:  # background restricted to image > image_threshold: MONAI's way
            return map_binary_to_indices(label, image, cropper.image_threshold)
        # the same indices without listing every background voxel (see the module docstring)
        fg = foreground_indices(label) if fg is None else torch.as_tensor(fg).cpu().numpy()
        return fg, BackgroundIndices(fg, math.prod(int(n) for n in shape))

    def __call__(self, data: Any, lazy: bool | None = None) -> list[dict]:
        """The patches, each in its own memory: MONAI's crops are views of the volume, and no later transform
        may write through them into a cached volume (see
        :data:`~pe_segmentation.data.transforms.CACHE_READ_ONLY_ATTR`)."""
        key = self.negative_indices_key
        self._negative_indices = data.get(key) if key is not None else None
        patches = super().__call__(data, lazy)
        for patch in patches:
            for key in self.key_iterator(patch):
                if isinstance(patch[key], torch.Tensor) and not getattr(
                    patch[key], "has_pending_operations", False
                ):
                    patch[key] = patch[key].clone()
        return patches
