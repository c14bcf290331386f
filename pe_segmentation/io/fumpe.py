"""FUMPE ground-truth masks: MATLAB ``.mat`` files (key ``Mask``, rows x columns x slices) for DICOM series.

FUMPE stores one logical array per patient, ``Mask(row, column, slice)``, with slices in the order of the
series' files (InstanceNumber). Files saved as MATLAB v7.3 are HDF5, which scipy cannot read; h5py reads
them with the axes reversed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.volume import Volume

MASK_KEY = "Mask"


def load_mat_array(path: str | os.PathLike[str], key: str = MASK_KEY) -> np.ndarray:
    """The array stored under ``key`` in a MATLAB file (v4-v7 through scipy, v7.3/HDF5 through h5py),
    in MATLAB's axis order."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such file")
    import h5py

    if h5py.is_hdf5(path):  # MATLAB v7.3, which scipy cannot read
        return _load_hdf5_mat(path, key)
    try:
        contents = scipy.io.loadmat(path, variable_names=[key])
    except (ValueError, OSError, TypeError, NotImplementedError) as err:
        raise InputDataError(f"{path}: not a readable MATLAB file ({err})") from err
    if key not in contents:
        raise InputDataError(f"{path}: has no variable '{key}'")
    return np.asarray(contents[key])


def _load_hdf5_mat(path: Path, key: str) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                raise InputDataError(
                    f"{path}: has no variable '{key}' (found {', '.join(sorted(handle.keys()))})"
                )
            # HDF5 keeps MATLAB's column-major data with the axes listed in reverse.
            return np.asarray(handle[key][()]).transpose()
    except OSError as err:
        raise InputDataError(f"{path}: not a readable MATLAB v7.3 file ({err})") from err


def read_fumpe_mask(path: str | os.PathLike[str], reference: Volume) -> Volume:
    """A FUMPE mask aligned to the grid of its DICOM series.

    Args:
        path: the ``.mat`` file.
        reference: the series as read by :func:`~pe_segmentation.io.dicom_reader.read_dicom_series` (its
            metadata's ``instance_numbers`` give the file order the mask's slices follow).

    Returns:
        A uint8 label volume (0 background, 1 embolus) with the reference's shape and affine.

    Raises:
        InputDataError: wrong shape for the series, or values other than 0 and 1.
    """
    mask = load_mat_array(path)
    columns, rows, slices = reference.shape
    if mask.ndim != 3 or mask.shape != (rows, columns, slices):
        raise InputDataError(
            f"{path}: mask shape {mask.shape} does not match its series ({rows} rows x {columns} columns x "
            f"{slices} slices)"
        )
    values = np.unique(mask)
    if not np.isin(values, (0, 1)).all():
        raise InputDataError(f"{path}: mask values {values[:8].tolist()} are not 0/1")
    instance_numbers = reference.metadata.get("instance_numbers")
    grid = mask.transpose(1, 0, 2).astype(np.uint8)  # (row, column) -> (i = column, j = row)
    if instance_numbers and None not in instance_numbers:
        # mask slice n belongs to the n-th file in InstanceNumber order; put it at that file's grid index k
        by_instance = np.argsort(np.asarray(instance_numbers), kind="stable")
        aligned = np.empty_like(grid)
        aligned[:, :, by_instance] = grid
        grid = aligned
    return Volume(grid, reference.affine.copy(), {"source": str(path), "format": "fumpe-mat"})
