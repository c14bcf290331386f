"""The contrast-filled pulmonary artery tree: growth in millimetres and rendering as capsules.

The tree starts in the right ventricle: the pulmonary trunk (radius about 14 mm) splits into the right and
left pulmonary arteries, which give fixed lobar arteries (three on the right, upper/lingula/lower on the
left). Each lobar artery then bifurcates at random for up to four more generations (segmental, subsegmental),
the radius shrinking by about 0.74 per generation down to about 2 mm (never under 1.8 mm), always inside the
lung. Each branch is a capsule; the lumen is the union of capsules plus every branch's rasterised centre line,
so even a branch thinner than a voxel stays a connected run of voxels on a coarse grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pe_segmentation.data.phantom.anatomy import Chest
from pe_segmentation.data.phantom.geometry import Box, Capsule, Grid, tilt

LAST_GENERATION = 6  # 0 trunk, 1 main, 2 lobar, 3 segmental, 4-6 subsegmental
MIN_RADIUS_MM = 1.8  # reference mm: branching stops before a child would be thinner
_KIND = {
    2: "artery",
    3: "segmental artery",
    4: "subsegmental artery",
    5: "subsegmental artery",
    6: "subsegmental artery",
}

# (side, lobe, lobar end point in reference mm, reference radius in mm)
_LOBES = (
    ("right", "upper lobe", (-60.0, -2.0, 42.0), 7.0),
    ("right", "middle lobe", (-60.0, -30.0, -10.0), 5.5),
    ("right", "lower lobe", (-64.0, 20.0, -28.0), 7.5),
    ("left", "upper lobe", (66.0, 2.0, 52.0), 7.0),
    ("left", "lingula", (68.0, -25.0, 0.0), 5.5),
    ("left", "lower lobe", (68.0, 28.0, -14.0), 7.5),
)


@dataclass(frozen=True, eq=False)
class Branch:
    """One artery segment.

    Attributes:
        index: position in the tree list.
        name: anatomical name, e.g. ``"right lower lobe segmental artery"``.
        generation: 0 trunk, 1 main pulmonary artery, 2 lobar, 3 segmental, 4 to 6 subsegmental.
        tube: the capsule (mm).
        parent: index of the parent branch (``None`` for the trunk).
    """

    index: int
    name: str
    generation: int
    tube: Capsule
    parent: int | None

    @property
    def radius(self) -> float:
        return self.tube.radius


@dataclass(frozen=True, eq=False)
class BranchRegion:
    """A branch evaluated on its index box: axial position and distance (mm) and its voxels."""

    box: Box
    axial: np.ndarray
    distance: np.ndarray
    inside: np.ndarray


class _TreeBuilder:
    def __init__(self, chest: Chest, rng: np.random.Generator) -> None:
        self.chest = chest
        self.rng = rng
        self.branches: list[Branch] = []

    def add(
        self,
        name: str,
        generation: int,
        start: np.ndarray,
        end: np.ndarray,
        radius: float,
        parent: int | None,
    ) -> Branch:
        branch = Branch(len(self.branches), name, generation, Capsule(start, end, radius), parent)
        self.branches.append(branch)
        return branch

    def build(self) -> list[Branch]:
        chest, rng, rs = self.chest, self.rng, self.chest.radius_scale
        start = chest.point(np.array([6.0, -48.0, -28.0]) + chest.heart_shift)
        split = chest.point((12.0, -8.0, 14.0), jitter=3.0)
        trunk = self.add("pulmonary trunk", 0, start, split, rng.uniform(13.0, 15.0) * rs, None)
        hila = {
            "right": chest.point((-48.0, 6.0, 8.0), jitter=3.0),
            "left": chest.point((56.0, 12.0, 20.0), jitter=3.0),
        }
        mains = {
            side: self.add(
                f"{side} pulmonary artery", 1, split, hila[side], rng.uniform(low, high) * rs, trunk.index
            )
            for side, (low, high) in (("right", (10.5, 12.0)), ("left", (9.5, 11.0)))
        }
        for side, lobe, target, radius in _LOBES:
            main = mains[side]
            end = chest.point(target, jitter=4.0)
            lobar = self.add(
                f"{side} {lobe} artery",
                2,
                main.tube.end,
                end,
                radius * rs * rng.uniform(0.92, 1.08),
                main.index,
            )
            self.grow(lobar, f"{side} {lobe}")
        return self.branches

    def grow(self, parent: Branch, region: str) -> None:
        """Bifurcate ``parent`` recursively down to :data:`MIN_RADIUS_MM`, keeping children in the lung."""
        generation = parent.generation + 1
        if generation > LAST_GENERATION:
            return
        azimuth = self.rng.uniform(0.0, 2.0 * np.pi)
        for side_turn in (0.0, np.pi):
            radius = parent.radius * self.rng.uniform(0.70, 0.78)
            if radius < MIN_RADIUS_MM * self.chest.radius_scale:
                continue
            end = self.child_end(parent, radius, azimuth + side_turn)
            if end is not None:
                child = self.add(
                    f"{region} {_KIND[generation]}", generation, parent.tube.end, end, radius, parent.index
                )
                self.grow(child, region)

    def child_end(self, parent: Branch, radius: float, azimuth: float) -> np.ndarray | None:
        """End point of a child leaving ``parent``'s end, or ``None`` when no direction stays in the lung.

        Twelve candidates are drawn at once and the first that stays in the lung wins: the first six keep
        close to the parent's direction, later ones turn further and shorten, so a branch near the lung's edge
        bends back into the lung instead of being dropped.
        """
        tries = 12
        polar = np.where(
            np.arange(tries) < 6, self.rng.uniform(25.0, 50.0, tries), self.rng.uniform(45.0, 80.0, tries)
        )
        turns = azimuth + np.concatenate([[0.0], np.cumsum(self.rng.normal(0.0, 0.8, tries - 1))])
        lengths = radius * self.rng.uniform(6.0, 9.0, tries) * np.where(np.arange(tries) < 8, 1.0, 0.6)
        directions = tilt(parent.tube.direction, np.deg2rad(polar), turns)
        ends = parent.tube.end + directions * lengths[:, None]
        middles = parent.tube.end + directions * (lengths[:, None] / 2)
        inside = self.chest.in_lung(np.concatenate([ends, middles]), margin=radius + 1.0)
        good = np.flatnonzero(inside[:tries] & inside[tries:])
        return ends[good[0]] if good.size else None


def build_tree(chest: Chest, rng: np.random.Generator) -> list[Branch]:
    """Grow the pulmonary artery tree of one case (about 100-150 branches)."""
    return _TreeBuilder(chest, rng).build()


def branch_region(grid: Grid, branch: Branch) -> BranchRegion | None:
    """The branch's voxels on its index box (one voxel of margin), or ``None`` if it is out of the field."""
    tube = branch.tube
    box = grid.box(*tube.bounds(margin=float(max(grid.spacing))))
    if box is None:
        return None
    axial, distance = tube.axial_and_distance(*grid.coords(box))
    inside = distance <= np.float32(tube.radius)
    steps = int(np.ceil(tube.length / (0.5 * min(grid.spacing)))) + 1
    points = tube.start + np.linspace(0.0, 1.0, steps)[:, None] * (tube.end - tube.start)
    local = grid.nearest_voxels(points) - np.array([s.start for s in box])
    inside[local[:, 0], local[:, 1], local[:, 2]] = True
    return BranchRegion(box, axial, distance, inside)


def render_lumen(grid: Grid, branches: list[Branch]) -> np.ndarray:
    """Boolean lumen mask of the whole tree (union of the branches' voxels)."""
    lumen = np.zeros(grid.shape, dtype=bool)
    for branch in branches:
        region = branch_region(grid, branch)
        if region is not None:
            lumen[region.box] |= region.inside
    return lumen
