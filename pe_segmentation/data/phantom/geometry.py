"""Voxel grid and the analytic shapes the phantom is drawn with, all in millimetres.

Phantoms are built in patient millimetres so that anatomy and emboli volumes do not depend on the voxel size.
The frame is DICOM's LPS, centred on the field of view: ``x`` grows towards the patient's left, ``y`` towards
the back, ``z`` towards the head. Voxel ``[i, j, k]`` sits at ``origin + (i, j, k) * spacing`` (an axial DICOM
series with identity direction cosines); its RAS affine therefore has a negative x and y diagonal.

Shapes are evaluated on the smallest index box that holds them (:meth:`Grid.box`), with the box's coordinates
given as broadcastable 1D arrays (:meth:`Grid.coords`), so drawing a vessel costs the size of the vessel,
not of the volume. Shapes hold numpy arrays, so they compare by identity (``eq=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pe_segmentation.io.volume import affine_from_geometry

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """A voxel grid centred on the origin of the LPS millimetre frame.

    Attributes:
        shape: voxels along i, j, k.
        spacing: voxel size in mm along i, j, k.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def spacing_array(self) -> np.ndarray:
        return np.asarray(self.spacing, dtype=np.float64)

    @property
    def origin(self) -> np.ndarray:
        """LPS position (mm) of voxel ``(0, 0, 0)``; the grid's centre is at ``(0, 0, 0)``."""
        return -(np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0 * self.spacing_array

    @property
    def field_mm(self) -> np.ndarray:
        """Extent of the field of view in mm along i, j, k."""
        return np.asarray(self.shape, dtype=np.float64) * self.spacing_array

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_array))

    def affine(self) -> np.ndarray:
        """4x4 RAS affine of the grid (axial slices, i -> patient left, j -> posterior, k -> superior)."""
        return affine_from_geometry(self.origin, np.eye(3), self.spacing_array)

    def axis(self, axis: int, index: slice | None = None) -> np.ndarray:
        """Millimetre coordinates (float32) of the voxel centres along one axis, optionally of a slice."""
        index = index or slice(0, self.shape[axis])
        positions = np.arange(index.start, index.stop, dtype=np.float64)
        return (self.origin[axis] + positions * self.spacing[axis]).astype(np.float32)

    def coords(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates of a box as arrays shaped ``(n, 1, 1)``, ``(1, n, 1)`` and ``(1, 1, n)``."""
        return (
            self.axis(0, box[0])[:, None, None],
            self.axis(1, box[1])[None, :, None],
            self.axis(2, box[2])[None, None, :],
        )

    def box(self, low_mm: np.ndarray, high_mm: np.ndarray) -> Box | None:
        """Index box of the voxels whose centres may lie in ``[low_mm, high_mm]``; ``None`` if outside."""
        low = np.floor((np.asarray(low_mm) - self.origin) / self.spacing_array).astype(int)
        high = np.ceil((np.asarray(high_mm) - self.origin) / self.spacing_array).astype(int) + 1
        low = np.clip(low, 0, self.shape)
        high = np.clip(high, 0, self.shape)
        if np.any(high <= low):
            return None
        return (slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2]))

    def to_index(self, points_mm: np.ndarray) -> np.ndarray:
        """Continuous voxel indices of LPS points (``(..., 3)``)."""
        return (np.asarray(points_mm, dtype=np.float64) - self.origin) / self.spacing_array

    def nearest_voxels(self, points_mm: np.ndarray) -> np.ndarray:
        """Integer indices ``(n, 3)`` of the voxels nearest to the points that fall inside the grid."""
        index = np.rint(self.to_index(points_mm)).astype(int).reshape(-1, 3)
        inside = np.all((index >= 0) & (index < np.asarray(self.shape)), axis=1)
        return index[inside]


@dataclass(frozen=True, eq=False)
class Ellipsoid:
    """An axis-aligned ellipsoid (mm)."""

    center: np.ndarray
    semi_axes: np.ndarray

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        c, s = self.center, self.semi_axes
        return ((x - c[0]) / s[0]) ** 2 + ((y - c[1]) / s[1]) ** 2 + ((z - c[2]) / s[2]) ** 2 <= 1.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center - self.semi_axes, self.center + self.semi_axes


@dataclass(frozen=True, eq=False)
class Ellipse:
    """An axis-aligned ellipse in the axial (x, y) plane, i.e. an elliptic cylinder along z (mm)."""

    center: np.ndarray
    semi_axes: np.ndarray

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c, s = self.center, self.semi_axes
        return ((x - c[0]) / s[0]) ** 2 + ((y - c[1]) / s[1]) ** 2 <= 1.0

    def inset(self, margin: float) -> Ellipse:
        """The same ellipse with both semi-axes shortened by ``margin`` mm."""
        return Ellipse(self.center, self.semi_axes - margin)


@dataclass(frozen=True, eq=False)
class Capsule:
    """A tube with rounded ends: the points within ``radius`` of the segment ``start``-``end`` (mm)."""

    start: np.ndarray
    end: np.ndarray
    radius: float

    @cached_property
    def length(self) -> float:
        return float(np.linalg.norm(self.end - self.start))

    @cached_property
    def direction(self) -> np.ndarray:
        """Unit vector from start to end."""
        return (self.end - self.start) / max(self.length, 1e-9)

    def bounds(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        pad = self.radius + margin
        return np.minimum(self.start, self.end) - pad, np.maximum(self.start, self.end) + pad

    def axial_and_distance(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Position along the axis (mm from ``start``, not clipped) and distance to the segment (mm)."""
        u = self.direction.astype(np.float32)
        dx, dy, dz = (
            x - np.float32(self.start[0]),
            y - np.float32(self.start[1]),
            z - np.float32(self.start[2]),
        )
        axial = dx * u[0] + dy * u[1] + dz * u[2]
        t = np.clip(axial, 0.0, np.float32(self.length))
        distance = np.sqrt((dx - t * u[0]) ** 2 + (dy - t * u[1]) ** 2 + (dz - t * u[2]) ** 2)
        return axial, distance

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self.axial_and_distance(x, y, z)[1] <= np.float32(self.radius)


def perpendicular_unit(direction: np.ndarray, angle: float | np.ndarray) -> np.ndarray:
    """Unit vector(s) perpendicular to ``direction`` at azimuth ``angle`` (radians; scalar or ``(n,)``)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    angle = np.asarray(angle, dtype=np.float64)[..., None]
    return np.cos(angle) * e1 + np.sin(angle) * e2


def tilt(direction: np.ndarray, polar: float | np.ndarray, azimuth: float | np.ndarray) -> np.ndarray:
    """``direction`` turned by ``polar`` radians towards the perpendicular at ``azimuth`` (unit vector(s))."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    polar = np.asarray(polar, dtype=np.float64)[..., None]
    return np.cos(polar) * d + np.sin(polar) * perpendicular_unit(d, azimuth)
