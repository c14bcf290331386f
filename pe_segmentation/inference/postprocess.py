"""From the network's embolus probability to a clot mask on the input's own grid.

The network sees the CT reoriented, cropped to the body and resampled (:mod:`pe_segmentation.data.transforms`).
Its probability map is brought back onto the original grid the way MONAI's ``Invertd`` does it (trilinear
interpolation with border clamping inside the body box, 0 outside it), then thresholded. Instead of
resampling the whole volume, :func:`probability_to_mask` resamples only boxes around network voxels at or above
the threshold: a trilinearly interpolated value is a convex combination of its 8 neighbours, so a voxel can
reach the threshold only when one of its neighbours does. The mask is the same as after a full ``Invertd``
(the tests compare them), at a cost that grows with the clots, not with the CT.

Every map between the two grids here is read from the affines that the transforms leave on the image, so the
module holds no second copy of the preprocessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage

Box = tuple[slice, slice, slice]

#: 26-connectivity: voxels touching by a face, an edge or a corner belong to one clot.
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
#: Matrix entries below this (relative to the largest) count as zero when checking that grids are aligned.
ALIGNMENT_TOLERANCE = 1e-6
#: Memory order of the arrays made on the original grid: Fortran, the order of DICOM frames and of NIfTI, NRRD
#: and MHA voxels, so that the NIfTI and DICOM SEG writers need no 3D transpose (0.5 s each on a 512x512x300
#: CT; with it the SEG took 1.0-1.5 s and the NIfTI 0.6 s, without it 0.5 s and 0.07 s).
ORIGINAL_GRID_ORDER: Literal["C", "F"] = "F"
#: Planes of the original grid resampled at a time (:func:`slab_boxes`).
SLAB = 32


def as_box(slices: Iterable[slice]) -> Box:
    """Three slices, one per axis, as a :data:`Box`."""
    x, y, z = slices
    return (x, y, z)


def box_in(outer: Box, inner: Box) -> Box:
    """``inner``, given relative to the start of ``outer``, in the coordinates ``outer`` is given in."""
    return as_box(slice(o.start + i.start, o.start + i.stop) for o, i in zip(outer, inner, strict=True))


def _int_triple(values: Iterable[Any]) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in values)
    return (x, y, z)


def _float_triple(values: Iterable[Any]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return (x, y, z)


def remove_small_components(
    mask: np.ndarray, spacing: Sequence[float] | np.ndarray, min_volume_mm3: float
) -> np.ndarray:
    """Drop 26-connected components smaller than ``min_volume_mm3`` (a component exactly that size stays).

    Args:
        mask: binary mask.
        spacing: voxel size in mm (its product is the voxel volume).
        min_volume_mm3: smallest component volume kept; 0 keeps everything.

    Returns:
        The mask with small components removed, same dtype (``mask`` itself when nothing can be removed).
    """
    if min_volume_mm3 < 0:
        raise ValueError(f"min_volume_mm3 must be >= 0, got {min_volume_mm3}")
    if min_volume_mm3 == 0 or not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=CONNECTIVITY)
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=np.float64)))
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * voxel_mm3
    keep = sizes >= min_volume_mm3 * (1 - 1e-9)  # a clot of exactly the minimum volume is kept
    keep[0] = False
    return keep[labels].astype(mask.dtype)


def bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box holding every non-zero voxel, or ``None`` for an empty mask."""
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return as_box(box)


def _axis_aligned(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For a 3x3 matrix mapping original to other axes, with one non-zero per row and column: for each
    original axis (column), the axis (row) it maps onto and the entry there; ``None`` if not aligned."""
    scale = np.abs(matrix).max()
    nonzero = np.abs(matrix) > ALIGNMENT_TOLERANCE * scale
    if not (nonzero.sum(axis=0) == 1).all() or not (nonzero.sum(axis=1) == 1).all():
        return None
    rows = np.argmax(nonzero, axis=0)
    return rows, matrix[rows, np.arange(3)]


@dataclass(frozen=True)
class GridMapping:
    """How the network's grid lies in the original image grid.

    Network coordinate ``c`` of original voxel ``v``: ``c[axes[a]] = scale[a] * v[a] + offset[a]`` for each
    original axis ``a``. The preprocessing only reorients, crops and resamples along the (reoriented) axes, so
    each original axis maps onto one network axis.

    Attributes:
        original_shape: shape of the input image.
        network_shape: shape of the preprocessed image.
        axes: for each original axis, the network axis it runs along.
        scale: network voxels per original voxel along each original axis (negative: flipped).
        offset: network coordinate of original index 0 along each original axis.
        body_box: original voxels the body crop kept (``Invertd`` pads everything else with 0).
        nearest: per original axis, nearest-neighbour instead of linear interpolation (nnU-Net's order-0
            resampling along a low-resolution axis). Along such an axis the grid is a zoom of the body box, and
            the network coordinate is computed as nnU-Net computes it, ``scale * (v - start + 0.5) - 0.5``,
            rounded half up.
    """

    original_shape: tuple[int, int, int]
    network_shape: tuple[int, int, int]
    axes: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]
    body_box: Box
    nearest: tuple[bool, bool, bool] = (False, False, False)

    @classmethod
    def from_affines(
        cls,
        original_affine: np.ndarray,
        original_shape: Sequence[int],
        cropped_affine: np.ndarray,
        cropped_shape: Sequence[int],
        network_affine: np.ndarray,
        network_shape: Sequence[int],
    ) -> GridMapping:
        """Build the mapping from three grids' affines (voxel index to RAS mm).

        Args:
            original_affine: the input image's affine.
            original_shape: the input image's shape.
            cropped_affine: the grid after reorientation and body crop, before resampling (same as
                ``network_affine`` when the preprocessing does not resample).
            cropped_shape: that grid's shape.
            network_affine: the preprocessed image's affine.
            network_shape: the preprocessed image's shape.

        Raises:
            ValueError: the grids are not axis-aligned with each other, or the crop is not a whole-voxel box of
                the original grid (not something pe-seg's preprocessing produces).
        """
        original_affine = np.asarray(original_affine, dtype=np.float64)
        shape = _int_triple(original_shape)
        to_network = np.linalg.inv(np.asarray(network_affine, dtype=np.float64)) @ original_affine
        aligned = _axis_aligned(to_network[:3, :3])
        if aligned is None:
            raise ValueError("the network grid is not axis-aligned with the original grid")
        axes, scale = aligned
        offset = to_network[axes, 3]

        to_cropped = np.linalg.inv(np.asarray(cropped_affine, dtype=np.float64)) @ original_affine
        crop = _axis_aligned(to_cropped[:3, :3])
        if crop is None or not np.allclose(np.abs(crop[1]), 1.0, atol=1e-4):
            raise ValueError("the body crop is not a box of whole voxels of the original grid")
        crop_axes, crop_sign = crop
        body = []
        for axis in range(3):
            size = int(cropped_shape[crop_axes[axis]])
            # cropped index = sign * v + shift; keep original v whose cropped index lies in [0, size - 1]
            shift = to_cropped[crop_axes[axis], 3]
            ends = sorted(((0 - shift) / crop_sign[axis], (size - 1 - shift) / crop_sign[axis]))
            low = max(0, round(ends[0]))
            high = min(shape[axis], round(ends[1]) + 1)
            body.append(slice(low, max(low, high)))
        return cls(
            original_shape=shape,
            network_shape=_int_triple(network_shape),
            axes=_int_triple(axes),
            scale=_float_triple(scale),
            offset=_float_triple(offset),
            body_box=as_box(body),
        )

    def original_box(self, low: Sequence[int] | np.ndarray, high: Sequence[int] | np.ndarray) -> Box | None:
        """Original voxels whose interpolated value can depend on network voxels in ``[low, high]``
        (inclusive, network axes), clipped to the body box; ``None`` when no such voxel exists.

        A voxel depends on the network voxels around its network coordinate ``c``: those within one voxel of
        ``c`` after ``c`` is clamped to the grid, so a box touching the grid's edge also covers every voxel
        beyond that edge.
        """
        box = []
        for axis in range(3):
            net_axis = self.axes[axis]
            size = self.network_shape[net_axis]
            reach_low = -np.inf if low[net_axis] <= 0 else low[net_axis] - 1.0
            reach_high = np.inf if high[net_axis] >= size - 1 else high[net_axis] + 1.0
            ends = sorted(
                (
                    (reach_low - self.offset[axis]) / self.scale[axis],
                    (reach_high - self.offset[axis]) / self.scale[axis],
                )
            )
            body = self.body_box[axis]
            start = body.start if not np.isfinite(ends[0]) else max(body.start, int(np.floor(ends[0])))
            stop = body.stop if not np.isfinite(ends[1]) else min(body.stop, int(np.ceil(ends[1])) + 1)
            if stop <= start:
                return None
            box.append(slice(start, stop))
        return as_box(box)

    def sample(self, values: np.ndarray, box: Box) -> np.ndarray:
        """Trilinear interpolation of a network-grid map at the original voxels of ``box``.

        Coordinates beyond the network grid are clamped to its edge (MONAI's ``border`` padding). ``box``
        must lie inside :attr:`body_box` (outside it the inverse crop gives 0, which the caller fills in).

        Args:
            values: a map on the network grid, shape :attr:`network_shape`.
            box: original voxels to compute.

        Returns:
            float32 values of shape ``box``'s size.
        """
        if tuple(values.shape) != self.network_shape:
            raise ValueError(f"expected a map of shape {self.network_shape}, got {values.shape}")
        array = values.transpose(self.axes)  # axis a now runs along original axis a
        indices: list[np.ndarray] = []
        weights: list[np.ndarray | None] = []
        bounds: list[slice] = []
        for axis in range(3):
            size = array.shape[axis]
            voxels = np.arange(box[axis].start, box[axis].stop, dtype=np.float64)
            if self.nearest[axis]:
                start = self.body_box[axis].start
                coords = np.floor(self.scale[axis] * (voxels - start + 0.5) - 0.5 + 0.5)
                lower = np.clip(coords, 0, size - 1).astype(np.int64)
                first, last = int(lower.min()), int(lower.max()) + 1
                indices.append(lower - first)
                weights.append(None)
                bounds.append(slice(first, last))
                continue
            coords = np.clip(self.scale[axis] * voxels + self.offset[axis], 0.0, size - 1.0)
            if size == 1:
                lower = np.zeros(coords.shape, dtype=np.int64)
            else:
                lower = np.minimum(np.floor(coords).astype(np.int64), size - 2)
            first, last = int(lower.min()), int(lower.max()) + min(2, size)
            indices.append(lower - first)
            weights.append((coords - lower).astype(np.float32))
            bounds.append(slice(first, last))
        array = np.asarray(array[tuple(bounds)], dtype=np.float32)
        # interpolate first along the axes that shrink most, so that later passes handle fewer values
        order = sorted(range(3), key=lambda a: len(indices[a]) / max(1, array.shape[a]))
        for axis in order:
            shape = [1, 1, 1]
            shape[axis] = -1
            axis_weights = weights[axis]
            if axis_weights is None:  # nearest neighbour
                array = np.take(array, indices[axis], axis=axis)
                continue
            weight = axis_weights.reshape(shape)
            if array.shape[axis] == 1:
                array = np.repeat(array, len(indices[axis]), axis=axis)
                continue
            below = np.take(array, indices[axis], axis=axis)
            above = np.take(array, indices[axis] + 1, axis=axis)
            array = below + (above - below) * weight
        return np.ascontiguousarray(array, dtype=np.float32)

    def sample_all(self, values: np.ndarray, slab: int = SLAB) -> np.ndarray:
        """The whole original grid (0 outside the body box), computed in slabs to bound memory."""
        out = np.zeros(self.original_shape, dtype=np.float32, order=ORIGINAL_GRID_ORDER)
        for box in slab_boxes(self.body_box, slab):
            out[box] = self.sample(values, box)
        return out


def slab_boxes(box: Box, slab: int = SLAB) -> list[Box]:
    """``box`` cut into slabs of ``slab`` planes across its longest axis (resampling a slab at a time bounds the
    memory of :meth:`GridMapping.sample`'s intermediate arrays)."""
    axis = int(np.argmax([b.stop - b.start for b in box]))
    parts = []
    for start in range(box[axis].start, box[axis].stop, slab):
        part = list(box)
        part[axis] = slice(start, min(start + slab, box[axis].stop))
        parts.append(as_box(part))
    return parts


@dataclass
class MaskResult:
    """A mask on the original grid and the probability where it was computed.

    Attributes:
        mask: uint8, 1 = embolus, the original grid's shape.
        roi: a box holding every mask voxel (``None`` when the mask is empty).
        roi_probability: float32 probability inside ``roi``: exact at every voxel of the boxes that were
            resampled (all mask voxels among them), 0 where no network voxel reached the threshold.
        probability: the whole probability map, when it was asked for.
    """

    mask: np.ndarray
    roi: Box | None
    roi_probability: np.ndarray | None
    probability: np.ndarray | None = None


def _candidate_boxes(probability: np.ndarray, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inclusive network-grid boxes of the 26-connected groups of voxels at or above ``threshold``."""
    above = probability >= threshold
    outer = bounding_box(above)
    if outer is None:
        return []
    labels, _ = ndimage.label(above[outer], structure=CONNECTIVITY)
    start = np.array([s.start for s in outer])
    return [
        (start + [s.start for s in box], start + [s.stop - 1 for s in box])
        for box in ndimage.find_objects(labels)
        if box is not None
    ]


def _union(boxes: Sequence[Box]) -> Box:
    return as_box(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def _volume(box: Box) -> int:
    return int(np.prod([s.stop - s.start for s in box]))


def log_odds_threshold(threshold: float) -> float:
    """The log-odds of a probability threshold in (0, 1] (``inf`` for 1)."""
    return float(np.inf) if threshold >= 1.0 else float(np.log(threshold) - np.log1p(-threshold))


def _sigmoid_inplace(values: np.ndarray) -> np.ndarray:
    """float32 sigmoid of ``values``, in place (``exp`` of large negatives underflows to 0, as it should)."""
    with np.errstate(over="ignore"):
        np.negative(values, out=values)
        np.exp(values, out=values)
        values += 1.0
        np.reciprocal(values, out=values)
    return values


def probability_to_mask(
    probability: np.ndarray,
    mapping: GridMapping,
    threshold: float,
    full_probability: bool = False,
    log_odds: bool = False,
) -> MaskResult:
    """Threshold the network's probability on the original grid, resampling only where it can matter.

    Args:
        probability: embolus probability on the network grid (or its log-odds, with ``log_odds``).
        mapping: the network grid in the original grid.
        threshold: a voxel is embolus when its probability is at least this, in (0, 1].
        full_probability: also compute the whole probability map (costs a resampling of the full volume).
        log_odds: ``probability`` holds log-odds, which are resampled and then turned into probabilities (what
            nnU-Net does with its logits); the sigmoid is monotone, so the same boxes hold every voxel that can
            reach the threshold.

    Returns:
        The mask and probabilities (see :class:`MaskResult`); components are not filtered here.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    shape = mapping.original_shape
    if full_probability:
        full = mapping.sample_all(probability)
        if log_odds:
            inside = full[mapping.body_box]
            full[mapping.body_box] = _sigmoid_inplace(inside)
        mask = (full >= threshold).astype(np.uint8)
        roi = bounding_box(mask)
        return MaskResult(mask, roi, None if roi is None else full[roi].copy(), full)

    boxes = [
        box
        for low, high in _candidate_boxes(
            probability, log_odds_threshold(threshold) if log_odds else threshold
        )
        if (box := mapping.original_box(low, high)) is not None
    ]
    mask = np.zeros(shape, dtype=np.uint8, order=ORIGINAL_GRID_ORDER)
    if not boxes:
        return MaskResult(mask, None, None)
    union = _union(boxes)
    if sum(_volume(b) for b in boxes) > _volume(union):  # heavily overlapping boxes: one pass is cheaper
        boxes = [union]
    values = np.zeros([s.stop - s.start for s in union], dtype=np.float32)
    for box in boxes:
        for part in slab_boxes(box):
            local = tuple(
                slice(b.start - u.start, b.stop - u.start) for b, u in zip(part, union, strict=True)
            )
            sampled = mapping.sample(probability, part)
            if log_odds:
                sampled = _sigmoid_inplace(sampled)
            values[local] = sampled
            mask[part] |= (sampled >= threshold).view(np.uint8)
    roi = bounding_box(mask[union])
    if roi is None:
        return MaskResult(mask, None, None)
    inside = values[roi]
    if 2 * inside.size < values.size:  # a copy frees the rest; a view of most of it costs nothing more
        inside = inside.copy()
    return MaskResult(mask, box_in(union, roi), inside)


@dataclass(frozen=True)
class DroppedClots:
    """Candidate clots removed by a filter, and their size on the grid where they were found."""

    count: int = 0
    voxels: int = 0


@dataclass(frozen=True)
class _Candidates:
    """The candidate clots of a probability map: 26-connected groups of voxels at or above the threshold,
    labelled inside their bounding box ``outer``."""

    outer: Box
    labels: np.ndarray
    count: int
    sizes: np.ndarray

    @classmethod
    def find(cls, probability: np.ndarray, threshold: float) -> _Candidates | None:
        above = probability >= threshold
        outer = bounding_box(above)
        if outer is None:
            return None
        labels, count = ndimage.label(above[outer], structure=CONNECTIVITY)
        return cls(outer, labels, int(count), np.bincount(labels.ravel(), minlength=count + 1))

    def drop(self, probability: np.ndarray, dropped: np.ndarray, fill: float = 0.0) -> DroppedClots:
        """Set the voxels of the candidates flagged in ``dropped`` (indexed by label, 0 ignored) to ``fill``."""
        dropped[0] = False
        if not dropped.any():
            return DroppedClots()
        region = probability[self.outer]
        region[dropped[self.labels]] = fill
        return DroppedClots(int(dropped.sum()), int(self.sizes[dropped].sum()))


def drop_outside_territory(
    probability: np.ndarray,
    territory: np.ndarray,
    threshold: float,
    min_inside: float = 0.5,
    fill: float = 0.0,
) -> DroppedClots:
    """Remove the candidate clots that lie mostly outside the territory where emboli can be.

    A candidate is a 26-connected group of voxels at or above ``threshold``; it is dropped (its voxels set to
    0 in ``probability``, in place) when less than ``min_inside`` of its voxels lie in ``territory``.

    Args:
        probability: embolus probability on the network grid; edited in place.
        territory: the same grid, non-zero where emboli can be.
        threshold: the clot threshold, in (0, 1].
        min_inside: the share of a candidate's voxels that must lie in the territory, in (0, 1].
        fill: the value a dropped voxel gets (0; a very negative number in a map of log-odds).

    Returns:
        How many candidates were dropped, and their voxels.
    """
    if probability.shape != territory.shape:
        raise ValueError(
            f"territory shape {territory.shape} differs from the probability's {probability.shape}"
        )
    if not 0.0 < min_inside <= 1.0:
        raise ValueError(f"min_inside must be in (0, 1], got {min_inside}")
    candidates = _Candidates.find(probability, threshold)
    if candidates is None:
        return DroppedClots()
    labels = candidates.labels
    inside = np.bincount(labels[territory[candidates.outer] != 0], minlength=candidates.count + 1)
    return candidates.drop(probability, inside < min_inside * candidates.sizes, fill)


def drop_low_peak_clots(
    probability: np.ndarray, threshold: float, min_peak: float, fill: float = 0.0
) -> DroppedClots:
    """Remove the candidate clots whose highest probability stays below ``min_peak``.

    Hysteresis thresholding: a clot is found where the network is sure (its peak reaches ``min_peak``) and
    outlined where it is fairly sure (``threshold``), so the operating point on the FROC (which scores each
    candidate by its peak; ``pe-seg evaluate`` prints the peak for each false-positive rate) is chosen without
    shrinking the clots that are kept.

    Args:
        probability: embolus probability on the network grid (or its log-odds, with the thresholds and
            ``fill`` as log-odds too); edited in place.
        threshold: the clot threshold.
        min_peak: the peak a kept candidate reaches; at or below ``threshold`` nothing is dropped.
        fill: the value a dropped voxel gets (0; a very negative number in a map of log-odds).

    Returns:
        How many candidates were dropped, and their voxels.
    """
    if min_peak <= threshold:
        return DroppedClots()
    candidates = _Candidates.find(probability, threshold)
    if candidates is None:
        return DroppedClots()
    region = probability[candidates.outer]
    peaks = ndimage.maximum(region, candidates.labels, np.arange(candidates.count + 1))
    return candidates.drop(probability, np.asarray(peaks) < min_peak, fill)
