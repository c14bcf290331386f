"""The chest of a phantom: torso, fat, muscle, ribs, spine, lungs, diaphragm, heart, aorta and airways.

Anatomy is described in a reference frame of millimetres for a 360 x 360 x 320 mm field of view (LPS, centred:
``x`` patient left, ``y`` posterior, ``z`` superior) and scaled per axis to the actual field, so a phantom at
any shape and spacing shows the same chest, only sampled differently. Each case varies body size, organ
positions and tissue HU a little. The result is a map of :class:`Tissue` classes (uint8); HU come later from
a per-case table (:func:`tissue_hu`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from pe_segmentation.data.phantom.geometry import Capsule, Ellipse, Ellipsoid, Grid

REFERENCE_FIELD_MM = np.array([360.0, 360.0, 320.0])


class Tissue(IntEnum):
    """Tissue classes of the phantom's tissue map."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    LUNG = 3
    BONE = 4  # cancellous
    CORTICAL_BONE = 5
    ABDOMEN = 6  # liver and upper abdomen below the diaphragm
    MYOCARDIUM = 7
    SYSTEMIC_BLOOD = 8  # left heart and aorta, less enhanced at the pulmonary arterial phase
    CSF = 9
    RIGHT_HEART_BLOOD = 10
    PULMONARY_ARTERY = 11  # contrast-filled pulmonary artery lumen
    EMBOLUS = 12
    AIRWAY = 13
    DISC = 14
    # drawn by the clinical profile only (scanner.py, mimics.py); HU set per case there
    PULMONARY_VEIN = 15
    LYMPH_NODE = 16
    MUCUS_BRONCHUS = 17
    UNOPACIFIED_BLOOD = 18  # mixing artefact: unopacified blood streaming into the right heart and trunk
    SVC_CONTRAST = 19  # superior vena cava


# Per-case HU of each tissue: (low, high) of a uniform draw. Pulmonary blood is drawn once and shared by the
# right heart and the pulmonary arteries; each embolus draws its own HU from its range (see emboli.py).
HU_RANGES: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (-1000.0, -1000.0),
    Tissue.FAT: (-110.0, -85.0),
    Tissue.MUSCLE: (42.0, 50.0),
    Tissue.LUNG: (-860.0, -840.0),
    Tissue.BONE: (300.0, 420.0),
    Tissue.CORTICAL_BONE: (850.0, 1200.0),
    Tissue.ABDOMEN: (45.0, 52.0),
    Tissue.MYOCARDIUM: (60.0, 90.0),
    Tissue.SYSTEMIC_BLOOD: (150.0, 230.0),
    Tissue.CSF: (5.0, 15.0),
    Tissue.PULMONARY_ARTERY: (300.0, 450.0),
    Tissue.EMBOLUS: (30.0, 80.0),  # drawn per clot (emboli.py); 20-90 HU seen in CTPA
    Tissue.AIRWAY: (-1000.0, -990.0),
    Tissue.DISC: (70.0, 90.0),
}

# Amplitude (HU per unit of the smooth texture field) of each tissue's low-frequency texture. The field is
# at most +-3.8 (clipped noise plus the gradient), so e.g. arteries stay within +-23 HU of their drawn value,
# muscle within 30-60 HU; emboli are not textured.
TEXTURE_HU: dict[Tissue, float] = {
    Tissue.FAT: 6.0,
    Tissue.MUSCLE: 2.5,
    Tissue.LUNG: 18.0,
    Tissue.BONE: 40.0,
    Tissue.CORTICAL_BONE: 40.0,
    Tissue.ABDOMEN: 2.0,
    Tissue.MYOCARDIUM: 5.0,
    Tissue.SYSTEMIC_BLOOD: 5.0,
    Tissue.RIGHT_HEART_BLOOD: 6.0,
    Tissue.PULMONARY_ARTERY: 6.0,
    Tissue.PULMONARY_VEIN: 5.0,
    Tissue.LYMPH_NODE: 3.0,
    Tissue.MUCUS_BRONCHUS: 3.0,
    Tissue.UNOPACIFIED_BLOOD: 6.0,
    Tissue.SVC_CONTRAST: 20.0,
}


def tissue_hu(rng: np.random.Generator) -> np.ndarray:
    """Per-case HU lookup table indexed by :class:`Tissue` (float32)."""
    table = np.zeros(len(Tissue), dtype=np.float32)
    for tissue, (low, high) in HU_RANGES.items():
        table[tissue] = rng.uniform(low, high)
    table[Tissue.RIGHT_HEART_BLOOD] = table[Tissue.PULMONARY_ARTERY]
    return table


def texture_amplitudes() -> np.ndarray:
    """Texture amplitude lookup table indexed by :class:`Tissue` (float32)."""
    table = np.zeros(len(Tissue), dtype=np.float32)
    for tissue, amplitude in TEXTURE_HU.items():
        table[tissue] = amplitude
    return table


@dataclass(frozen=True)
class Diaphragm:
    """Two domes under the lungs: ``z = base + height * bump(x, y)`` per side (reference mm, then scaled)."""

    scale: np.ndarray
    base: float
    right_height: float
    left_height: float

    def height_mm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Diaphragm z (mm) over (x, y); broadcastable."""
        xr, yr = x / self.scale[0], y / self.scale[1]
        bump = np.maximum(0.0, 1.0 - ((np.abs(xr) - 62.0) / 75.0) ** 2 - ((yr - 5.0) / 95.0) ** 2)
        height = np.where(xr < 0, self.right_height, self.left_height)
        return ((self.base + height * bump) * self.scale[2]).astype(np.float32)


class Chest:
    """One case's chest geometry in millimetres, drawn at random around the reference anatomy.

    Attributes:
        scale: per-axis factor from reference to actual millimetres (field size times body size).
        radius_scale: factor applied to tube radii (geometric mean of ``scale``).
    """

    def __init__(self, grid: Grid, rng: np.random.Generator) -> None:
        body = rng.uniform(0.9, 1.0)
        self.grid = grid
        self.scale = grid.field_mm / REFERENCE_FIELD_MM * body
        self.radius_scale = float(np.cbrt(np.prod(self.scale)))
        self._rng = rng
        s2 = self.scale[:2]

        def ellipse(center: tuple[float, float], semi: tuple[float, float]) -> Ellipse:
            return Ellipse(np.asarray(center) * s2, np.asarray(semi) * s2)

        self.torso = ellipse((0.0, 5.0), (172.0, 125.0))
        self.muscle = ellipse((0.0, 5.0), (158.0, 111.0))
        self.rib_outer = ellipse((0.0, 5.0), (139.0, 95.0))
        self.cavity = ellipse((0.0, 5.0), (128.0, 84.0))
        self.sternum = ellipse((0.0, -91.0), (15.0, 6.0))
        self.vertebra = ellipse((0.0, 74.0), (17.0, 15.0))
        self.vertebra_core = ellipse((0.0, 74.0), (14.0, 12.0))
        self.arch = ellipse((0.0, 100.0), (14.0, 13.0))
        self.canal = ellipse((0.0, 100.0), (7.5, 7.0))
        self.spinous = ellipse((0.0, 120.0), (4.0, 10.0))
        self.diaphragm = Diaphragm(self.scale, -135.0, rng.uniform(52.0, 62.0), rng.uniform(42.0, 52.0))
        self.lungs = (
            self.ellipsoid((-72.0, 8.0, 5.0), (54.0, 80.0, 150.0), jitter=3.0),
            self.ellipsoid((74.0, 10.0, 0.0), (52.0, 78.0, 145.0), jitter=3.0),
        )
        heart_shift = rng.normal(0.0, 3.0, size=3)
        self.pericardium = self.ellipsoid((15.0, -30.0, -58.0), (66.0, 54.0, 54.0), shift=heart_shift)
        self.myocardium = self.ellipsoid((15.0, -30.0, -58.0), (60.0, 48.0, 48.0), shift=heart_shift)
        self.right_ventricle = self.ellipsoid((2.0, -47.0, -54.0), (30.0, 20.0, 36.0), shift=heart_shift)
        self.left_ventricle = self.ellipsoid((38.0, -28.0, -58.0), (24.0, 22.0, 32.0), shift=heart_shift)
        self.heart_shift = heart_shift
        self.aorta = self.tube_chain(
            [
                (-26.0, -36.0, -50.0),
                (-22.0, -32.0, 48.0),
                (20.0, -24.0, 70.0),
                (28.0, 34.0, 58.0),
                (26.0, 44.0, -170.0),
            ],
            [15.0, 14.0, 13.0, 12.0],
        )
        self.airways = (
            *self.tube_chain([(0.0, -2.0, 175.0), (0.0, 5.0, 45.0)], [9.0]),
            *self.tube_chain([(0.0, 5.0, 45.0), (-30.0, 12.0, 28.0)], [7.0]),
            *self.tube_chain([(0.0, 5.0, 45.0), (34.0, 18.0, 26.0)], [6.5]),
        )
        self.rib_levels = np.arange(-140.0, 160.0, 26.0) + rng.uniform(-6.0, 6.0)
        self.disc_levels = np.arange(-150.0, 170.0, 28.0) + rng.uniform(-6.0, 6.0)

    # -- construction helpers -------------------------------------------------------------------------------

    def point(self, reference_mm: tuple[float, float, float] | np.ndarray, jitter: float = 0.0) -> np.ndarray:
        """A reference-frame point in actual mm, optionally moved by N(0, ``jitter``) reference mm per axis."""
        p = np.asarray(reference_mm, dtype=np.float64)
        if jitter:
            p = p + self._rng.normal(0.0, jitter, size=3)
        return p * self.scale

    def ellipsoid(
        self,
        center: tuple[float, float, float],
        semi: tuple[float, float, float],
        *,
        jitter: float = 0.0,
        shift: np.ndarray | None = None,
    ) -> Ellipsoid:
        moved = np.asarray(center) + (0.0 if shift is None else shift)
        return Ellipsoid(self.point(moved, jitter), np.asarray(semi) * self.scale)

    def tube_chain(self, points: list[tuple[float, float, float]], radii: list[float]) -> tuple[Capsule, ...]:
        """Capsules joining consecutive reference points, with reference radii."""
        ends = [self.point(p) for p in points]
        return tuple(
            Capsule(a, b, r * self.radius_scale) for a, b, r in zip(ends[:-1], ends[1:], radii, strict=True)
        )

    # -- queries used to grow the artery tree -----------------------------------------------------------------

    def in_lung(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether points ``(n, 3)`` (mm) lie inside a lung, at least about ``margin`` mm from its edge."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        inside = np.zeros(len(p), dtype=bool)
        for lung in self.lungs:
            shrunk = Ellipsoid(lung.center, np.maximum(lung.semi_axes - margin, 1.0))
            inside |= shrunk.contains(x, y, z)
        inside &= self.cavity.inset(margin).contains(x, y)
        inside &= ~self.vertebra.contains(x, y)
        inside &= z > self.diaphragm.height_mm(x, y) + margin
        grown = Ellipsoid(self.pericardium.center, self.pericardium.semi_axes + margin)
        inside &= ~grown.contains(x, y, z)
        for tube in self.aorta:
            inside &= tube.axial_and_distance(x, y, z)[1] > tube.radius + margin
        return inside

    # -- rendering --------------------------------------------------------------------------------------------

    def render(self) -> np.ndarray:
        """The tissue map (uint8, indexed ``[i, j, k]``) of this chest on its grid."""
        grid = self.grid
        x2 = grid.axis(0)[:, None]
        y2 = grid.axis(1)[None, :]
        axial = self._axial_template(x2, y2)
        tissues = np.repeat(axial[:, :, None], grid.shape[2], axis=2)
        self._draw_discs(tissues, x2, y2)
        self._draw_ribs(tissues, x2, y2)
        lung_room = self.cavity.contains(x2, y2) & ~self.vertebra.contains(x2, y2)
        diaphragm = self.diaphragm.height_mm(x2, y2)
        z = grid.axis(2)[None, None, :]
        tissues[lung_room[:, :, None] & (z < diaphragm[:, :, None])] = Tissue.ABDOMEN
        for lung in self.lungs:
            self._draw_lung(tissues, lung, lung_room, diaphragm)
        for shape, tissue in (
            (self.pericardium, Tissue.FAT),
            (self.myocardium, Tissue.MYOCARDIUM),
            (self.left_ventricle, Tissue.SYSTEMIC_BLOOD),
            (self.right_ventricle, Tissue.RIGHT_HEART_BLOOD),
        ):
            self._draw(tissues, shape.bounds(), shape.contains, tissue)
        for tube in self.aorta:
            self._draw(tissues, tube.bounds(), tube.contains, Tissue.SYSTEMIC_BLOOD)
        for tube in self.airways:
            self._draw(tissues, tube.bounds(), tube.contains, Tissue.AIRWAY)
        return tissues

    def _axial_template(self, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
        """One axial slice of everything that does not change along z (torso layers, spine, sternum)."""
        layers = (
            (self.torso, Tissue.FAT),
            (self.muscle, Tissue.MUSCLE),
            (self.cavity, Tissue.FAT),  # mediastinal fat; lungs and organs are drawn over it
            (self.sternum, Tissue.CORTICAL_BONE),
            (self.vertebra, Tissue.CORTICAL_BONE),
            (self.vertebra_core, Tissue.BONE),
            (self.arch, Tissue.CORTICAL_BONE),
            (self.canal, Tissue.CSF),
            (self.spinous, Tissue.CORTICAL_BONE),
        )
        axial = np.full((x2.shape[0], y2.shape[1]), Tissue.AIR, dtype=np.uint8)
        for shape, tissue in layers:
            axial[shape.contains(x2, y2)] = tissue
        return axial

    def _slab(self, center_mm: float, half_mm: float) -> slice:
        """Index range along k of the slab ``center +- half`` (may be empty)."""
        grid = self.grid
        low = int(np.ceil((center_mm - half_mm - grid.origin[2]) / grid.spacing[2]))
        high = int(np.floor((center_mm + half_mm - grid.origin[2]) / grid.spacing[2])) + 1
        return slice(max(low, 0), min(max(high, 0), grid.shape[2]))

    def _draw_discs(self, tissues: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> None:
        """Intervertebral discs: thin slabs of the vertebral body drawn as soft tissue."""
        body = self.vertebra.contains(x2, y2)
        half = max(2.5 * self.scale[2], 0.5 * self.grid.spacing[2])
        for level in self.disc_levels * self.scale[2]:
            view = tissues[:, :, self._slab(level, half)]
            view[body] = Tissue.DISC

    def _draw_ribs(self, tissues: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> None:
        """Ribs: a ring just outside the thoracic cavity, open anteriorly, sloping down towards the front."""
        ring = self.rib_outer.contains(x2, y2) & ~self.cavity.contains(x2, y2)
        angle = np.arctan2(x2 / self.scale[0], -(y2 - self.cavity.center[1]) / self.scale[1])
        ring &= np.abs(angle) > np.deg2rad(35.0)  # costal cartilage and sternum in front
        ii, jj = np.nonzero(ring)
        y_rel = (self.grid.axis(1)[jj] - self.cavity.center[1]) / self.cavity.semi_axes[
            1
        ]  # -1 front .. 1 back
        drop = (1.0 - y_rel) * 14.0 * self.scale[2]  # anterior ends are lower
        half = max(4.5 * self.scale[2], 0.5 * self.grid.spacing[2])
        spacing, origin = self.grid.spacing[2], self.grid.origin[2]
        offsets = np.arange(-int(np.ceil(half / spacing)), int(np.ceil(half / spacing)) + 1)
        for level in self.rib_levels * self.scale[2]:
            centre = (level - drop - origin) / spacing
            kk = np.rint(centre)[:, None] + offsets[None, :]
            keep = (np.abs(kk - centre[:, None]) * spacing <= half) & (kk >= 0) & (kk < self.grid.shape[2])
            rows = np.broadcast_to(np.arange(len(ii))[:, None], kk.shape)[keep]
            tissues[ii[rows], jj[rows], kk[keep].astype(int)] = Tissue.CORTICAL_BONE

    def _draw_lung(
        self, tissues: np.ndarray, lung: Ellipsoid, room: np.ndarray, diaphragm: np.ndarray
    ) -> None:
        box = self.grid.box(*lung.bounds())
        if box is None:
            return
        x, y, z = self.grid.coords(box)
        inside = lung.contains(x, y, z) & room[box[:2]][:, :, None] & (z > diaphragm[box[:2]][:, :, None])
        tissues[box][inside] = Tissue.LUNG

    def _draw(
        self,
        tissues: np.ndarray,
        bounds: tuple[np.ndarray, np.ndarray],
        contains: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        tissue: Tissue,
    ) -> None:
        """Set ``tissue`` where ``contains`` holds, evaluated on the index box of ``bounds`` only."""
        box = self.grid.box(*bounds)
        if box is not None:
            tissues[box][contains(*self.grid.coords(box))] = tissue
