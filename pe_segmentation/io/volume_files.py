"""Volume files (NIfTI, NRRD, MHA/MHD) read into and written from :class:`Volume`.

NIfTI is read with nibabel: SimpleITK 2.5 silently returns a truncated ``.nii.gz`` padded with garbage and reads
NaN voxels as 0, both of which must be refused, not segmented. nibabel raises on the first and keeps the second
(it is also no slower where gzip dominates). NRRD and MHA/MHD are read, and everything is written, with
SimpleITK. Both give the RAS affine of :class:`Volume`; tests hold them to SimpleITK's geometry within 1e-4.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pe_segmentation.errors import InputDataError, OutputError
from pe_segmentation.io.atomic import atomic_output
from pe_segmentation.io.volume import Volume, affine_from_sitk, volume_from_sitk, volume_to_sitk

log = logging.getLogger(__name__)

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


def volume_suffix(path: str | os.PathLike[str]) -> str:
    """The format suffix of ``path`` (``.nii.gz`` counts as one), lower-case; ``""`` when not a volume file."""
    name = Path(path).name.lower()
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def is_volume_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a file format :func:`read_volume` understands (by extension)."""
    return bool(volume_suffix(path))


def case_name(path: str | os.PathLike[str]) -> str:
    """The file name without its volume suffix (``case_001.nii.gz`` -> ``case_001``)."""
    path = Path(path)
    suffix = volume_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _squeeze_to_3d(image: sitk.Image, path: Path) -> sitk.Image:
    """Accept 4D files whose extra axes have length 1 (a common export quirk); refuse real 4D series."""
    size = image.GetSize()
    if image.GetDimension() == 3:
        return image
    if image.GetDimension() == 2:
        raise InputDataError(f"{path}: is a 2D image of size {size}; a CT volume is 3D")
    if image.GetDimension() == 4 and size[3] == 1:
        log.warning("%s: 4D file with one volume; using it as 3D", path)
        return sitk.Extract(image, (*size[:3], 0), (0, 0, 0, 0))
    raise InputDataError(f"{path}: is a {image.GetDimension()}D image of size {size}; expected one 3D volume")


def read_volume(path: str | os.PathLike[str], *, allow_vector: bool = False) -> Volume:
    """Read a 3D NIfTI/NRRD/MHA/MHD file.

    Args:
        path: the file.
        allow_vector: keep multi-component pixels (otherwise they are refused).

    Raises:
        InputDataError: missing, unreadable or corrupt file; not 3D; an empty axis; NaN or infinite voxels.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such file")
    if not is_volume_file(path):
        raise InputDataError(
            f"{path}: unknown volume format (expected one of {', '.join(READABLE_SUFFIXES)})"
        )
    reader = _read_nifti if volume_suffix(path) in (".nii", ".nii.gz") else _read_with_sitk
    volume = reader(path, allow_vector)
    if 0 in volume.shape:
        raise InputDataError(f"{path}: has an empty axis (shape {volume.shape})")
    _check_affine(volume.affine, path)
    if np.issubdtype(volume.array.dtype, np.floating) and not np.isfinite(volume.array).all():
        bad = int((~np.isfinite(volume.array)).sum())
        raise InputDataError(f"{path}: contains {bad} NaN or infinite voxels")
    return volume


def _check_affine(affine: np.ndarray, path: Path) -> None:
    """Refuse a voxel-to-world matrix that is not finite, has a zero-length axis or (nearly) collinear axes.

    Raises:
        InputDataError: the geometry cannot place voxels in space (a broken qform/sform or direction matrix).
    """
    linear = affine[:3, :3]
    lengths = np.linalg.norm(linear, axis=0)
    if not np.isfinite(affine).all() or not (lengths > 0).all():
        raise InputDataError(
            f"{path}: degenerate geometry: voxel-to-world matrix {np.round(linear, 4).tolist()} is not finite "
            "or has a zero-length axis (broken qform/sform or direction)"
        )
    if abs(float(np.linalg.det(linear / lengths))) < 1e-3:  # the unit axes span (almost) no volume
        raise InputDataError(
            f"{path}: degenerate geometry: the voxel axes of {np.round(linear, 4).tolist()} are collinear "
            "(broken qform/sform or direction)"
        )


def _nifti_geometry_notes(image: nib.Nifti1Image, path: Path) -> None:
    """Warn about NIfTI orientation headers that are usable but odd (nibabel's choice of affine is kept:
    the sform when its code is set, else the qform, else the voxel sizes alone)."""
    header = image.header
    try:
        sform, sform_code = header.get_sform(coded=True)
        qform, qform_code = header.get_qform(coded=True)
    except (ValueError, np.linalg.LinAlgError, nib.spatialimages.HeaderDataError):  # reported by the affine
        return
    if not sform_code and not qform_code:
        log.warning(
            "%s: no qform/sform orientation in the header; axes assumed RAS with the voxel sizes", path
        )
    elif sform_code and qform_code and sform is not None and qform is not None:
        difference = float(np.abs(sform - qform).max())
        if difference > 1e-3:
            log.warning(
                "%s: qform and sform disagree by up to %.3g mm; using the sform (code %d)",
                path,
                difference,
                int(sform_code),
            )


def read_volume_header(path: str | os.PathLike[str]) -> Volume:
    """The shape and geometry of a volume file from its header only (no voxels are read).

    The returned volume's array is a read-only zero view of the right shape (it takes no memory); use it for
    grid comparisons, e.g. of a label against its image, before anything is loaded.

    Raises:
        InputDataError: missing, unknown or unreadable file, or a broken geometry.
    """
    path = Path(path)
    if not path.is_file() or not is_volume_file(path):
        return read_volume(path)  # raises the usual one-line error
    try:
        if volume_suffix(path) in (".nii", ".nii.gz"):
            image = _load_nifti(path)
            shape, affine = tuple(image.shape), image.affine
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            dims, shape = reader.GetDimension(), tuple(reader.GetSize())
            grid = sitk.Image([1, 1, 1], sitk.sitkUInt8)  # a 1-voxel image carrying the file's 3D geometry
            grid.SetOrigin(reader.GetOrigin()[:3])
            grid.SetSpacing(reader.GetSpacing()[:3])
            direction = np.reshape(reader.GetDirection(), (dims, dims))[:3, :3]
            grid.SetDirection(direction.ravel().tolist())
            affine = affine_from_sitk(grid)
    except InputDataError:
        raise
    except (OSError, EOFError, ValueError, RuntimeError, zlib.error, np.linalg.LinAlgError) as err:
        raise InputDataError(
            f"{path}: cannot read the header ({str(err).strip().splitlines()[-1][:120]})"
        ) from err
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError) as err:
        raise InputDataError(f"{path}: cannot read the header ({str(err).splitlines()[0][:120]})") from err
    if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
        raise InputDataError(f"{path}: is a {len(shape)}D image of shape {shape}; expected one 3D volume")
    shape = shape[:3]
    _check_affine(np.asarray(affine, dtype=np.float64), path)
    zeros = np.broadcast_to(np.zeros((), dtype=np.uint8), shape)
    return Volume(zeros, affine, {"source": str(path), "format": volume_suffix(path), "header_only": True})


def _read_with_sitk(path: Path, allow_vector: bool) -> Volume:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown reason"
        raise InputDataError(f"{path}: cannot read ({_short_itk_reason(detail)})") from err
    image = _squeeze_to_3d(image, path)
    if image.GetNumberOfComponentsPerPixel() != 1 and not allow_vector:
        raise InputDataError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected 1"
        )
    return volume_from_sitk(image, source=str(path), format=volume_suffix(path))


def _read_nifti(path: Path, allow_vector: bool) -> Volume:
    try:
        image = _load_nifti(path)
        shape = image.shape
        if len(shape) == 4 and shape[3] == 1:
            log.warning("%s: 4D file with one volume; using it as 3D", path)
        elif len(shape) != 3:
            raise InputDataError(f"{path}: is a {len(shape)}D image of shape {shape}; expected one 3D volume")
        array = np.asarray(image.dataobj)
        affine = image.affine
    except InputDataError:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        np.linalg.LinAlgError,
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
    ) as err:
        raise InputDataError(
            f"{path}: cannot read ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
        ) from err
    array = array.reshape(shape[:3])
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if isinstance(image, nib.Nifti1Image):
        _nifti_geometry_notes(image, path)
    return Volume(array, affine, {"source": str(path), "format": volume_suffix(path)})


def _load_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    """nibabel's (lazily read) image of a ``.nii``/``.nii.gz`` file.

    ``nib.load`` is typed to return any file-based image; for these suffixes it returns a NIfTI image, which has
    the shape, affine and data object read here.
    """
    return cast(nib.spatialimages.SpatialImage, nib.load(path))


def _short_itk_reason(detail: str) -> str:
    """ITK messages carry source paths and line numbers; keep the human part."""
    for marker in ("): ", "Description: "):
        if marker in detail:
            detail = detail.split(marker)[-1]
    return detail.strip() or "corrupt or unsupported file"


def write_volume(volume: Volume, path: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write ``volume`` atomically as NIfTI, NRRD or MHA (by the extension of ``path``).

    Raises:
        OutputError: unknown extension or the file cannot be written.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix not in WRITABLE_SUFFIXES:
        raise OutputError(f"{path}: cannot write this format (use one of {', '.join(WRITABLE_SUFFIXES)})")
    image = volume_to_sitk(volume)
    with atomic_output(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        except RuntimeError as err:
            raise OutputError(f"{path}: cannot write ({_short_itk_reason(str(err))})") from err
    return path
