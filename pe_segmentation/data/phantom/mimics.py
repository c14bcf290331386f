"""PE mimics of the ``clinical`` profile: things on a CTPA that look like filling defects but are not emboli.

All of them are label 0 (background), never part of the phantom's ``vessels`` (the contrast-filled artery
lumen), and recorded per case (:class:`MimicInfo`, the datalist's ``mimics``):

* ``dark_pulmonary_veins``: the clinical profile draws pulmonary veins (four from the left atrium, branching
  twice in the lungs, beside the arteries). In an ``early`` arterial phase they are still unopacified blood
  (35-60 HU), tubes as dark as an occluded artery; in the other phases they enhance like the left heart.
* ``mixing_artefact``: unopacified blood from the inferior vena cava streaming into the right ventricle and
  the proximal pulmonary trunk, a low-HU (50-130 HU) swirl inside enhanced blood without being clot (35% of
  scans). Its voxels are taken out of ``vessels``.
* ``lymph_node``: 1-3 hilar nodes beside the main and lobar arteries, 5-20 mm across, 30-60 HU (50%).
* ``mucus_bronchus``: 1-2 mucus-filled (impacted) bronchi running beside segmental arteries, 10-30 mm long,
  about as wide as the artery, 10-40 HU (35%).

Mimics are painted over lung (and, for veins and nodes, mediastinal fat) only, so they never cut into an
artery, a clot, the heart or bone. A structure thinner than a voxel still gets its centre voxel(s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pe_segmentation.data.phantom.anatomy import Chest, Tissue
from pe_segmentation.data.phantom.geometry import Capsule, Ellipsoid, Grid, perpendicular_unit, tilt
from pe_segmentation.data.phantom.scanner import ScannerDraw
from pe_segmentation.data.phantom.vessels import Branch

MIMIC_KINDS = ("dark_pulmonary_veins", "mixing_artefact", "lymph_node", "mucus_bronchus")

# (name, ostium-side end point in reference mm) of the four pulmonary veins, from the left atrium
_VEINS = (
    ("right superior pulmonary vein", (-62.0, -12.0, 18.0)),
    ("right inferior pulmonary vein", (-60.0, 28.0, -52.0)),
    ("left superior pulmonary vein", (62.0, -8.0, 22.0)),
    ("left inferior pulmonary vein", (60.0, 32.0, -46.0)),
)
_LEFT_ATRIUM = (12.0, 14.0, -34.0)


@dataclass(frozen=True)
class MimicProfile:
    """Probabilities and ranges of the mimics (see the module docstring)."""

    vein_radius_mm: tuple[float, float] = (5.5, 7.0)  # reference mm at the left atrium
    mixing_probability: float = 0.35
    mixing_hu: tuple[float, float] = (50.0, 130.0)
    lymph_node_probability: float = 0.5
    lymph_nodes: tuple[int, int] = (1, 3)
    lymph_node_mm: tuple[float, float] = (5.0, 20.0)  # short-axis diameter
    lymph_node_hu: tuple[float, float] = (30.0, 60.0)
    mucus_probability: float = 0.35
    mucus_bronchi: tuple[int, int] = (1, 2)
    mucus_length_mm: tuple[float, float] = (10.0, 30.0)
    mucus_hu: tuple[float, float] = (10.0, 40.0)


MIMICS = MimicProfile()


@dataclass(frozen=True)
class MimicInfo:
    """One mimic of a phantom (label 0).

    Attributes:
        kind: one of :data:`MIMIC_KINDS`.
        location: where, e.g. ``"beside the right pulmonary artery"``.
        voxels: voxels painted.
        hu: attenuation before blur and noise.
        size_mm: diameter (nodes, bronchi, veins at the atrium) or length of the swirl (mixing).
    """

    kind: str
    location: str
    voxels: int
    hu: float
    size_mm: float

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "location": self.location,
            "voxels": self.voxels,
            "hu": round(self.hu, 1),
            "size_mm": round(self.size_mm, 1),
        }


@dataclass
class Mimics:
    """The mimics of one case and the HU of their tissues."""

    records: list[MimicInfo] = field(default_factory=list)
    hu: dict[Tissue, float] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return sorted({m.kind for m in self.records})


def _paint(
    tissues: np.ndarray,
    grid: Grid,
    bounds: tuple[np.ndarray, np.ndarray],
    inside_of: object,
    allowed: tuple[Tissue, ...],
    tissue: Tissue,
    centres: np.ndarray,
) -> int:
    """Set ``tissue`` where the shape holds and the map shows an ``allowed`` tissue; returns voxels painted."""
    painted = 0
    box = grid.box(*bounds)
    if box is not None:
        view = tissues[box]
        mask = inside_of(*grid.coords(box)) & np.isin(view, np.array(allowed, dtype=np.uint8))  # type: ignore[operator]
        view[mask] = tissue
        painted += int(mask.sum())
    index = np.unique(grid.nearest_voxels(centres), axis=0)
    if index.size:
        i, j, k = index[:, 0], index[:, 1], index[:, 2]
        free = np.isin(tissues[i, j, k], np.array(allowed, dtype=np.uint8))
        tissues[i[free], j[free], k[free]] = tissue
        painted += int(free.sum())
    return painted


def pulmonary_veins(chest: Chest, rng: np.random.Generator) -> list[tuple[str, Capsule]]:
    """The four pulmonary veins from the left atrium, each branching twice inside the lung (mm)."""
    atrium = chest.point(np.asarray(_LEFT_ATRIUM) + chest.heart_shift)
    tubes: list[tuple[str, Capsule]] = []
    for name, target in _VEINS:
        radius = rng.uniform(*MIMICS.vein_radius_mm) * chest.radius_scale
        trunk = Capsule(atrium, chest.point(target, jitter=4.0), radius)
        tubes.append((name, trunk))
        parents = [trunk]
        for _generation in range(2):
            children = []
            for parent in parents:
                azimuth = rng.uniform(0.0, 2.0 * np.pi)
                for turn in (0.0, np.pi):
                    r = parent.radius * rng.uniform(0.68, 0.78)
                    direction = tilt(parent.direction, np.deg2rad(rng.uniform(25.0, 50.0)), azimuth + turn)
                    length = r * rng.uniform(6.0, 9.0)
                    end = parent.end + direction * length
                    middle = parent.end + direction * (length / 2)
                    if chest.in_lung(np.stack([end, middle]), margin=r + 1.0).all():
                        child = Capsule(parent.end, end, r)
                        tubes.append((name, child))
                        children.append(child)
            parents = children
    return tubes


def paint_mimics(
    tissues: np.ndarray,
    vessels: np.ndarray,
    instances: np.ndarray,
    grid: Grid,
    chest: Chest,
    branches: list[Branch],
    draw: ScannerDraw,
    rng: np.random.Generator,
) -> Mimics:
    """Draw the pulmonary veins and this case's mimics into ``tissues`` (and out of ``vessels``), in place."""
    mimics = Mimics()
    mimics.hu[Tissue.PULMONARY_VEIN] = draw.vein_hu
    vein_voxels = 0
    widest = 0.0
    for _name, tube in pulmonary_veins(chest, rng):
        centres = tube.start + np.linspace(0.0, 1.0, 8)[:, None] * (tube.end - tube.start)
        vein_voxels += _paint(
            tissues,
            grid,
            tube.bounds(),
            tube.contains,
            (Tissue.LUNG, Tissue.FAT),
            Tissue.PULMONARY_VEIN,
            centres,
        )
        widest = max(widest, 2.0 * tube.radius)
    if draw.phase == "early" and vein_voxels:
        mimics.records.append(
            MimicInfo(
                "dark_pulmonary_veins",
                "pulmonary veins (early arterial phase)",
                vein_voxels,
                draw.vein_hu,
                widest,
            )
        )
    if rng.random() < MIMICS.mixing_probability:
        _mixing(tissues, vessels, instances, grid, chest, branches[0], draw, rng, mimics)
    if rng.random() < MIMICS.lymph_node_probability:
        _lymph_nodes(tissues, grid, branches, rng, mimics)
    if rng.random() < MIMICS.mucus_probability:
        _mucus_bronchi(tissues, grid, branches, rng, mimics)
    return mimics


def _mixing(
    tissues: np.ndarray,
    vessels: np.ndarray,
    instances: np.ndarray,
    grid: Grid,
    chest: Chest,
    trunk: Branch,
    draw: ScannerDraw,
    rng: np.random.Generator,
    mimics: Mimics,
) -> None:
    """A swirl of unopacified blood in the right ventricle and the proximal trunk."""
    hu = min(rng.uniform(*MIMICS.mixing_hu), 0.6 * draw.trunk_hu)
    reach = trunk.tube.length * rng.uniform(0.3, 0.6)
    pitch = rng.uniform(25.0, 50.0)  # mm per turn of the swirl
    width = rng.uniform(0.35, 0.65)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    ventricle = chest.right_ventricle
    lows = np.minimum(ventricle.bounds()[0], trunk.tube.bounds()[0])
    highs = np.maximum(ventricle.bounds()[1], trunk.tube.bounds()[1])
    box = grid.box(lows, highs)
    if box is None:
        return
    x, y, z = grid.coords(box)
    u = trunk.tube.direction
    e1 = perpendicular_unit(u, 0.0)
    e2 = np.cross(u, e1)
    dx, dy, dz = x - trunk.tube.start[0], y - trunk.tube.start[1], z - trunk.tube.start[2]
    axial = dx * u[0] + dy * u[1] + dz * u[2]
    angle = np.arctan2(dx * e2[0] + dy * e2[1] + dz * e2[2], dx * e1[0] + dy * e1[1] + dz * e1[2])
    band = np.sin(angle + axial * (2.0 * np.pi / pitch) + phase) > 1.0 - 2.0 * width
    view = tissues[box]
    in_ventricle = (view == Tissue.RIGHT_HEART_BLOOD) & ventricle.contains(x, y, z)
    in_trunk = (view == Tissue.PULMONARY_ARTERY) & trunk.tube.contains(x, y, z) & (axial <= reach)
    mask = band & (in_ventricle | in_trunk) & (instances[box] == 0)
    count = int(mask.sum())
    if not count:
        return
    view[mask] = Tissue.UNOPACIFIED_BLOOD
    vessels[box] &= ~mask
    mimics.hu[Tissue.UNOPACIFIED_BLOOD] = hu
    mimics.records.append(
        MimicInfo("mixing_artefact", "right ventricle and pulmonary trunk", count, hu, reach)
    )


def _lymph_nodes(
    tissues: np.ndarray, grid: Grid, branches: list[Branch], rng: np.random.Generator, mimics: Mimics
) -> None:
    hosts = [b for b in branches if b.generation in (1, 2)]
    hu = rng.uniform(*MIMICS.lymph_node_hu)
    mimics.hu[Tissue.LYMPH_NODE] = hu
    for _ in range(int(rng.integers(MIMICS.lymph_nodes[0], MIMICS.lymph_nodes[1] + 1))):
        host = hosts[int(rng.integers(len(hosts)))]
        diameter = rng.uniform(*MIMICS.lymph_node_mm)
        semi = diameter / 2.0 * rng.uniform(0.85, 1.25, size=3)
        along = host.tube.start + rng.uniform(0.2, 0.8) * (host.tube.end - host.tube.start)
        side = perpendicular_unit(host.tube.direction, rng.uniform(0.0, 2.0 * np.pi))
        centre = along + side * (host.radius + float(semi.max()) + 1.0)
        node = Ellipsoid(centre, semi)
        count = _paint(
            tissues,
            grid,
            node.bounds(),
            node.contains,
            (Tissue.LUNG, Tissue.FAT),
            Tissue.LYMPH_NODE,
            centre[None],
        )
        if count:
            mimics.records.append(MimicInfo("lymph_node", f"beside the {host.name}", count, hu, diameter))


def _mucus_bronchi(
    tissues: np.ndarray, grid: Grid, branches: list[Branch], rng: np.random.Generator, mimics: Mimics
) -> None:
    hosts = [b for b in branches if b.generation in (3, 4) and b.tube.length >= 8.0] or [
        b for b in branches if b.generation >= 2
    ]
    hu = rng.uniform(*MIMICS.mucus_hu)
    mimics.hu[Tissue.MUCUS_BRONCHUS] = hu
    for _ in range(int(rng.integers(MIMICS.mucus_bronchi[0], MIMICS.mucus_bronchi[1] + 1))):
        host = hosts[int(rng.integers(len(hosts)))]
        radius = host.radius * rng.uniform(0.8, 1.2)
        length = min(0.9 * host.tube.length, rng.uniform(*MIMICS.mucus_length_mm))
        side = perpendicular_unit(host.tube.direction, rng.uniform(0.0, 2.0 * np.pi))
        start = (
            host.tube.start
            + side * (host.radius + radius + 0.7)
            + host.tube.direction * 0.05 * host.tube.length
        )
        tube = Capsule(start, start + host.tube.direction * length, radius)
        centres = tube.start + np.linspace(0.0, 1.0, 12)[:, None] * (tube.end - tube.start)
        count = _paint(
            tissues, grid, tube.bounds(), tube.contains, (Tissue.LUNG,), Tissue.MUCUS_BRONCHUS, centres
        )
        if count:
            mimics.records.append(
                MimicInfo("mucus_bronchus", f"beside the {host.name}", count, hu, 2.0 * radius)
            )
