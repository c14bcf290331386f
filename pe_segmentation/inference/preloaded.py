"""Hand an already-read CT to MONAI's ``LoadImaged``, so that a case is read from disk once.

The writers need the input's DICOM identity and geometry as well as its voxels, so the predictor reads the CT
itself (:func:`~pe_segmentation.io.loader.load_volume`) and serves that
:class:`~pe_segmentation.io.volume.Volume` to the preprocessing chain through :class:`PreloadedReader`,
already in the memory layout MONAI wants.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pe_segmentation.io.monai_reader import PESegReader
from pe_segmentation.io.volume import Volume


def c_order(array: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """``array`` as a C-contiguous ``dtype`` array (what MONAI's ``LoadImage`` makes of it), copied fast.

    A DICOM volume is stored slice by slice, so its ``[i, j, k]`` array is Fortran-ordered and a C-order copy
    is a full 3D transpose, which NumPy and torch do at about 1 s for a 512 x 512 x 300 CT. Copying (and
    converting) one ``[:, j, :]`` plane at a time keeps source and destination of each step in cache, several
    times faster, and makes one array instead of a transposed copy and then a converted one.
    """
    if array.ndim != 3 or (array.flags.c_contiguous and array.dtype == dtype):
        return np.ascontiguousarray(array, dtype=dtype)
    out = np.empty(array.shape, dtype=dtype)
    plane = np.empty((array.shape[0], array.shape[2]), dtype=array.dtype)  # transpose first, convert after
    for j in range(array.shape[1]):
        plane[...] = array[:, j, :]
        out[:, j, :] = plane
    return out


class PreloadedReader(PESegReader):
    """Serve an already-read :class:`Volume` to ``LoadImaged``, so that a case is read from disk once.

    The voxels are handed over C-contiguous, as ``LoadImaged`` would make them, only faster (:func:`c_order`):
    as float32, or with ``dtype=None`` in their stored type (int16 HU: half the memory; the chain's
    resampling makes them float32 with the same values).
    """

    def __init__(self, volume: Volume, dtype: np.dtype | type | None = np.float32) -> None:
        super().__init__(series_uid=None, dtype=None)
        self.volume = volume
        self.voxel_dtype = dtype

    def verify_suffix(self, filename: Any) -> bool:
        return True

    def read(self, data: Any, **kwargs: Any) -> list[Volume]:
        return [self.volume]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        array, meta = super().get_data(img)
        return c_order(array, array.dtype if self.voxel_dtype is None else self.voxel_dtype), meta
