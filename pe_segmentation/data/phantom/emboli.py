"""Emboli: low-attenuation filling defects placed inside the artery tree with a stated size distribution.

Distribution (the only one; every reported figure uses it): 1 to 6 emboli per case; their size classes are a
shuffled cycle of central / segmental / small, so about a third of all emboli fall in each class:

* central (central/lobar clots): labelled volume over 500 mm^3, drawn log-uniform in 550-6000 mm^3 (capped
  by the host artery), in the trunk, a main or a lobar artery;
* segmental: 50 to 500 mm^3, drawn in 60-450 mm^3, in lobar to subsegmental arteries;
* small: under 50 mm^3, drawn in 8-45 mm^3 (a clot of 2.5-4.5 mm), in subsegmental arteries.

An embolus is grown on the voxel grid with exactly the voxel count that matches its drawn volume, so its
labelled volume (voxels x voxel volume) is the drawn volume to within half a voxel, and it stays in its class
when the grid allows. On coarse grids a clot smaller than one voxel is labelled as one voxel and a class that
no voxel count can represent (``small`` once a voxel exceeds 50 mm^3) shifts up; such emboli carry
``enlarged=True`` and the summary counts them. Occlusive clots fill the lumen over a length; partial clots
are ellipsoids adherent to the wall that leave contrast flowing past them. A clot drawn occlusive whose plug
would be shorter than min(3 mm, the artery's diameter) (a thin web across a wide artery) is made partial. Emboli never touch each other (a
one-voxel gap), so each is one 26-connected component of the label.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from pe_segmentation.data.embolus_sizes import CENTRAL_MIN_MM3, SIZE_CLASSES, SMALL_MAX_MM3, size_class
from pe_segmentation.data.phantom.anatomy import HU_RANGES, Tissue
from pe_segmentation.data.phantom.geometry import Grid, perpendicular_unit
from pe_segmentation.data.phantom.vessels import Branch, BranchRegion, branch_region

TARGET_MM3 = {"central": (550.0, 6000.0), "segmental": (60.0, 450.0), "small": (8.0, 45.0)}
EMBOLUS_HU = HU_RANGES[Tissue.EMBOLUS]
_GENERATIONS = {"central": (0, 1, 2), "segmental": (2, 3, 4), "small": (4, 5, 6)}
_OCCLUSIVE_PROBABILITY = {"central": 0.25, "segmental": 0.4, "small": 0.5}
_MAX_FILL = {True: 0.8, False: 0.45}  # share of the host branch's free lumen an embolus may take
_MIN_PLUG_MM = (
    3.0  # an occlusive clot is at least this long (or a diameter long); shorter ones become partial
)
_NEIGHBOURS = np.ones((3, 3, 3), dtype=bool)


def voxel_range(size: str, voxel_volume_mm3: float) -> tuple[int, int]:
    """Inclusive range of voxel counts whose labelled volume falls in class ``size`` (low > high: none)."""
    v = voxel_volume_mm3
    if size == "small":
        high = math.floor(SMALL_MAX_MM3 / v)
        while high * v >= SMALL_MAX_MM3:
            high -= 1
        return 1, high
    if size == "segmental":
        low, high = max(1, math.ceil(SMALL_MAX_MM3 / v)), math.floor(CENTRAL_MIN_MM3 / v)
        while low * v < SMALL_MAX_MM3:
            low += 1
        while high * v > CENTRAL_MIN_MM3:
            high -= 1
        return low, high
    if size != "central":
        raise ValueError(f"unknown size class {size!r}; expected one of {SIZE_CLASSES}")
    low = math.floor(CENTRAL_MIN_MM3 / v) + 1
    while low * v <= CENTRAL_MIN_MM3:
        low += 1
    return low, 10**9


@dataclass(frozen=True)
class EmbolusInfo:
    """One embolus of a phantom.

    Attributes:
        index: its value in the phantom's instance map (1, 2, ...).
        size_class: class of the labelled volume (``central``, ``segmental`` or ``small``).
        volume_mm3: labelled volume (voxels x voxel volume).
        target_volume_mm3: volume drawn from the distribution.
        voxels: labelled voxel count.
        occlusive: fills the lumen over a length (else adherent to the wall, partial).
        vessel: name of the host artery.
        vessel_generation: 0 trunk, 1 main, 2 lobar, 3 segmental, 4-5 subsegmental.
        vessel_radius_mm: radius of the host artery.
        hu: attenuation of the clot before blur and noise.
        centroid_ijk: voxel-index centroid.
        centroid_ras_mm: RAS centroid in mm.
        enlarged: the grid could not label the drawn volume in its class (sub-voxel clot on a coarse grid).
    """

    index: int
    size_class: str
    volume_mm3: float
    target_volume_mm3: float
    voxels: int
    occlusive: bool
    vessel: str
    vessel_generation: int
    vessel_radius_mm: float
    hu: float
    centroid_ijk: tuple[float, float, float]
    centroid_ras_mm: tuple[float, float, float]
    enlarged: bool

    def to_dict(self) -> dict:
        """JSON-ready mapping (``size_class`` is written as ``class``), rounded for reading."""
        data = asdict(self)
        data["class"] = data.pop("size_class")
        for key in ("volume_mm3", "target_volume_mm3", "vessel_radius_mm", "hu"):
            data[key] = round(float(data[key]), 2)
        for key in ("centroid_ijk", "centroid_ras_mm"):
            data[key] = [round(float(v), 2) for v in data[key]]
        return data


class _Placer:
    """Places emboli one by one, keeping a one-voxel gap between them."""

    def __init__(
        self, grid: Grid, branches: list[Branch], lumen: np.ndarray, rng: np.random.Generator
    ) -> None:
        self.grid = grid
        self.branches = branches
        self.lumen = lumen
        self.rng = rng
        self.instances = np.zeros(grid.shape, dtype=np.uint8)
        self.blocked = np.zeros(grid.shape, dtype=bool)
        self.used: set[int] = set()
        self.voxel_volume = grid.voxel_volume_mm3

    def candidates(self, size: str) -> list[Branch]:
        """Host arteries to try: the class's generations in random order, then the rest, nearest first."""
        preferred = [
            b for b in self.branches if b.generation in _GENERATIONS[size] and b.index not in self.used
        ]
        order = [preferred[i] for i in self.rng.permutation(len(preferred))]
        tried = {b.index for b in order}
        middle = float(np.mean(_GENERATIONS[size]))
        rest = sorted(
            (b for b in self.branches if b.index not in tried),
            key=lambda b: (abs(b.generation - middle), b.index),
        )
        return order + rest

    def place(self, index: int, size: str, occlusive: bool, hu: float) -> EmbolusInfo | None:
        """Place one embolus of class ``size``; ``None`` when no artery has room for it."""
        low_voxels, high_voxels = voxel_range(size, self.voxel_volume)
        representable = low_voxels <= high_voxels
        if not representable:  # e.g. a small clot on a grid of voxels over 50 mm^3: label one voxel
            low_voxels = high_voxels = 1
        for branch in self.candidates(size):
            region = branch_region(self.grid, branch)
            if region is None:
                continue
            free = region.inside & self.lumen[region.box] & ~self.blocked[region.box]
            room = min(int(np.count_nonzero(free) * _MAX_FILL[occlusive]), high_voxels)
            if room < low_voxels:
                continue
            low_mm3, high_mm3 = TARGET_MM3[size]
            high_mm3 = max(min(high_mm3, room * self.voxel_volume), low_mm3)
            target = float(np.exp(self.rng.uniform(np.log(low_mm3), np.log(high_mm3))))
            count = min(max(round(target / self.voxel_volume), low_voxels), room)
            enlarged = not representable or count * self.voxel_volume - target > self.voxel_volume / 2 + 1e-9
            plug_mm = count * self.voxel_volume / (math.pi * branch.radius**2)
            occlusive = occlusive and plug_mm >= min(2.0 * branch.radius, _MIN_PLUG_MM)
            mask = self.grow(branch, region, free, count, occlusive)
            return self.record(index, branch, region, mask, target, occlusive, hu, enlarged)
        return None

    def grow(
        self, branch: Branch, region: BranchRegion, free: np.ndarray, count: int, occlusive: bool
    ) -> np.ndarray:
        """The ``count`` free voxels of the branch that score lowest for the clot's shape (one component)."""
        tube, radius = branch.tube, branch.radius
        volume = count * self.voxel_volume
        if occlusive:
            half = volume / (math.pi * radius**2) / 2
            elongation = 1.0
        else:
            # about 3.1 r^3 of a ball of radius 1.1 r around a wall point lies in the lumen: longer clots stretch
            # along the artery rather than closing it
            elongation = float(np.clip(volume / (3.1 * radius**3), 1.0, 8.0))
            half = elongation * 1.1 * radius
        length = tube.length
        centre = self.rng.uniform(min(half, length / 2), max(length - half, length / 2))
        if occlusive:
            score = np.abs(region.axial - np.float32(centre)) + np.float32(0.05) * region.distance
        else:
            wall = tube.start + centre * tube.direction
            wall = wall + 0.9 * radius * perpendicular_unit(tube.direction, self.rng.uniform(0.0, 2 * np.pi))
            x, y, z = self.grid.coords(region.box)
            u = tube.direction.astype(np.float32)
            dx, dy, dz = x - np.float32(wall[0]), y - np.float32(wall[1]), z - np.float32(wall[2])
            along = dx * u[0] + dy * u[1] + dz * u[2]
            across2 = np.maximum(dx**2 + dy**2 + dz**2 - along**2, 0.0)
            score = np.sqrt((along / np.float32(elongation)) ** 2 + across2)
        score = np.where(free, score, np.inf)
        flat = score.ravel()
        chosen = np.argpartition(flat, count - 1)[:count] if count < flat.size else np.arange(flat.size)
        mask = np.zeros(flat.size, dtype=bool)
        mask[chosen] = True
        mask = mask.reshape(score.shape) & free
        components, _ = ndimage.label(mask, structure=_NEIGHBOURS)
        seed = np.unravel_index(int(np.argmin(flat)), score.shape)
        return components == components[seed]

    def record(
        self,
        index: int,
        branch: Branch,
        region: BranchRegion,
        mask: np.ndarray,
        target: float,
        occlusive: bool,
        hu: float,
        enlarged: bool,
    ) -> EmbolusInfo:
        box = region.box
        self.instances[box][mask] = index
        self.blocked[box] |= ndimage.binary_dilation(mask, structure=_NEIGHBOURS)
        self.used.add(branch.index)
        voxels = int(np.count_nonzero(mask))
        centroid = np.argwhere(mask).mean(axis=0) + np.array([s.start for s in box])
        ras = self.grid.affine() @ np.append(centroid, 1.0)
        volume = voxels * self.voxel_volume
        i, j, k = (float(v) for v in centroid)
        r, a, sup = (float(v) for v in ras[:3])
        return EmbolusInfo(
            index=index,
            size_class=size_class(volume),
            volume_mm3=volume,
            target_volume_mm3=target,
            voxels=voxels,
            occlusive=occlusive,
            vessel=branch.name,
            vessel_generation=branch.generation,
            vessel_radius_mm=branch.radius,
            hu=hu,
            centroid_ijk=(i, j, k),
            centroid_ras_mm=(r, a, sup),
            enlarged=enlarged,
        )


def draw_classes(rng: np.random.Generator, count_range: tuple[int, int]) -> list[str]:
    """Size classes of one case's emboli: a shuffled cycle of the three classes, 1-6 long by default."""
    count = int(rng.integers(count_range[0], count_range[1] + 1))
    cycle = [SIZE_CLASSES[i] for i in rng.permutation(len(SIZE_CLASSES))]
    return [cycle[i % len(cycle)] for i in range(count)]


def place_emboli(
    grid: Grid,
    branches: list[Branch],
    lumen: np.ndarray,
    rng: np.random.Generator,
    count_range: tuple[int, int] = (1, 6),
) -> tuple[np.ndarray, list[EmbolusInfo]]:
    """Place one case's emboli in the artery lumen.

    Args:
        grid: the phantom's grid.
        branches: the artery tree.
        lumen: boolean lumen mask of the tree; every embolus voxel is taken from it.
        rng: the case's random generator.
        count_range: inclusive range of the number of emboli.

    Returns:
        The instance map (uint8; 0 none, ``k`` embolus ``k``) and the emboli, in instance order.
    """
    placer = _Placer(grid, branches, lumen, rng)
    emboli: list[EmbolusInfo] = []
    for size in draw_classes(rng, count_range):
        occlusive = bool(rng.random() < _OCCLUSIVE_PROBABILITY[size])
        hu = float(rng.uniform(*EMBOLUS_HU))
        info = placer.place(len(emboli) + 1, size, occlusive, hu)
        if info is not None:
            emboli.append(info)
    return placer.instances, emboli
