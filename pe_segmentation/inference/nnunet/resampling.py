"""nnU-Net v2's resampling of a CT onto its plan's grid, computed one axis at a time.

nnU-Net resizes with scikit-image's ``resize(order=3, mode='edge', anti_aliasing=False)``: SciPy's ``zoom`` in
``grid_mode`` (a cubic B-spline through the voxels, edge values beyond them), clipped to the input's range. Over a
whole 512 x 512 x 300 CT that is 34 s and about 20 bytes per voxel at once (float64 copy, spline coefficients,
float64 result). A tensor-product B-spline is separable, so :func:`spline_zoom` computes the same values one axis
at a time (a 1D prefilter and 4 taps per axis instead of 64 per voxel), a few planes at a time, keeping float32
between the axes: equal to SciPy's to float32 rounding (``tests/inference/test_nnunet.py``).

Where the spacing is anisotropic (largest / smallest > 3), nnU-Net resizes each plane across the low-resolution
axis apart (each clipped to its own range) and picks planes along that axis by nearest neighbour
(:func:`nearest_indices`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

#: nnU-Net's ``ANISO_THRESHOLD``: a spacing this anisotropic (largest / smallest) is resampled per plane.
ANISO_THRESHOLD = 3.0
#: SciPy pads this many edge values before its spline prefilter (mode ``nearest``); so does :func:`spline_zoom`.
SCIPY_PAD = 12
#: Planes per chunk of a pass (bounds the float64 work arrays).
CHUNK_PLANES = 16


def new_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: ``round(old_spacing / new_spacing * old_shape)`` per axis."""
    return tuple(round(i / j * k) for i, j, k in zip(spacing, target, shape, strict=True))


def separate_axis(force: bool | None, current: Sequence[float], new: Sequence[float]) -> int | None:
    """nnU-Net's ``determine_do_sep_z_and_axis``: the one axis to resample apart (nearest), or ``None``."""

    def lowres(spacing: Sequence[float]) -> list[int]:
        values = np.asarray(spacing, dtype=np.float64)
        return [int(a) for a in np.where(max(spacing) / values == 1)[0]]

    def anisotropic(spacing: Sequence[float]) -> bool:
        return bool(np.max(spacing) / np.min(spacing) > ANISO_THRESHOLD)

    axes: list[int] | None
    if force is not None:
        axes = lowres(current) if force else None
    elif anisotropic(current):
        axes = lowres(current)
    elif anisotropic(new):
        axes = lowres(new)
    else:
        axes = None
    return axes[0] if axes is not None and len(axes) == 1 else None


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """The input index of each output index of SciPy's order-0 ``map_coordinates`` at nnU-Net's coordinates
    ``scale * (o + 0.5) - 0.5`` (rounded half up, clamped)."""
    scale = float(size_in) / size_out
    coords = scale * (np.arange(size_out, dtype=np.float64) + 0.5) - 0.5
    return np.clip(np.floor(coords + 0.5), 0, size_in - 1).astype(np.int64)


def _cubic_weights(t: np.ndarray) -> list[np.ndarray]:
    """The cubic B-spline's weights of the 4 coefficients around each point (``t``: offset from the second)."""
    s = 1.0 - t
    t2, t3 = t * t, t * t * t
    return [
        s * s * s / 6.0,
        (4.0 - 6.0 * t2 + 3.0 * t3) / 6.0,
        (1.0 + 3.0 * t + 3.0 * t2 - 3.0 * t3) / 6.0,
        t3 / 6.0,
    ]


def _zoom_axis(chunk: np.ndarray, axis: int, size: int) -> np.ndarray:
    """One axis of SciPy's cubic ``zoom`` (``grid_mode``, mode ``nearest``) of a float64 chunk: its edge padding
    and prefilter along that axis, then the spline at ``(o + 0.5) * n / size - 0.5``."""
    n = chunk.shape[axis]
    pad = [(0, 0)] * chunk.ndim
    pad[axis] = (SCIPY_PAD, SCIPY_PAD)
    coefficients = ndimage.spline_filter1d(
        np.pad(chunk, pad, mode="edge"), 3, axis=axis, output=np.float64, mode="nearest"
    )
    coords = (np.arange(size, dtype=np.float64) + 0.5) * (n / size) - 0.5 + SCIPY_PAD
    base = np.floor(coords).astype(np.int64)
    weights = _cubic_weights(coords - base)
    shape = [1] * chunk.ndim
    shape[axis] = size
    out = np.zeros([size if a == axis else s for a, s in enumerate(chunk.shape)], dtype=np.float64)
    for offset, weight in zip(range(-1, 3), weights, strict=True):
        out += np.take(coefficients, base + offset, axis=axis) * weight.reshape(shape)
    return out


def spline_zoom(data: np.ndarray, shape: Sequence[int], axes: Sequence[int] | None = None) -> np.ndarray:
    """SciPy's cubic ``zoom(data, shape, grid_mode=True, mode='nearest')`` along ``axes`` (default all; the others
    keep their size), computed axis by axis over chunks of :data:`CHUNK_PLANES` planes; float32 out, not clipped.
    """
    result = np.asarray(data, dtype=np.float32)
    for axis in range(data.ndim) if axes is None else axes:
        size = int(shape[axis])
        if result.shape[axis] == size:
            continue
        other = next(a for a in range(result.ndim) if a != axis)  # chunks along another axis
        out_shape = [size if a == axis else s for a, s in enumerate(result.shape)]
        out = np.empty(out_shape, dtype=np.float32)
        for start in range(0, result.shape[other], CHUNK_PLANES):
            index: list[Any] = [slice(None)] * result.ndim
            index[other] = slice(start, min(start + CHUNK_PLANES, result.shape[other]))
            out[tuple(index)] = _zoom_axis(result[tuple(index)].astype(np.float64), axis, size)
        result = out
    return result


def resample_data(data: np.ndarray, shape: Sequence[int], axis: int | None, order: int = 3) -> np.ndarray:
    """nnU-Net's ``resample_data_or_seg`` of one float32 channel onto ``shape`` (float32 out), for ``order`` 3.

    With ``axis``, the planes across it are resized apart, each clipped to its own range, and picked by nearest
    neighbour along it; each needed input plane is resized once. Without, the whole volume is resized and
    clipped to its range (scikit-image's ``resize``).
    """
    if order != 3:
        raise ValueError(f"pe-seg reproduces nnU-Net's cubic resampling (order 3), not order {order}")
    target = tuple(int(s) for s in shape)
    if tuple(data.shape) == target:
        return data
    if axis is None:
        out = spline_zoom(data, target)
        return np.clip(out, data.min(), data.max(), out=out)
    picks = nearest_indices(data.shape[axis], target[axis])
    sources, inverse = np.unique(picks, return_inverse=True)
    planes = np.take(data, sources, axis=axis)
    in_plane = [a for a in range(data.ndim) if a != axis]
    resized = spline_zoom(
        planes, [target[a] if a != axis else len(sources) for a in range(data.ndim)], in_plane
    )
    low = planes.min(axis=tuple(in_plane), keepdims=True)
    high = planes.max(axis=tuple(in_plane), keepdims=True)
    np.clip(resized, low, high, out=resized)
    return np.take(resized, inverse, axis=axis)
