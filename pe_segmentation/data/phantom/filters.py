"""Whole-volume steps of the phantom done slab by slab, so that a full-size case makes no volume-sized temporary.

A full-size phantom (512 x 512 x 300 voxels) is 300 MB in float32. Two things make numpy and scipy slow on it:
every volume-sized temporary costs its allocation and page faults, and scipy's ``correlate1d`` along the first
axis reads lines whose voxels lie a whole plane apart (about 4x slower than along the last axis on this CPU).
So the volume is walked in slabs of a few MB along its first axis (:func:`slabs`): per-plane work runs on each
slab while it is in cache, and filtering along the first axis is a weighted sum of whole planes, streamed once
through the volume (:func:`correlate_first_axis`).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import numpy as np
from scipy import special

SLAB_VOXELS = 1 << 20  # about 4 MB of float32 per slab
_NOISE_LEVELS = 1 << 16


def slabs(volume_shape: tuple[int, ...]) -> Iterator[slice]:
    """Consecutive slices along the first axis covering it, each of about :data:`SLAB_VOXELS` (at least a plane)."""
    plane = int(np.prod(volume_shape[1:]))
    rows = max(1, SLAB_VOXELS // max(plane, 1))
    for start in range(0, volume_shape[0], rows):
        yield slice(start, min(start + rows, volume_shape[0]))


def dilate(mask: np.ndarray) -> np.ndarray:
    """Binary dilation by the 6-neighbour cross, outside the array counting as False.

    The same as ``scipy.ndimage.binary_dilation(mask)`` with its default structure, in six shifted ORs.
    """
    grown = mask.copy()
    for axis in range(mask.ndim):
        ahead = [slice(None)] * mask.ndim
        behind = [slice(None)] * mask.ndim
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        grown[tuple(ahead)] |= mask[tuple(behind)]
        grown[tuple(behind)] |= mask[tuple(ahead)]
    return grown


def correlate_first_axis(volume: np.ndarray, weights: np.ndarray) -> None:
    """Correlate a float32 volume with odd-length ``weights`` along its first axis, in place.

    As ``scipy.ndimage.correlate1d(volume, weights, axis=0, mode="nearest")`` (to float32 rounding: sums are
    float32 here), but computed a slab at a time as weighted sums of whole planes. The planes a slab still needs
    once it is written (its last ``radius``) are kept aside, so the only copy is one slab deep.
    """
    if weights.ndim != 1 or weights.size % 2 != 1:
        raise ValueError(f"weights must be 1D of odd length, got shape {weights.shape}")
    w = weights.astype(np.float32)
    radius = w.size // 2
    n = volume.shape[0]
    symmetric = bool(np.array_equal(w, w[::-1]))
    behind = np.repeat(volume[:1], radius, axis=0)  # original planes before the slab (edge plane repeated)
    for part in slabs(volume.shape):
        rows = part.stop - part.start
        ahead = volume[part.start : min(part.stop + radius, n)]
        pad = np.repeat(volume[n - 1 :], part.stop + radius - n, axis=0) if part.stop + radius > n else None
        window = np.concatenate([behind, ahead] if pad is None else [behind, ahead, pad])
        total = window[radius : radius + rows] * w[radius]
        for shift in range(1, radius + 1):
            before = window[radius - shift : radius - shift + rows]
            after = window[radius + shift : radius + shift + rows]
            if symmetric:
                pair = before + after
                pair *= w[radius + shift]
            else:
                pair = before * w[radius - shift]
                pair += after * w[radius + shift]
            total += pair
        behind = window[rows : rows + radius]
        volume[part] = total


@cache
def _normal_quantiles() -> np.ndarray:
    """Standard normal quantiles at the centres of 65536 equal-probability bins, scaled to unit SD (float64)."""
    levels = special.ndtri((np.arange(_NOISE_LEVELS) + 0.5) / _NOISE_LEVELS)
    return levels / levels.std()


def add_normal_noise(block: np.ndarray, sd: float, rng: np.random.Generator) -> None:
    """Add Gaussian noise of SD ``sd`` to a float32 array, in place, drawn as 16-bit integers through a table.

    Each voxel draws one of 65536 equally likely normal quantiles (``rng.integers``, uint16), about 4x faster
    than ``Generator.standard_normal`` in float32. The values are quantised to steps under 1e-4 SD and cut at
    4.3 SD, which nothing downstream can see: a scanner's reconstruction filter sums tens of voxels' noise.
    """
    table = (_normal_quantiles() * sd).astype(np.float32)
    draws = rng.integers(0, _NOISE_LEVELS, size=block.shape, dtype=np.uint16)
    block += np.take(
        table, draws, mode="wrap"
    )  # draws < len(table): wrap never wraps, and is the fastest mode
