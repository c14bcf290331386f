"""The phantom's tissue texture: each tissue's HU plus a smooth random field, drawn coarse and upsampled.

Real tissue is not flat: lung, fat and bone show low-frequency variations, and the dependent lung is denser.
:func:`textured_hu` turns a tissue map into HU with that texture, working slab by slab so that a full-size
case makes no volume-sized temporary (:mod:`.filters`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pe_segmentation.data.phantom.anatomy import texture_amplitudes
from pe_segmentation.data.phantom.filters import slabs
from pe_segmentation.data.phantom.geometry import Grid


def textured_hu(
    tissues: np.ndarray, table: np.ndarray, grid: Grid, rng: np.random.Generator, feature_mm: float = 6.0
) -> np.ndarray:
    """HU of a tissue map: each tissue's ``table`` value plus its texture amplitude times a smooth random field.

    The field is smooth noise (float32, about unit variance, clipped to +-3) plus a posterior gradient (+-0.8
    from front to back, the denser dependent lung). The noise is drawn on a coarse grid of ``feature_mm`` cells
    and linearly upsampled (:func:`resize_linear`), so its look does not depend on the voxel size. The last
    upsampling step (along k) is done slab by slab along i (:func:`.filters.slabs`), together with the two
    table lookups, so that a full-size volume needs no volume-sized temporary; the result equals, bit for bit,
    ``table[tissues] + (resize_linear(coarse, shape) + gradient) * texture_amplitudes()[tissues]``.

    Args:
        tissues: uint8 :class:`~.anatomy.Tissue` map.
        table: per-case HU of each tissue (float32, :func:`.anatomy.tissue_hu`).
        grid: the map's grid.
        rng: the case's generator (draws the coarse noise).
        feature_mm: size of the texture's cells.

    Returns:
        The HU volume (float32).
    """
    coarse = texture_noise(grid, rng, feature_mm)
    n0, n1, n2 = grid.shape
    planes = resize_linear(coarse, (n0, n1, coarse.shape[2]))  # upsampled in-plane only: a few MB
    m = planes.shape[2]
    if m == n2:
        counts, weight, steps = np.ones(m, dtype=int), None, None
    else:
        lower, weight = _linear_steps(m, n2)
        counts = np.bincount(lower, minlength=m)  # lower is sorted: repeating by counts gathers it
        steps = np.take(planes, np.minimum(np.arange(m) + 1, m - 1), axis=2) - planes  # upper - lower
    gradient = np.linspace(-0.8, 0.8, n1, dtype=np.float32)[None, :, None]
    amplitudes = texture_amplitudes()
    hu = np.empty(grid.shape, dtype=np.float32)
    for part in slabs(grid.shape):
        field = np.repeat(planes[part], counts, axis=2)
        if steps is not None:
            step = np.repeat(steps[part], counts, axis=2)
            step *= weight
            field += step
        field += gradient
        kinds = tissues[part]
        field *= np.take(amplitudes, kinds, mode="wrap")  # kinds < len(Tissue): the fastest mode, no wrap
        out = hu[part]
        np.take(table, kinds, out=out, mode="wrap")
        out += field
    return hu


def texture_noise(grid: Grid, rng: np.random.Generator, feature_mm: float = 6.0) -> np.ndarray:
    """The coarse noise of :func:`textured_hu`: cells of ``feature_mm``, smoothed, unit SD, clipped to +-3."""
    coarse_shape = tuple(int(n) for n in np.ceil(grid.field_mm / feature_mm).astype(int) + 2)
    coarse = rng.standard_normal(coarse_shape, dtype=np.float32)
    coarse = ndimage.gaussian_filter(coarse, 1.0, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    np.clip(coarse, -3.0, 3.0, out=coarse)
    return coarse


def _linear_steps(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower source index and float32 weight of each of ``n`` corner-aligned samples of ``m`` values."""
    position = np.linspace(0.0, m - 1.0, n)
    lower = np.minimum(np.floor(position).astype(int), max(m - 2, 0))
    return lower, (position - lower).astype(np.float32)


def resize_linear(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Linear resize of a 3D array to ``shape`` (corner-aligned), one axis at a time."""
    out = np.asarray(array, dtype=np.float32)
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        if m == n:
            continue
        lower, weight = _linear_steps(m, n)
        upper = np.minimum(lower + 1, m - 1)
        view = [1, 1, 1]
        view[axis] = n
        weight = weight.reshape(view)
        low_values = np.take(out, lower, axis=axis)
        out = low_values + (np.take(out, upper, axis=axis) - low_values) * weight
    return out
