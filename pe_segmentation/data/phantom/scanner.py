"""Scanner variety of the ``clinical`` phantom profile: grid, slice thickness, kernel, noise, contrast, artefacts.

Real CTPAs differ in ways a model must neither mistake for emboli nor let hide them. The ``clinical`` profile
draws, per case and from the case's seed, one :class:`ScannerDraw` from the documented ranges of a
:class:`ScannerProfile`; the ``uniform`` profile draws nothing and keeps the fixed grid and look.

Ranges and their sources (:data:`CLINICAL`):

* grid: in-plane spacing 0.49-1.09 mm (median 0.74) and slice spacing 0.5-5 mm (median 2.5), the
  fingerprint of a published nnU-Net PE model's 430 CTPAs (see ``/work/shared/DESIGN.md``, domain facts).
  Each is drawn from a split triangular law: half the mass on each side of the median, each side a triangle
  peaking at the median, so the median is exact and both ends are reached. The field of view is a real
  chest's: 320-400 mm in-plane, 250-350 mm along z (apex to the costophrenic angles with margin); the shape is
  ``round(field / spacing)``.
* slice thickness: 1.0-1.5 x the slice spacing (thickness >= spacing, overlapping reconstruction), rendered
  as averaging along z (a Gaussian of FWHM = thickness).
* reconstruction kernel: ``soft`` (smooth, blotchy noise), ``standard`` or ``sharp`` (edge enhancement by
  unsharp masking, fine-grained noise). The noise is added before the kernel, as in filtered back
  projection, so the kernel shapes its texture; ``noise_hu`` is the final image's noise SD (soft 8-20 HU,
  standard 12-28 HU, sharp 20-45 HU; typical aortic ROI SDs of CTPA).
* contrast timing: pulmonary trunk 150-600 HU (the right heart and pulmonary arteries; truncated normal,
  mean 340, SD 100, as trunk attenuation is reported on CTPA; under about 200 HU a scan is non-diagnostic,
  and such scans exist). The left heart and aorta follow the phase: ``early`` (20%: aorta 0.3-0.55 x trunk,
  pulmonary veins still unopacified), ``pulmonary`` (65%: 0.55-0.9 x trunk), ``late`` (15%: 0.9-1.25 x).
* superior vena cava: dense undiluted contrast from an arm injection (85% of scans, 600-2500 HU) with
  beam-hardening streaks radiating from it across the right hilum (70% of those, 60-300 HU peak).
* motion: 40% of scans blur the lower lobes (breathing, and cardiac pulsation near the heart) by 2-8 mm,
  fading out towards the hila.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from pe_segmentation.data.phantom.anatomy import Chest, Tissue
from pe_segmentation.data.phantom.filters import add_normal_noise, correlate_first_axis, dilate, slabs
from pe_segmentation.data.phantom.geometry import Capsule, Grid

PROFILES = ("uniform", "clinical")
KERNELS = ("soft", "standard", "sharp")
PHASES = ("early", "pulmonary", "late")
_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))
_PARTIAL_VOLUME_VOXELS = 0.5  # Gaussian sigma (voxels) of point sampling's partial volume


@dataclass(frozen=True)
class ScannerProfile:
    """Documented ranges one :class:`ScannerDraw` comes from (see the module docstring for sources).

    Triples are ``(low, median, high)``, pairs ``(low, high)`` of a uniform draw.
    """

    inplane_spacing_mm: tuple[float, float, float] = (0.49, 0.74, 1.09)
    slice_spacing_mm: tuple[float, float, float] = (0.5, 2.5, 5.0)
    field_inplane_mm: tuple[float, float] = (320.0, 400.0)
    field_z_mm: tuple[float, float] = (250.0, 350.0)
    thickness_ratio: tuple[float, float] = (1.0, 1.5)
    kernel_probabilities: tuple[float, float, float] = (0.3, 0.45, 0.25)  # soft, standard, sharp
    noise_hu: tuple[tuple[float, float], ...] = ((8.0, 20.0), (12.0, 28.0), (20.0, 45.0))  # per kernel
    kernel_sigma_mm: tuple[float, float, float] = (0.9, 0.6, 0.35)  # in-plane resolution blur per kernel
    kernel_enhancement: tuple[float, float, float] = (0.0, 0.25, 0.8)  # unsharp-mask gain per kernel
    trunk_hu: tuple[float, float] = (150.0, 600.0)
    trunk_hu_mean_sd: tuple[float, float] = (340.0, 100.0)
    phase_probabilities: tuple[float, float, float] = (0.2, 0.65, 0.15)  # early, pulmonary, late
    systemic_ratio: tuple[tuple[float, float], ...] = ((0.3, 0.55), (0.55, 0.9), (0.9, 1.25))  # per phase
    unenhanced_blood_hu: tuple[float, float] = (35.0, 60.0)
    svc_probability: float = 0.85
    svc_hu: tuple[float, float] = (600.0, 2500.0)
    streak_probability: float = 0.7
    streak_hu: tuple[float, float] = (60.0, 300.0)
    motion_probability: float = 0.4
    motion_mm: tuple[float, float] = (2.0, 8.0)


CLINICAL = ScannerProfile()


@dataclass(frozen=True)
class ScannerDraw:
    """One case's scanner, contrast and artefacts (recorded in the datalist as ``scanner``).

    Attributes:
        shape: voxels along i, j, k.
        spacing: voxel size in mm (in-plane, in-plane, slice spacing).
        field_mm: field of view in mm.
        thickness_mm: reconstructed slice thickness (>= the slice spacing).
        kernel: ``soft``, ``standard`` or ``sharp``.
        noise_hu: noise SD of the final image (HU).
        trunk_hu: attenuation of the pulmonary trunk, right heart and pulmonary arteries.
        phase: ``early``, ``pulmonary`` or ``late``.
        systemic_hu: left heart and aorta.
        vein_hu: pulmonary veins (unopacified blood in the early phase, else as the left heart).
        svc_hu: superior vena cava (0 when it holds no dense contrast).
        streaks_hu: peak of the SVC's streak artefacts (0: none).
        motion_mm: extent of the lower lobes' motion blur (0: none).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    field_mm: tuple[float, float, float]
    thickness_mm: float
    kernel: str
    noise_hu: float
    trunk_hu: float
    phase: str
    systemic_hu: float
    vein_hu: float
    svc_hu: float
    streaks_hu: float
    motion_mm: float

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, self.spacing)

    @property
    def streaks(self) -> bool:
        return self.streaks_hu > 0

    def to_dict(self) -> dict:
        """JSON-ready mapping, rounded for reading."""
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["spacing"] = [round(v, 4) for v in self.spacing]
        data["field_mm"] = [round(v, 1) for v in self.field_mm]
        for key in ("thickness_mm", "noise_hu", "trunk_hu", "systemic_hu", "vein_hu", "svc_hu", "streaks_hu"):
            data[key] = round(float(data[key]), 2)
        data["motion_mm"] = round(self.motion_mm, 2)
        data["streaks"] = self.streaks
        data["motion"] = self.motion_mm > 0
        return data


def split_triangular(rng: np.random.Generator, low: float, median: float, high: float) -> float:
    """A draw in ``[low, high]`` whose median is ``median``: half on each side, each side peaking there."""
    side, u = rng.random(), rng.random()
    if side < 0.5:
        return low + (median - low) * math.sqrt(u)
    return high - (high - median) * math.sqrt(u)


def draw_scanner(
    rng: np.random.Generator,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    profile: ScannerProfile = CLINICAL,
) -> ScannerDraw:
    """Draw one case's scanner.

    The grid: with neither ``shape`` nor ``spacing`` both are drawn (spacing from the ranges, the field of view
    from a real chest's, shape = field / spacing); a ``spacing`` alone fixes the spacing and draws the field; a
    ``shape`` alone fixes the voxel counts and draws the field (spacing = field / shape, outside the clinical
    ranges for small shapes); both fix the grid. Everything else is drawn in every case.
    """
    p = profile
    field_xy = rng.uniform(*p.field_inplane_mm)
    field = np.array([field_xy, field_xy, rng.uniform(*p.field_z_mm)])
    if spacing is None:
        inplane = round(split_triangular(rng, *p.inplane_spacing_mm), 3)
        drawn = np.array([inplane, inplane, round(split_triangular(rng, *p.slice_spacing_mm), 3)])
    else:
        drawn = np.asarray(spacing, dtype=np.float64)
    if shape is None:
        counts = np.maximum(np.rint(field / drawn).astype(int), 1)
        steps = drawn
    else:
        counts = np.asarray(shape, dtype=int)
        steps = drawn if spacing is not None else np.round(field / counts, 4)
    grid_shape = (int(counts[0]), int(counts[1]), int(counts[2]))
    grid_spacing = (float(steps[0]), float(steps[1]), float(steps[2]))
    thickness = grid_spacing[2] * rng.uniform(*p.thickness_ratio)
    kernel_index = int(rng.choice(len(KERNELS), p=p.kernel_probabilities))
    noise = rng.uniform(*p.noise_hu[kernel_index])
    trunk = _truncated_normal(rng, *p.trunk_hu_mean_sd, *p.trunk_hu)
    phase_index = int(rng.choice(len(PHASES), p=p.phase_probabilities))
    systemic = max(trunk * rng.uniform(*p.systemic_ratio[phase_index]), p.unenhanced_blood_hu[1])
    unenhanced = rng.uniform(*p.unenhanced_blood_hu)
    vein = unenhanced if PHASES[phase_index] == "early" else systemic
    svc = rng.uniform(*p.svc_hu) if rng.random() < p.svc_probability else 0.0
    streaks = rng.uniform(*p.streak_hu) if svc > 0 and rng.random() < p.streak_probability else 0.0
    motion = rng.uniform(*p.motion_mm) if rng.random() < p.motion_probability else 0.0
    return ScannerDraw(
        shape=grid_shape,
        spacing=grid_spacing,
        field_mm=(
            float(grid_shape[0] * grid_spacing[0]),
            float(grid_shape[1] * grid_spacing[1]),
            float(grid_shape[2] * grid_spacing[2]),
        ),
        thickness_mm=float(thickness),
        kernel=KERNELS[kernel_index],
        noise_hu=float(noise),
        trunk_hu=float(trunk),
        phase=PHASES[phase_index],
        systemic_hu=float(systemic),
        vein_hu=float(vein),
        svc_hu=float(svc),
        streaks_hu=float(streaks),
        motion_mm=float(motion),
    )


def _truncated_normal(rng: np.random.Generator, mean: float, sd: float, low: float, high: float) -> float:
    for _ in range(100):
        value = rng.normal(mean, sd)
        if low <= value <= high:
            return float(value)
    return float(np.clip(mean, low, high))


# -- the superior vena cava -----------------------------------------------------------------------------------


def superior_vena_cava(chest: Chest) -> Capsule:
    """The SVC: right of the ascending aorta, from the top of the chest down into the right atrium (mm)."""
    top = chest.point((-44.0, -22.0, 175.0))
    bottom = chest.point((-40.0, -30.0, -20.0))
    return Capsule(top, bottom, 9.0 * chest.radius_scale)


def paint_svc(tissues: np.ndarray, grid: Grid, svc: Capsule) -> None:
    """Draw the SVC as :attr:`Tissue.SVC_CONTRAST` over mediastinal fat and lung only."""
    box = grid.box(*svc.bounds())
    if box is None:
        return
    view = tissues[box]
    inside = svc.contains(*grid.coords(box)) & ((view == Tissue.FAT) | (view == Tissue.LUNG))
    view[inside] = Tissue.SVC_CONTRAST


def set_contrast(table: np.ndarray, draw: ScannerDraw) -> None:
    """Put the draw's contrast timing into a per-case HU table indexed by :class:`Tissue`."""
    table[Tissue.PULMONARY_ARTERY] = draw.trunk_hu
    table[Tissue.RIGHT_HEART_BLOOD] = draw.trunk_hu
    table[Tissue.SYSTEMIC_BLOOD] = draw.systemic_hu
    table[Tissue.PULMONARY_VEIN] = draw.vein_hu
    table[Tissue.SVC_CONTRAST] = draw.svc_hu if draw.svc_hu > 0 else draw.systemic_hu * 0.5 + 20.0


# -- acquisition: motion, noise, kernel, thickness, streaks ---------------------------------------------------


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3.0 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


def _pad(kernel: np.ndarray, radius: int) -> np.ndarray:
    extra = radius - kernel.size // 2
    return np.pad(kernel, extra) if extra > 0 else kernel


def axis_kernels(draw: ScannerDraw) -> tuple[np.ndarray, np.ndarray]:
    """1D filters of the reconstruction: in-plane (kernel blur and edge enhancement) and along z (thickness)."""
    index = KERNELS.index(draw.kernel)
    spacing_xy, spacing_z = draw.spacing[0], draw.spacing[2]
    sigma = math.hypot(_PARTIAL_VOLUME_VOXELS, CLINICAL.kernel_sigma_mm[index] / spacing_xy)
    gain = CLINICAL.kernel_enhancement[index]
    inplane = _gaussian_kernel(sigma)
    if gain > 0:
        wide = _gaussian_kernel(max(2.5 * sigma, 1.0))
        radius = wide.size // 2
        inplane = (1.0 + gain) * _pad(inplane, radius) - gain * _pad(wide, max(radius, inplane.size // 2))
    sigma_z = math.hypot(_PARTIAL_VOLUME_VOXELS, draw.thickness_mm / _FWHM / spacing_z)
    return inplane.astype(np.float32), _gaussian_kernel(sigma_z).astype(np.float32)


def acquire(
    hu: np.ndarray,
    tissues: np.ndarray,
    grid: Grid,
    draw: ScannerDraw,
    svc: Capsule,
    diaphragm_top_mm: float,
    rng: np.random.Generator,
) -> None:
    """Turn a tissue HU volume (float32, in place) into a reconstructed image of ``draw``'s scanner.

    Order as in a scan: motion blur of the object, then noise, then the reconstruction filter (kernel in-plane,
    slice thickness along z) shaping both, then the SVC's streaks. All of it runs slab by slab
    (:mod:`.filters`): noise and the filters along j and k on each slab in turn, then the filter along i.
    """
    if draw.motion_mm > 0:
        _motion_blur(hu, tissues, grid, draw.motion_mm, diaphragm_top_mm)
    inplane, along_z = axis_kernels(draw)
    noise_sd = 0.0
    if draw.noise_hu > 0:
        gain = math.sqrt(float(np.sum(inplane.astype(np.float64) ** 2))) ** 2
        gain *= math.sqrt(float(np.sum(along_z.astype(np.float64) ** 2)))
        noise_sd = draw.noise_hu / gain
    for part in slabs(hu.shape):
        block = hu[part]
        if noise_sd > 0:
            add_normal_noise(block, noise_sd, rng)
        ndimage.correlate1d(block, inplane, axis=1, output=block, mode="nearest")
        ndimage.correlate1d(block, along_z, axis=2, output=block, mode="nearest")
    correlate_first_axis(hu, inplane)
    if draw.streaks_hu > 0:
        _add_streaks(hu, grid, svc, draw.streaks_hu, rng)


def _motion_blur(
    hu: np.ndarray, tissues: np.ndarray, grid: Grid, motion_mm: float, diaphragm_top_mm: float
) -> None:
    """Blur the lung bases along z and y (breathing and cardiac motion), fading out 60 mm above the domes.

    Moving tissue (:data:`_MOVING`, grown by one voxel) takes the blurred value, weighted by the fade. Nothing
    moves along x, so each slab along i is blurred on its own.
    """
    fade_mm = 60.0
    z = grid.axis(2)
    slab = np.flatnonzero(z <= diaphragm_top_mm + fade_mm)
    if slab.size == 0:
        return
    region = slice(int(slab[0]), int(slab[-1]) + 1)
    sigma_mm = motion_mm / _FWHM
    sigmas = (0.0, 0.5 * sigma_mm / grid.spacing[1], sigma_mm / grid.spacing[2])
    weight = np.clip((diaphragm_top_mm + fade_mm - z[region]) / fade_mm, 0.0, 1.0).astype(np.float32)
    reach = int(2.5 * sigmas[1] + 0.5)  # the blur's radius along j (scipy's, at truncate=2.5)
    n = hu.shape[0]
    for part in slabs(hu.shape):
        low, high = max(part.start - 1, 0), min(part.stop + 1, n)  # one more plane each side for the dilation
        moving = dilate(np.take(_MOVING, tissues[low:high, :, region], mode="wrap"))
        moving = moving[part.start - low : part.stop - low]
        moving_j = np.flatnonzero(moving.any(axis=(0, 2)))
        if moving_j.size == 0:
            continue
        # blur only the columns that move, with the blur's reach: the same values there as blurring it all
        cols = slice(max(int(moving_j[0]) - reach, 0), int(moving_j[-1]) + 1 + reach)
        sub = hu[part][:, cols, region]
        blurred = ndimage.gaussian_filter(sub, sigmas, mode="nearest", truncate=2.5)
        mix = moving[:, cols] * weight[None, None, :]
        sub += (blurred - sub) * mix


_MOVING = np.isin(
    np.arange(len(Tissue)),
    [
        Tissue.LUNG,
        Tissue.PULMONARY_ARTERY,
        Tissue.EMBOLUS,
        Tissue.PULMONARY_VEIN,
        Tissue.MUCUS_BRONCHUS,
        Tissue.AIRWAY,
    ],
)  # indexed by Tissue: whether it moves with breathing


def _add_streaks(hu: np.ndarray, grid: Grid, svc: Capsule, peak_hu: float, rng: np.random.Generator) -> None:
    """Bright and dark lines through the SVC in the slices it fills with dense contrast, fading with distance."""
    z = grid.axis(2)
    low, high = sorted((svc.start[2], svc.end[2]))
    rows = np.flatnonzero((z >= low) & (z <= high))
    if rows.size == 0:
        return
    x = grid.axis(0)[:, None]
    y = grid.axis(1)[None, :]
    centre = (svc.start + svc.end) / 2.0
    dx, dy = x - np.float32(centre[0]), y - np.float32(centre[1])
    r = np.sqrt(dx * dx + dy * dy)
    pattern = np.zeros((grid.shape[0], grid.shape[1]), dtype=np.float32)
    width = max(1.0, 0.8 * grid.spacing[0])
    for angle in rng.uniform(0.0, np.pi, int(rng.integers(6, 14))):
        distance = np.abs(dx * np.float32(math.sin(angle)) - dy * np.float32(math.cos(angle)))
        sign = 1.0 if rng.random() < 0.4 else -1.0  # mostly dark bands, some bright
        pattern += np.float32(sign * rng.uniform(0.4, 1.0)) * np.exp(-((distance / np.float32(width)) ** 2))
    pattern *= (
        np.float32(peak_hu) * np.minimum(1.0, np.float32(svc.radius * 1.5) / np.maximum(r, 1e-3)) ** 0.7
    )
    pattern[r > 150.0] = 0.0
    region = slice(int(rows[0]), int(rows[-1]) + 1)
    hu[:, :, region] += pattern[:, :, None]


@dataclass(frozen=True, eq=False)
class Acquisition:
    """What the image renderer needs of a clinical case: the draw, the SVC, the domes and the mimics' HU."""

    draw: ScannerDraw
    svc: Capsule
    diaphragm_top_mm: float
    extra_hu: dict[Tissue, float]

    def set_table(self, table: np.ndarray) -> None:
        """Overwrite the per-case HU table with this scan's contrast timing and its mimics' HU."""
        set_contrast(table, self.draw)
        for tissue, value in self.extra_hu.items():
            table[tissue] = value

    def acquire(self, hu: np.ndarray, tissues: np.ndarray, grid: Grid, rng: np.random.Generator) -> None:
        """Motion, noise, kernel, thickness and streaks, in place (see :func:`acquire`)."""
        acquire(hu, tissues, grid, self.draw, self.svc, self.diaphragm_top_mm, rng)


def diaphragm_top_mm(chest: Chest) -> float:
    """Height (mm) of the higher diaphragm dome."""
    scale = chest.scale
    x = np.array([-62.0 * scale[0], 62.0 * scale[0]])
    y = np.array([5.0 * scale[1], 5.0 * scale[1]])
    return float(chest.diaphragm.height_mm(x, y).max())
