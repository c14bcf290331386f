"""Emboli: low-attenuation filling defects in the artery tree, drawn to match FUMPE's expert masks.

Distribution (the only one; every reported figure uses it), calibrated to the 35 expert masks of FUMPE
(:mod:`.fumpe_figures`; 26-connected components):

* per case, one of FUMPE's 33 patients with emboli is drawn at random and his emboli are copied: their
  number (median 2, 1 to 15) and each one's volume, scaled by a log-normal factor of its own (SD 0.35 in
  log space, about +-40%) so that cases vary. Count, per-case burden (median about 6.5 mL, up to about
  60 mL) and component volumes (about 1 to 46,000 mm^3, median about 1,050 mm^3; about 65% over 500 mm^3,
  25% 50-500 and 10% under 50) then follow FUMPE together, as they do in its patients. When the settings
  give an ``emboli_per_case`` range, the count is uniform in it and each volume is drawn from FUMPE's
  component volumes (log-space interpolation of their quantiles);
* location by size: a clot is put in an artery narrow enough for it to be at least about two diameters long
  (a 26 mL clot in the trunk or a main artery, a 1 mL clot in a lobar or segmental artery, a 20 mm^3 clot
  in a subsegmental one); larger emboli are placed first.

Emboli of 500 mm^3 or more are casts: they fill the host artery from a point along it, both ways, and follow
the tree into every child branch at the same distance, filling the lumen (occlusive, 40%) or, in arteries
4 mm or more in radius, its core with a rim of contrast around (a floating cast; it fills narrower ones). Of the emboli over 8,000 mm^3 a share (40%, one per case) are
saddle emboli: the cast starts at the trunk's bifurcation and runs into both main arteries. A cast takes
what the host subtree can hold, so its volume may fall short of the drawn one when that is full.

Smaller emboli lie in one artery: occlusive plugs or ellipsoids adherent to the wall with contrast flowing
past. Each is grown on the voxel grid with exactly the voxel count that matches its drawn volume, so its
labelled volume (voxels x voxel volume) is the drawn volume to within half a voxel. On coarse grids a clot
smaller than one voxel is labelled as one voxel (``enlarged=True``; the summary counts them). A clot drawn
occlusive whose plug would be shorter than min(3 mm, the artery's diameter) is made partial. Emboli never
touch each other (a one-voxel gap), so each is one 26-connected component of the label.

Each clot draws its own attenuation in 30-80 HU. In the image a clot has a sub-voxel edge (:func:`clot_edges`:
its unlabelled neighbours are part clot), and the generator's partial-volume blur mixes the labelled voxels at
its edge with contrast or lung: labelled voxels then hold about -190 to 160 HU (0.5th-99.5th percentiles at
the default grid; median about 60, SD about 70) against the nnU-Net fingerprint's -195 to 305 (median 47, SD
92), while the clot's own HU stays 30-80. The generator records each embolus's labelled-HU percentiles
(``label_hu``). With ``blur_sigma=0`` labelled voxels hold the clot's HU alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

from pe_segmentation.data.embolus_sizes import size_class
from pe_segmentation.data.phantom.anatomy import HU_RANGES, Tissue
from pe_segmentation.data.phantom.fumpe_figures import (
    COMPONENT_VOLUME_QUANTILES_MM3,
    COMPONENT_VOLUMES_MM3_PER_PATIENT,
)
from pe_segmentation.data.phantom.geometry import Box, Grid, perpendicular_unit
from pe_segmentation.data.phantom.vessels import Branch, BranchRegion, branch_region

EMBOLUS_HU = HU_RANGES[Tissue.EMBOLUS]
CAST_MIN_MM3 = 500.0  # emboli this large are casts that follow the tree
SADDLE_MIN_MM3 = 8000.0  # casts this large may be saddle emboli
SADDLE_PROBABILITY = 0.4
CAST_OCCLUSIVE_PROBABILITY = 0.4
CAST_CORE_FILL = (0.55, 0.85)  # radius share of a floating cast's core (the rest is a rim of contrast)
FLOATING_MIN_RADIUS_MM = 4.0  # a floating cast leaves a rim of contrast only in arteries at least this wide
EDGE_SHARE = 0.4  # mean clot share of an unlabelled voxel touching a clot (see clot_edges)
LABEL_HU_LEVELS = (0.5, 5.0, 25.0, 50.0, 75.0, 95.0, 99.5)  # percentiles recorded in EmbolusInfo.label_hu
POSITIVE_PATIENTS = tuple(p for p in COMPONENT_VOLUMES_MM3_PER_PATIENT if p)
VOLUME_JITTER = 0.35  # SD of the log of the factor each drawn patient's component volume is scaled by
_LOG_VOLUME_QUANTILES = np.array(COMPONENT_VOLUME_QUANTILES_MM3, dtype=np.float64).T
_LOG_VOLUME_QUANTILES[1] = np.log(_LOG_VOLUME_QUANTILES[1])
_MIN_LENGTH_DIAMETERS = 2.0  # a clot is put in an artery where it is at least this many diameters long
_OCCLUSIVE_PROBABILITY = 0.45  # of the clots under CAST_MIN_MM3
_MAX_FILL = {True: 0.8, False: 0.45}  # share of the host branch's free lumen a one-branch embolus may take
_MIN_PLUG_MM = (
    3.0  # an occlusive clot is at least this long (or a diameter long); shorter ones become partial
)
_NEIGHBOURS = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class EmbolusInfo:
    """One embolus of a phantom.

    Attributes:
        index: its value in the phantom's instance map (1, 2, ...).
        size_class: class of the labelled volume (``central``, ``segmental`` or ``small``).
        volume_mm3: labelled volume (voxels x voxel volume).
        target_volume_mm3: volume drawn from the distribution.
        voxels: labelled voxel count.
        occlusive: fills the lumen over a length (else adherent to the wall, or a floating cast).
        vessel: name of the host artery (where a cast starts).
        vessel_generation: 0 trunk, 1 main, 2 lobar, 3 segmental, 4-6 subsegmental.
        vessel_radius_mm: radius of the host artery.
        hu: attenuation of the clot before partial volume, blur and noise.
        centroid_ijk: voxel-index centroid.
        centroid_ras_mm: RAS centroid in mm.
        enlarged: the grid could not label the drawn volume in its class (sub-voxel clot on a coarse grid).
        cast: grown along the tree (into child branches) rather than in one artery.
        saddle: a cast across the trunk's bifurcation, in both main arteries.
        branches: how many artery branches it lies in.
        label_hu: HU of its labelled voxels in the image at :data:`LABEL_HU_LEVELS` percentiles (empty until
            the image is rendered).
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
    cast: bool = False
    saddle: bool = False
    branches: int = 1
    label_hu: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready mapping (``size_class`` is written as ``class``), rounded for reading."""
        data = asdict(self)
        data["class"] = data.pop("size_class")
        for key in ("volume_mm3", "target_volume_mm3", "vessel_radius_mm", "hu"):
            data[key] = round(float(data[key]), 2)
        for key in ("centroid_ijk", "centroid_ras_mm"):
            data[key] = [round(float(v), 2) for v in data[key]]
        data["label_hu"] = [round(float(v), 1) for v in data["label_hu"]]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> EmbolusInfo:
        """The record back from :meth:`to_dict`'s mapping (e.g. a datalist's ``emboli`` entry)."""
        fields = dict(data)
        fields["size_class"] = fields.pop("class")
        for key in ("centroid_ijk", "centroid_ras_mm", "label_hu"):
            if key in fields:
                fields[key] = tuple(float(v) for v in fields[key])
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in fields.items() if k in names})


def draw_case_volumes(rng: np.random.Generator, count_range: tuple[int, int] | None = None) -> np.ndarray:
    """Drawn volumes (mm^3) of one case's emboli, largest first.

    By default a FUMPE patient with emboli is drawn at random and each of his components' volumes is scaled
    by its own log-normal factor (:data:`VOLUME_JITTER` SD in log space): the count, the burden and the
    component volumes then follow FUMPE together, as they do in its patients. With ``count_range`` the count
    is uniform in it and each volume is drawn from FUMPE's component volumes (:func:`draw_volumes`).
    """
    if count_range is None:
        patient = np.asarray(POSITIVE_PATIENTS[int(rng.integers(len(POSITIVE_PATIENTS)))], dtype=np.float64)
        volumes = patient * np.exp(rng.normal(0.0, VOLUME_JITTER, patient.size))
    else:
        volumes = draw_volumes(rng, int(rng.integers(count_range[0], count_range[1] + 1)))
    return np.sort(volumes)[::-1]


def draw_volumes(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` embolus volumes (mm^3) from FUMPE's component volumes (log-linear between its quantiles)."""
    levels, log_volumes = _LOG_VOLUME_QUANTILES
    return np.exp(np.interp(rng.random(count), levels, log_volumes))


def host_radius_mm(volume_mm3: float, fill: float = 0.75) -> float:
    """Widest artery radius in which a clot of this volume is at least two diameters long."""
    return float((volume_mm3 / (2.0 * _MIN_LENGTH_DIAMETERS * math.pi * fill**2)) ** (1.0 / 3.0))


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
        self.children: dict[int, list[Branch]] = {b.index: [] for b in branches}
        for b in branches:
            if b.parent is not None:
                self.children[b.parent].append(b)
        self._regions: dict[int, BranchRegion | None] = {}

    def region(self, branch: Branch) -> BranchRegion | None:
        if branch.index not in self._regions:
            self._regions[branch.index] = branch_region(self.grid, branch)
        return self._regions[branch.index]

    def candidates(self, volume_mm3: float) -> list[Branch]:
        """Host arteries to try: those about as wide as the clot allows (in random order), then narrower
        ones, widest first, then wider ones, narrowest first."""
        widest = host_radius_mm(volume_mm3)
        free = [b for b in self.branches if b.index not in self.used]
        band = [b for b in free if 0.6 * widest <= b.radius <= widest]
        order = [band[i] for i in self.rng.permutation(len(band))]
        narrower = sorted((b for b in free if b.radius < 0.6 * widest), key=lambda b: (-b.radius, b.index))
        wider = sorted((b for b in free if b.radius > widest), key=lambda b: (b.radius, b.index))
        return order + narrower + wider

    def place(self, index: int, target: float, hu: float) -> EmbolusInfo | None:
        """Place one embolus of drawn volume ``target`` mm^3; ``None`` when no artery has room for it."""
        count = max(1, round(target / self.voxel_volume))
        enlarged = count * self.voxel_volume - target > self.voxel_volume / 2 + 1e-9
        if target >= CAST_MIN_MM3:
            if target >= SADDLE_MIN_MM3 and self.rng.random() < SADDLE_PROBABILITY:
                info = self.place_saddle(index, target, count, hu)
                if info is not None:
                    return info
            occlusive = bool(self.rng.random() < CAST_OCCLUSIVE_PROBABILITY)
            fill = 1.0 if occlusive else float(self.rng.uniform(*CAST_CORE_FILL))
            for branch in self.candidates(target):
                region = self.region(branch)
                if region is None:
                    continue
                centre = float(self.rng.uniform(0.15, 0.85)) * branch.tube.length
                grown = self.grow_cast(branch, centre, count, fill)
                if grown is not None:
                    box, mask, owners = grown
                    return self.record(index, branch, box, mask, target, occlusive, hu, enlarged, owners)
            return None
        occlusive = bool(self.rng.random() < _OCCLUSIVE_PROBABILITY)
        for branch in self.candidates(target):
            region = self.region(branch)
            if region is None:
                continue
            free = region.inside & self.lumen[region.box] & ~self.blocked[region.box]
            room = int(np.count_nonzero(free) * _MAX_FILL[occlusive])
            if room < count:
                continue
            plug_mm = count * self.voxel_volume / (math.pi * branch.radius**2)
            plug = occlusive and plug_mm >= min(2.0 * branch.radius, _MIN_PLUG_MM)
            mask = self.grow(branch, region, free, count, plug)
            return self.record(index, branch, region.box, mask, target, plug, hu, enlarged, {branch.index})
        return None

    def place_saddle(self, index: int, target: float, count: int, hu: float) -> EmbolusInfo | None:
        """A cast across the trunk's bifurcation: from the trunk's end into both main arteries."""
        trunk = next((b for b in self.branches if b.parent is None), None)
        if trunk is None or trunk.index in self.used or len(self.children[trunk.index]) < 2:
            return None
        if any(c.index in self.used for c in self.children[trunk.index]):
            return None
        occlusive = bool(self.rng.random() < CAST_OCCLUSIVE_PROBABILITY)
        fill = 1.0 if occlusive else float(self.rng.uniform(*CAST_CORE_FILL))
        centre = trunk.tube.length * float(self.rng.uniform(0.9, 1.0))
        grown = self.grow_cast(trunk, centre, count, fill)
        if grown is None:
            return None
        box, mask, owners = grown
        if not all(c.index in owners for c in self.children[trunk.index]):
            return None
        info = self.record(index, trunk, box, mask, target, occlusive, hu, False, owners)
        return replace(info, saddle=True)

    def grow_cast(
        self, start: Branch, centre: float, count: int, fill: float
    ) -> tuple[Box, np.ndarray, set[int]] | None:
        """The ``count`` free voxels nearest along the tree to ``centre`` (mm along ``start``), one component.

        The distance is measured along the tree: both ways within ``start``, then into every child branch
        from its origin, so the clot fills ``start`` and runs on into each of its children at the same pace.
        Only voxels within ``fill`` of each branch's radius are taken (``fill`` 1: the whole lumen).
        Returns the chosen voxels' box, their mask on it and the branches they lie in; ``None`` when the
        voxels near ``centre`` are taken.
        """
        need = count * self.voxel_volume
        # branches in order of their distance along the tree, until they hold twice the clot
        queue: list[tuple[float, Branch]] = [(0.0, start)]
        chosen: list[tuple[float, Branch]] = []
        capacity = 0.0
        limit = math.inf
        while queue:
            queue.sort(key=lambda item: item[0])
            offset, branch = queue.pop(0)
            if offset > limit:
                break
            chosen.append((offset, branch))
            capacity += math.pi * (fill * branch.radius) ** 2 * branch.tube.length
            if capacity >= 2.0 * need and limit == math.inf:
                limit = offset + 1e-6
            end = (branch.tube.length - centre) if branch is start else offset + branch.tube.length
            queue.extend((end, child) for child in self.children[branch.index])
        spacing = float(max(self.grid.spacing))
        flats, scores, owners = [], [], []
        for offset, branch in chosen:
            region = self.region(branch)
            if region is None:
                continue
            box = region.box
            free = region.inside & self.lumen[box] & ~self.blocked[box]
            if fill < 1.0 and branch.radius >= FLOATING_MIN_RADIUS_MM:  # narrower arteries it occludes
                free &= region.distance <= np.float32(max(fill * branch.radius, 0.9 * spacing))
            if branch is start:
                along = np.abs(region.axial - np.float32(centre))
            else:
                along = np.float32(offset) + np.maximum(region.axial, np.float32(0.0))
            score = along + np.float32(0.01) * region.distance
            local = np.nonzero(free)
            if local[0].size == 0:
                continue
            where = tuple(axis + s.start for axis, s in zip(local, box, strict=True))
            flats.append(np.ravel_multi_index(where, self.grid.shape))
            scores.append(score[local])
            owners.append(np.full(local[0].size, branch.index, dtype=np.int32))
        if not flats:
            return None
        flat, score, owner = np.concatenate(flats), np.concatenate(scores), np.concatenate(owners)
        order = np.argsort(score, kind="stable")
        flat, score, owner = flat[order], score[order], owner[order]
        flat, first = np.unique(flat, return_index=True)  # each voxel once, at its lowest score
        score, owner = score[first], owner[first]
        order = np.argsort(score, kind="stable")[:count]
        flat, owner = flat[order], owner[order]
        ijk = np.stack(np.unravel_index(flat, self.grid.shape), axis=1)
        low, high = ijk.min(axis=0), ijk.max(axis=0) + 1
        box = (slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2]))
        mask = np.zeros(tuple(high - low), dtype=bool)
        local_ijk = ijk - low
        mask[local_ijk[:, 0], local_ijk[:, 1], local_ijk[:, 2]] = True
        components, _ = ndimage.label(mask, structure=_NEIGHBOURS)
        seed_label = components[tuple(local_ijk[0])]
        mask = components == seed_label
        kept = mask[local_ijk[:, 0], local_ijk[:, 1], local_ijk[:, 2]]
        return box, mask, {int(b) for b in np.unique(owner[kept])}

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
        box: Box,
        mask: np.ndarray,
        target: float,
        occlusive: bool,
        hu: float,
        enlarged: bool,
        owners: set[int],
    ) -> EmbolusInfo:
        self.instances[box][mask] = index
        grown = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, self.grid.shape, strict=True)
        )
        inner = tuple(
            slice(s.start - g.start, s.start - g.start + (s.stop - s.start))
            for s, g in zip(box, grown, strict=True)
        )
        padded = np.zeros(tuple(g.stop - g.start for g in grown), dtype=bool)
        padded[inner] = mask
        self.blocked[grown] |= ndimage.binary_dilation(padded, structure=_NEIGHBOURS)
        self.used |= owners
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
            enlarged=enlarged and voxels == max(1, round(target / self.voxel_volume)),
            cast=target >= CAST_MIN_MM3,
            branches=len(owners),
        )


def with_label_hu(emboli: list[EmbolusInfo], values: np.ndarray, indices: np.ndarray) -> list[EmbolusInfo]:
    """The emboli with ``label_hu`` set: percentiles (:data:`LABEL_HU_LEVELS`) of the image's HU ``values`` at
    their labelled voxels, ``indices`` giving each value's embolus (its instance value)."""
    order = np.argsort(indices, kind="stable")
    values, indices = values[order], indices[order]
    bounds = np.searchsorted(indices, [e.index for e in emboli])
    result = []
    for n, embolus in enumerate(emboli):
        own = values[bounds[n] : np.searchsorted(indices, embolus.index, side="right")]
        levels = np.percentile(own, LABEL_HU_LEVELS) if own.size else ()
        result.append(replace(embolus, label_hu=tuple(float(v) for v in levels)))
    return result


def clot_edges(
    hu: np.ndarray, instances: np.ndarray, clot_hu: np.ndarray, clot_voxels: tuple[np.ndarray, ...]
) -> None:
    """Give the image each clot's sub-voxel edge, in place: the voxels around a clot are part clot.

    The label holds the voxels whose centre lies in the clot, so the clot's surface lies between a labelled
    voxel's centre and its unlabelled neighbour's: on average that neighbour is :data:`EDGE_SHARE` clot. Each
    unlabelled voxel touching a clot (26-neighbours) is mixed with the clot's HU by that share; the
    partial-volume blur then mixes labelled edge voxels with this edge rather than with the bare contrast or
    lung beyond it. Work is done on each clot's bounding box (``clot_voxels``: the indices of all clot voxels).
    """
    ids = instances[clot_voxels]
    points = np.stack(clot_voxels, axis=1)
    for index in np.unique(ids):
        own_points = points[ids == index]
        low = np.maximum(own_points.min(axis=0) - 1, 0)
        high = np.minimum(own_points.max(axis=0) + 2, instances.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
        own = instances[box] == index
        edge = ndimage.binary_dilation(own, structure=_NEIGHBOURS) & (instances[box] == 0)
        view = hu[box]
        view[edge] += np.float32(EDGE_SHARE) * (np.float32(clot_hu[index]) - view[edge])


def place_emboli(
    grid: Grid,
    branches: list[Branch],
    lumen: np.ndarray,
    rng: np.random.Generator,
    count_range: tuple[int, int] | None = None,
) -> tuple[np.ndarray, list[EmbolusInfo]]:
    """Place one case's emboli in the artery lumen.

    Args:
        grid: the phantom's grid.
        branches: the artery tree.
        lumen: boolean lumen mask of the tree; every embolus voxel is taken from it.
        rng: the case's random generator.
        count_range: inclusive range of the number of emboli; ``None`` draws it from FUMPE's counts.

    Returns:
        The instance map (uint8; 0 none, ``k`` embolus ``k``) and the emboli, in instance order (largest
        drawn volume first).
    """
    placer = _Placer(grid, branches, lumen, rng)
    volumes = draw_case_volumes(rng, count_range)
    hus = rng.uniform(*EMBOLUS_HU, size=volumes.size)
    emboli: list[EmbolusInfo] = []
    for target, hu in zip(volumes, hus, strict=True):
        info = placer.place(len(emboli) + 1, float(target), float(hu))
        if info is not None:
            emboli.append(info)
    return placer.instances, emboli
