"""The in-memory volume every reader returns and every writer takes.

A :class:`Volume` holds a voxel array indexed ``[i, j, k]`` (the order nibabel and MONAI use) and a 4x4
affine that maps voxel indices to patient RAS millimetres, the MONAI/NIfTI convention. DICOM and ITK work
in LPS; the conversion lives here once (:func:`affine_from_sitk`, :func:`volume_to_sitk`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from pe_segmentation.errors import InputDataError

# Flips x and y: LPS (DICOM, ITK) <-> RAS (NIfTI, MONAI).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A 3D image or label with its geometry.

    Attributes:
        array: voxel values indexed ``[i, j, k]``.
        affine: 4x4 float64 matrix mapping ``(i, j, k, 1)`` to RAS millimetres.
        metadata: provenance and notes (``source``, ``series_uid``, ``warnings``, ...). Never patient identity.
    """

    array: np.ndarray
    affine: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim != 3:
            raise ValueError(f"a Volume is 3D, got an array of shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self.array.shape  # 3D: checked when the volume is built
        return int(i), int(j), int(k)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin_ras(self) -> np.ndarray:
        """RAS position (mm) of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction_ras(self) -> np.ndarray:
        """Unit direction cosines of the i, j, k axes in RAS, as columns."""
        return self.affine[:3, :3] / self.spacing

    @property
    def orientation_code(self) -> str:
        """Three-letter axis code (e.g. ``"RAS"``, ``"LPS"``) as nibabel names it."""
        import nibabel as nib

        return "".join(nib.orientations.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray, **metadata: Any) -> Volume:
        """The same geometry with other voxels (e.g. a mask predicted on this image)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.affine.copy(), {**self.metadata, **metadata})


def affine_from_geometry(
    origin_lps: np.ndarray, direction_lps: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """RAS affine from ITK/DICOM-style geometry (LPS origin, direction cosines as columns, spacing)."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction_lps, dtype=np.float64).reshape(3, 3) * np.asarray(
        spacing, dtype=np.float64
    )
    affine[:3, 3] = np.asarray(origin_lps, dtype=np.float64)
    return LPS_TO_RAS @ affine


def geometry_from_affine(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`affine_from_geometry`: ``(origin_lps, direction_lps (3x3, columns), spacing)``."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return lps[:3, 3].copy(), lps[:3, :3] / spacing, spacing


def affine_from_sitk(image: sitk.Image) -> np.ndarray:
    """RAS affine of a 3D SimpleITK image."""
    return affine_from_geometry(
        np.array(image.GetOrigin()),
        np.array(image.GetDirection()).reshape(3, 3),
        np.array(image.GetSpacing()),
    )


def volume_from_sitk(image: sitk.Image, **metadata: Any) -> Volume:
    """Wrap a 3D SimpleITK image (its ``[k, j, i]`` array is transposed to ``[i, j, k]``)."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return Volume(array, affine_from_sitk(image), dict(metadata))


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with the volume's voxels and geometry (shears cannot be represented)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    origin, direction, spacing = geometry_from_affine(volume.affine)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def _format_vector(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def check_same_geometry(
    volume: Volume,
    reference: Volume,
    path: str | os.PathLike[str],
    reference_path: str | os.PathLike[str],
    tol: float = 1e-4,
) -> None:
    """Refuse a volume whose grid differs from the reference's (shape, or affine beyond ``tol``).

    Raises:
        InputDataError: one line naming both files and the difference.
    """
    if volume.shape != reference.shape:
        shape = "x".join(map(str, volume.shape))
        reference_shape = "x".join(map(str, reference.shape))
        raise InputDataError(f"{path} and {reference_path} differ in shape: {shape} vs {reference_shape}")
    difference = float(np.abs(volume.affine - reference.affine).max())
    if difference > tol:
        parts = []
        if not np.allclose(volume.spacing, reference.spacing, atol=tol):
            parts.append(
                f"spacing {_format_vector(volume.spacing)} vs {_format_vector(reference.spacing)} mm"
            )
        if not np.allclose(volume.origin_ras, reference.origin_ras, atol=tol):
            parts.append(
                f"origin {_format_vector(volume.origin_ras)} vs {_format_vector(reference.origin_ras)}"
            )
        if not np.allclose(volume.direction_ras, reference.direction_ras, atol=tol):
            parts.append(f"orientation {volume.orientation_code} vs {reference.orientation_code} or rotated")
        detail = "; ".join(parts) or "affines differ"
        raise InputDataError(
            f"{path} and {reference_path} differ in geometry by up to {difference:.4g} (tolerance {tol:g}): {detail}"
        )
