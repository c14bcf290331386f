"""Where positive and negative training patches may be centred, without a list of every background voxel.

MONAI's positive/negative patch sampler draws a voxel from the raveled indices of the label's foreground or of
its background (``map_binary_to_indices``, or ``FgBgToIndicesd`` to cache them). The background list holds
nearly every voxel of the volume: computing it on each draw took 70 ms on a 160x160x128 phantom, about an
eighth of a CPU training iteration, and caching it costs 8 bytes per voxel, twice the cached float32 image.
Emboli are a few thousand voxels, so pe-seg caches only the foreground indices (:class:`ForegroundIndicesd`)
and serves the background as :class:`BackgroundIndices`, a read-only view that computes its k-th element from
the foreground on demand. It has the length and elements of MONAI's array, so the sampler draws exactly the
voxels it drew before.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

#: Key postfix under which :class:`ForegroundIndicesd` stores a label's foreground indices.
FG_INDICES_POSTFIX = "_fg_indices"


def foreground_indices(label: Any) -> np.ndarray:
    """Sorted raveled spatial indices of the foreground of ``label`` ``(C, *spatial)``, as MONAI's
    ``map_binary_to_indices`` defines it: non-zero voxels of a one-channel label; of a multi-channel label,
    voxels where any channel but the first (one-hot background) is non-zero."""
    array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if array.ndim < 2:
        raise ValueError(f"expected a channel-first label (C, *spatial), got shape {array.shape}")
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

    def __init__(self, keys: Sequence[Hashable] | Hashable, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            # a tensor, not an array: pe-seg's disk cache loads with torch.load(weights_only=True)
            d[f"{key}{FG_INDICES_POSTFIX}"] = torch.from_numpy(foreground_indices(d[key]))
        return d
