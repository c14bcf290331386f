"""FUMPE ground-truth masks, aligned to their DICOM series, in the two layouts they come in.

* FUMPE's own: MATLAB ``.mat`` files (key ``Mask``), one logical array per patient, ``Mask(row, column,
  slice)``, with slices in the order of the series' files (InstanceNumber) (:func:`read_fumpe_mask`). Files
  saved as MATLAB v7.3 are HDF5, which scipy cannot read; h5py reads them with the axes reversed.
* The seed project's: NIfTI masks ``label/PAT001.nii.gz`` (as the CTISPED project converted FUMPE), on the
  series' pixel grid (i = column, j = row) with their slices in the order of the series' file names
  (:func:`read_fumpe_nifti_mask`). Their header has a spacing and a qform (code 1, with an origin), but the
  slice direction it claims cannot be trusted: for some patients the file names run against slice position.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import scipy.io

from pe_segmentation.errors import InputDataError
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import case_name, read_volume

log = logging.getLogger(__name__)

MASK_KEY = "Mask"
MASK_SUFFIXES = (".mat", ".nii.gz", ".nii")  # FUMPE's MATLAB masks; the seed project's NIfTI ones
SPACING_TOLERANCE = 0.01  # relative difference of a mask's header spacing from its series' worth a warning


def fumpe_mask_files(folder: Path) -> dict[str, Path]:
    """The masks in ``folder`` by patient (``PAT001.mat`` or ``PAT001.nii.gz`` -> ``PAT001``), sorted.

    Raises:
        InputDataError: a patient with two masks.
    """
    masks: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = next((s for s in MASK_SUFFIXES if path.name.lower().endswith(s)), None)
        if suffix is None or not path.is_file() or path.name.startswith("."):
            continue
        patient = path.name[: -len(suffix)]
        if patient in masks:
            raise InputDataError(f"{folder}: two masks for {patient} ({masks[patient].name}, {path.name})")
        masks[patient] = path
    return masks


def read_fumpe_label(path: str | os.PathLike[str], reference: Volume) -> Volume:
    """A FUMPE mask of either layout (by its suffix) aligned to its series: :func:`read_fumpe_mask` for
    ``.mat``, :func:`read_fumpe_nifti_mask` for ``.nii``/``.nii.gz``."""
    if Path(path).name.lower().endswith(".mat"):
        return read_fumpe_mask(path, reference)
    return read_fumpe_nifti_mask(path, reference)


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
    _check_binary(mask, path)
    instance_numbers = reference.metadata.get("instance_numbers")
    grid = mask.transpose(1, 0, 2).astype(np.uint8)  # (row, column) -> (i = column, j = row)
    if instance_numbers and None not in instance_numbers:
        # mask slice n belongs to the n-th file in InstanceNumber order; put it at that file's grid index k
        by_instance = np.argsort(np.asarray(instance_numbers), kind="stable")
        aligned = np.empty_like(grid)
        aligned[:, :, by_instance] = grid
        grid = aligned
    return Volume(grid, reference.affine.copy(), {"source": str(path), "format": "fumpe-mat"})


def read_fumpe_nifti_mask(path: str | os.PathLike[str], reference: Volume) -> Volume:
    """A FUMPE mask in the seed project's layout (``label/PAT001.nii.gz``) aligned to the grid of its series.

    The mask must have the series' in-plane shape and slice count. Its slices follow the series' file names
    (in natural order: ``IM2`` before ``IM10``), so they are matched to the grid's slices, which follow
    ImagePositionPatient along the slice normal: where the names run with the positions the mask is taken as
    it is; where they run against them its slices are reversed, with a warning naming the patient. The
    header's slice direction is not used (it cannot be trusted); a header spacing unlike the series' draws a
    warning, as the mask may belong to another series.

    Args:
        path: the ``.nii`` or ``.nii.gz`` file; its name (``PAT001``) names the patient in messages.
        reference: the series as read by :func:`~pe_segmentation.io.dicom_reader.read_dicom_series` (its
            metadata's ``files`` give the grid's slices in order).

    Returns:
        A uint8 label volume (0 background, 1 embolus) with the reference's shape and affine.

    Raises:
        InputDataError: a shape unlike the series', values other than 0 and 1, or file names that follow the
            slice positions neither up nor down (the mask's slices cannot be placed).
    """
    path = Path(path)
    patient = case_name(path)
    mask = read_volume(path)
    columns, rows, slices = reference.shape
    if mask.shape != reference.shape:
        raise InputDataError(
            f"{path}: mask shape {'x'.join(map(str, mask.shape))} does not match its series ({columns} columns "
            f"x {rows} rows x {slices} slices)"
        )
    _check_binary(mask.array, path)
    mask_spacing = np.asarray(mask.spacing, dtype=float)
    series_spacing = np.asarray(reference.spacing, dtype=float)
    if np.any(np.abs(mask_spacing - series_spacing) > SPACING_TOLERANCE * series_spacing):
        log.warning(
            "%s: the mask's spacing %s mm differs from its series' %s mm; is it the mask of this series? (%s)",
            patient,
            _mm(mask_spacing),
            _mm(series_spacing),
            path,
        )
    grid = np.asarray(mask.array).astype(np.uint8)
    order = _file_name_order(reference, path)
    if order == "reversed":
        log.warning(
            "%s: the series' file names run against its slice positions; the mask's slices (in file-name "
            "order) were reversed to fit the series (%s)",
            patient,
            path,
        )
        grid = np.ascontiguousarray(grid[:, :, ::-1])
    metadata = {"source": str(path), "format": "fumpe-nifti", "slice_order": order}
    return Volume(grid, reference.affine.copy(), metadata)


def _file_name_order(reference: Volume, path: Path) -> str:
    """How the series' file names run along its grid's slices: ``"ascending"`` (with k) or ``"reversed"``.

    Raises:
        InputDataError: the names follow the slices neither way.
    """
    files = reference.metadata.get("files")
    if not files or len(set(files)) != len(files):  # not a file per slice (e.g. multi-frame): as it is
        return "ascending"
    by_name = sorted(range(len(files)), key=lambda k: _natural_key(str(files[k])))
    if by_name == list(range(len(files))):
        return "ascending"
    if by_name == list(range(len(files)))[::-1]:
        return "reversed"
    raise InputDataError(
        f"{path}: the series' file names follow its slice positions neither up nor down "
        f"(e.g. {Path(files[by_name[0]]).name}, {Path(files[by_name[1]]).name}), so the mask's slices, which "
        "follow the file names, cannot be placed"
    )


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key comparing digit runs as numbers (``IM2`` before ``IM10``)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


def _check_binary(mask: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Refuse a mask with values other than 0 and 1 (np.unique sorts the whole mask: only to say which)."""
    if mask.size == 0 or mask.dtype == bool:
        return
    if np.issubdtype(mask.dtype, np.integer) and mask.min() >= 0 and mask.max() <= 1:
        return
    values = np.unique(mask)
    if not np.isin(values, (0, 1)).all():
        raise InputDataError(f"{path}: mask values {values[:8].tolist()} are not 0/1")


def _mm(values: np.ndarray) -> str:
    return "x".join(f"{v:.4g}" for v in values)
