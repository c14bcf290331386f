"""One synthetic CTPA phantom: settings, the generator and its result.

:func:`generate_phantom` draws a chest (:mod:`.anatomy`), grows the pulmonary artery tree (:mod:`.vessels`),
places emboli in it (:mod:`.emboli`), looks up per-case tissue HU, adds a smooth texture, gives each clot its
sub-voxel edge (:func:`.emboli.clot_edges`), blurs by a fraction of a voxel (partial volume) and adds Gaussian
noise. Everything random comes from one generator in a fixed
order, so a seed gives the same arrays on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
from scipy import ndimage

from pe_segmentation.data.phantom.anatomy import (
    REFERENCE_FIELD_MM,
    Chest,
    Tissue,
    tissue_hu,
)
from pe_segmentation.data.phantom.emboli import EmbolusInfo, clot_edges, place_emboli, with_label_hu
from pe_segmentation.data.phantom.geometry import Grid
from pe_segmentation.data.phantom.mimics import MimicInfo, paint_mimics
from pe_segmentation.data.phantom.scanner import (
    CLINICAL,
    PROFILES,
    Acquisition,
    ScannerDraw,
    diaphragm_top_mm,
    draw_scanner,
    paint_svc,
    superior_vena_cava,
)
from pe_segmentation.data.phantom.texture import textured_hu
from pe_segmentation.data.phantom.vessels import Branch, build_tree, render_lumen
from pe_segmentation.errors import ConfigError
from pe_segmentation.io.volume import Volume

DEFAULT_SHAPE = (256, 256, 200)
DEFAULT_SPACING = (1.4, 1.4, 1.6)
MIN_SHAPE = 32
MAX_SHAPE = 1024
FIELD_SCALE_RANGE = (0.4, 2.5)  # field of view relative to the reference 360 x 360 x 320 mm chest
HU_RANGE = (-1024, 3071)  # what the int16 image holds (12-bit CT range)

LABEL_BACKGROUND = 0
LABEL_EMBOLUS = 1
LABEL_VESSEL = 2
LABEL_VEIN = 3
LABEL_NAMES = {
    LABEL_BACKGROUND: "background",
    LABEL_EMBOLUS: "embolus",
    LABEL_VESSEL: "pulmonary artery",
    LABEL_VEIN: "pulmonary vein",
}

RandomSource = int | np.random.Generator | np.random.SeedSequence
_Number = TypeVar("_Number", int, float)


def _fmt(values: tuple[float, ...], unit: str = "") -> str:
    return "x".join(f"{v:g}" for v in values) + unit


@dataclass(frozen=True)
class PhantomSettings:
    """How a phantom is sampled.

    Attributes:
        shape: voxels along i (patient right to left), j (anterior to posterior), k (inferior to superior).
        spacing: voxel size in mm along i, j, k. The chest is scaled to the field of view ``shape * spacing``
            (each axis 144 to 900 mm for x and y, 128 to 800 mm for z, the reference chest being 360 x 360 x
            320 mm), so changing only the spacing or only the shape changes the sampling, not the anatomy
            relative to the field.
        noise_hu: standard deviation of the added Gaussian noise (HU); 0 gives a noise-free image.
        blur_sigma: Gaussian partial-volume blur in voxels; 0 keeps the hard-edged tissue values.
        vessel_label: label patent pulmonary artery lumen as 2 and, in the ``clinical`` profile (which draws
            them), the pulmonary veins as 3 (emboli stay 1). A network that learns the veins as a class of their
            own tells an unopacified vein (early phase: as dark as a clot) from an occluded artery.
        emboli_per_case: inclusive range of the number of emboli per case, drawn uniformly in it; ``None``
            (the default) draws it from FUMPE's per-patient counts (1-15, median 2; see :mod:`.emboli`).
        profile: ``"uniform"`` (default): the fixed grid above and one look (``noise_hu``, ``blur_sigma``).
            ``"clinical"``: every case draws its scanner (grid, slice thickness, kernel, noise, contrast
            timing, SVC streaks, motion; :mod:`.scanner`), pulmonary veins and PE mimics (:mod:`.mimics`).
            There ``shape`` and ``spacing`` default to ``None`` (drawn): a ``spacing`` alone fixes the spacing
            and draws a real chest's field of view, a ``shape`` alone fixes the voxel counts (spacing = drawn
            field / shape), both fix the grid. ``noise_hu`` and ``blur_sigma`` are not used (the scanner draws
            noise and kernel).
    """

    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    noise_hu: float = 15.0
    blur_sigma: float = 0.6
    vessel_label: bool = False
    emboli_per_case: tuple[int, int] | None = None
    profile: str = "uniform"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"phantom profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        clinical = self.profile == "clinical"
        if self.shape is not None or not clinical:
            object.__setattr__(self, "shape", self._triple("shape", self.shape or DEFAULT_SHAPE, int))
        if self.spacing is not None or not clinical:
            object.__setattr__(
                self, "spacing", self._triple("spacing", self.spacing or DEFAULT_SPACING, float)
            )
        if self.emboli_per_case is not None and not isinstance(self.emboli_per_case, (list, tuple)):
            raise ConfigError(f"phantom emboli_per_case must be [low, high], got {self.emboli_per_case!r}")
        if self.emboli_per_case is not None:
            object.__setattr__(self, "emboli_per_case", tuple(self.emboli_per_case))
        if self.shape is not None and any(n < MIN_SHAPE or n > MAX_SHAPE for n in self.shape):
            raise ConfigError(
                f"phantom shape {_fmt(self.shape)} is out of range: each axis needs {MIN_SHAPE} to {MAX_SHAPE} voxels"
            )
        if self.spacing is not None and any(not math.isfinite(s) or s <= 0 for s in self.spacing):
            raise ConfigError(f"phantom spacing {_fmt(self.spacing)} mm must be positive")
        if self.shape is not None and self.spacing is not None:
            self._check_field()
        elif self.spacing is not None:
            self._check_clinical_spacing(self.spacing)
        for name, value, high in (("noise_hu", self.noise_hu, 200.0), ("blur_sigma", self.blur_sigma, 3.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
                raise ConfigError(f"phantom {name} must be a number in [0, {high:g}], got {value!r}")
        if not isinstance(self.vessel_label, bool):
            raise ConfigError(f"phantom vessel_label must be true or false, got {self.vessel_label!r}")
        per_case = self.emboli_per_case
        if per_case is not None and not (
            len(per_case) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in per_case)
            and 1 <= per_case[0] <= per_case[1] <= 50
        ):
            raise ConfigError(
                f"phantom emboli_per_case must be [low, high] with 1 <= low <= high <= 50, got {per_case!r}"
            )

    @staticmethod
    def _triple(name: str, value: object, kind: Callable[[Any], _Number]) -> tuple[_Number, _Number, _Number]:
        try:
            items = tuple(cast(Iterable[Any], value))  # not iterable: TypeError, reported below
            if len(items) != 3 or any(isinstance(v, bool) for v in items):
                raise TypeError
            x, y, z = (kind(v) for v in items)
        except (TypeError, ValueError):
            raise ConfigError(f"phantom {name} must be three numbers, got {value!r}") from None
        if kind is int and (x, y, z) != tuple(float(v) for v in items):
            raise ConfigError(f"phantom {name} must be three integers, got {value!r}")
        return (x, y, z)

    @staticmethod
    def _check_clinical_spacing(spacing: tuple[float, float, float]) -> None:
        """A fixed spacing under a drawn field of view must give 32 to 1024 voxels per axis."""
        fields = (CLINICAL.field_inplane_mm, CLINICAL.field_inplane_mm, CLINICAL.field_z_mm)
        for step, (low, high) in zip(spacing, fields, strict=True):
            if round(low / step) < MIN_SHAPE or round(high / step) > MAX_SHAPE:
                raise ConfigError(
                    f"phantom spacing {_fmt(spacing)} mm does not fit the clinical profile's field of view "
                    f"({CLINICAL.field_inplane_mm[0]:g}-{CLINICAL.field_inplane_mm[1]:g} mm in-plane, "
                    f"{CLINICAL.field_z_mm[0]:g}-{CLINICAL.field_z_mm[1]:g} mm along z) in {MIN_SHAPE} to "
                    f"{MAX_SHAPE} voxels per axis"
                )

    def _check_field(self) -> None:
        field_mm = self.grid.field_mm
        scale = field_mm / REFERENCE_FIELD_MM
        low, high = FIELD_SCALE_RANGE
        if np.any(scale < low):
            need = _fmt(tuple(round(v) for v in REFERENCE_FIELD_MM * low), " mm")
            raise ConfigError(
                f"phantom field of view {_fmt(tuple(round(v) for v in field_mm), ' mm')} is too small to hold the "
                f"chest (needs at least {need}); raise the shape or the spacing"
            )
        if np.any(scale > high):
            most = _fmt(tuple(round(v) for v in REFERENCE_FIELD_MM * high), " mm")
            raise ConfigError(
                f"phantom field of view {_fmt(tuple(round(v) for v in field_mm), ' mm')} is larger than {most}; "
                "lower the shape or the spacing"
            )
        if scale.max() / scale.min() > 2.0:
            raise ConfigError(
                f"phantom field of view {_fmt(tuple(round(v) for v in field_mm), ' mm')} is too far from a chest's "
                "proportions (axes may differ by at most 2x relative to 360 x 360 x 320 mm)"
            )

    @classmethod
    def for_field(
        cls,
        shape: tuple[int, int, int] | None = None,
        spacing: tuple[float, float, float] | None = None,
        **options: Any,
    ) -> PhantomSettings:
        """Settings from a shape and/or a spacing; the missing one keeps the default field of view.

        The default field is ``DEFAULT_SHAPE * DEFAULT_SPACING`` (358 x 358 x 320 mm): a shape alone gets the
        spacing that covers it (e.g. 64 x 64 x 48 -> 5.6 x 5.6 x 6.67 mm), a spacing alone the shape.
        """
        field_mm = np.asarray(DEFAULT_SHAPE) * np.asarray(DEFAULT_SPACING)
        if shape is not None and spacing is None:
            counts = PhantomSettings._triple("shape", shape, int)
            x, y, z = (float(round(f / n, 4)) for f, n in zip(field_mm, counts, strict=True))
            spacing = (x, y, z)
        elif spacing is not None and shape is None:
            steps = PhantomSettings._triple("spacing", spacing, float)
            if any(s <= 0 for s in steps):
                raise ConfigError(f"phantom spacing {_fmt(steps)} mm must be positive")
            i, j, k = (max(1, round(f / s)) for f, s in zip(field_mm, steps, strict=True))
            shape = (i, j, k)
        return cls(shape=shape or DEFAULT_SHAPE, spacing=spacing or DEFAULT_SPACING, **options)

    @property
    def grid(self) -> Grid:
        """The fixed grid; a ``clinical`` profile without both shape and spacing draws it per case instead."""
        if self.shape is None or self.spacing is None:
            raise ConfigError("the clinical profile draws each case's grid; read it from the phantom's image")
        return Grid(self.shape, self.spacing)

    @property
    def fixed_grid(self) -> bool:
        """Whether every case has the same grid (uniform profile, or clinical with shape and spacing)."""
        return self.shape is not None and self.spacing is not None

    def to_dict(self) -> dict:
        """JSON-ready mapping of the settings."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Phantom:
    """A generated case.

    Attributes:
        image: CT in HU (int16), RAS affine of an axial LPS-ordered grid.
        label: uint8 labels (0 background, 1 embolus; with ``vessel_label`` 2 patent pulmonary artery and 3
            pulmonary vein).
        emboli: the emboli, ``emboli[k - 1]`` being value ``k`` of ``instances``.
        vessels: boolean lumen of the pulmonary artery tree (emboli included).
        tissues: uint8 :class:`~pe_segmentation.data.phantom.anatomy.Tissue` map.
        instances: uint8 map of embolus indices (0 none).
        branches: the artery tree.
        settings: the settings used.
        negative: made without emboli (a normal scan).
        scanner: the case's scanner draw (``clinical`` profile; ``None`` for ``uniform``).
        mimics: the PE mimics painted (``clinical`` profile), all label 0.
    """

    image: Volume
    label: Volume
    emboli: list[EmbolusInfo]
    vessels: np.ndarray
    tissues: np.ndarray
    instances: np.ndarray
    branches: list[Branch] = field(repr=False)
    settings: PhantomSettings
    negative: bool = False
    scanner: ScannerDraw | None = None
    mimics: list[MimicInfo] = field(default_factory=list)

    @property
    def grid(self) -> Grid:
        """The case's grid (drawn per case by the clinical profile)."""
        return Grid(
            cast(tuple[int, int, int], tuple(int(n) for n in self.image.array.shape)),
            self.scanner.spacing if self.scanner is not None else self.settings.grid.spacing,
        )


def case_seed(seed: int, index: int) -> np.random.SeedSequence:
    """Seed of case ``index`` of a dataset with ``seed``: the same whether made alone or among others.

    Equal to ``np.random.SeedSequence(seed).spawn(n)[index]`` for any ``n > index``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ConfigError(f"case index must be a non-negative integer, got {index!r}")
    return np.random.SeedSequence(int(seed), spawn_key=(int(index),))


def _generator(source: RandomSource) -> np.random.Generator:
    if isinstance(source, np.random.Generator):
        return source
    if isinstance(source, np.random.SeedSequence):
        return np.random.default_rng(source)
    if isinstance(source, bool) or not isinstance(source, (int, np.integer)) or source < 0:
        raise ConfigError(
            f"seed must be a non-negative integer, a SeedSequence or a Generator, got {source!r}"
        )
    return np.random.default_rng(int(source))


def generate_phantom(
    settings: PhantomSettings | None = None, rng: RandomSource = 0, *, negative: bool = False
) -> Phantom:
    """Generate one synthetic CTPA case.

    Args:
        settings: sampling and output options (default :class:`PhantomSettings`).
        rng: a seed (int), a :class:`numpy.random.SeedSequence` (see :func:`case_seed`) or a generator.
        negative: make a normal scan, without any embolus.

    Returns:
        The :class:`Phantom`: HU image, label, emboli and the maps behind them.
    """
    settings = settings or PhantomSettings()
    rng = _generator(rng)
    clinical = settings.profile == "clinical"
    scanner = draw_scanner(rng, settings.shape, settings.spacing) if clinical else None
    grid = scanner.grid if scanner is not None else settings.grid
    chest = Chest(grid, rng)
    tissues = chest.render()
    svc = superior_vena_cava(chest)
    if scanner is not None:
        paint_svc(tissues, grid, svc)
    branches = build_tree(chest, rng)
    vessels = render_lumen(grid, branches)
    tissues[vessels] = Tissue.PULMONARY_ARTERY
    emboli: list[EmbolusInfo] = []
    if negative:
        instances = np.zeros(grid.shape, dtype=np.uint8)
    else:
        instances, emboli = place_emboli(grid, branches, vessels, rng, settings.emboli_per_case)
    clot_voxels = np.nonzero(instances)
    tissues[clot_voxels] = Tissue.EMBOLUS
    acquisition = mimics = None
    if scanner is not None:
        mimics = paint_mimics(tissues, vessels, instances, grid, chest, branches, scanner, rng)
        acquisition = Acquisition(scanner, svc, diaphragm_top_mm(chest), mimics.hu)
    hu = _hu_image(tissues, instances, clot_voxels, emboli, grid, settings, rng, acquisition)
    emboli = with_label_hu(emboli, hu[clot_voxels], instances[clot_voxels])
    affine = grid.affine()
    image = Volume(hu, affine, {"source": "pe-seg synthetic CTPA phantom"})
    label = _label(instances, vessels, tissues, settings.vessel_label)
    return Phantom(
        image=image,
        label=Volume(
            label, affine.copy(), {"source": "pe-seg synthetic CTPA phantom", "labels": LABEL_NAMES}
        ),
        emboli=emboli,
        vessels=vessels,
        tissues=tissues,
        instances=instances,
        branches=branches,
        settings=settings,
        negative=negative,
        scanner=scanner,
        mimics=mimics.records if mimics is not None else [],
    )


def _hu_image(
    tissues: np.ndarray,
    instances: np.ndarray,
    clot_voxels: tuple[np.ndarray, ...],
    emboli: list[EmbolusInfo],
    grid: Grid,
    settings: PhantomSettings,
    rng: np.random.Generator,
    acquisition: Acquisition | None = None,
) -> np.ndarray:
    """HU (int16) from tissues: per-case table, texture, clot values, partial-volume blur, noise.

    With an ``acquisition`` (clinical profile) its contrast timing and mimic HU overwrite the table, and its
    scanner (motion, noise, kernel, slice thickness, streaks) replaces the uniform blur and noise.
    """
    table = tissue_hu(rng)
    if acquisition is not None:
        acquisition.set_table(table)
    hu = textured_hu(tissues, table, grid, rng)
    if emboli:
        clot_hu = np.array([0.0] + [e.hu for e in emboli], dtype=np.float32)
        hu[clot_voxels] = clot_hu[instances[clot_voxels]]
        clot_edges(hu, instances, clot_hu, clot_voxels)
    if acquisition is not None:
        acquisition.acquire(hu, tissues, grid, rng)
    elif settings.blur_sigma > 0:
        ndimage.gaussian_filter(hu, settings.blur_sigma, output=hu, truncate=3.0)
    if acquisition is None and settings.noise_hu > 0:
        noise = rng.standard_normal(grid.shape, dtype=np.float32)
        noise *= np.float32(settings.noise_hu)
        hu += noise
        del noise
    np.rint(hu, out=hu)
    np.clip(hu, *HU_RANGE, out=hu)
    return hu.astype(np.int16)


def _label(instances: np.ndarray, vessels: np.ndarray, tissues: np.ndarray, vessel_label: bool) -> np.ndarray:
    label = (instances > 0).astype(np.uint8)
    if vessel_label:
        label[vessels & (label == 0)] = LABEL_VESSEL
        label[(tissues == Tissue.PULMONARY_VEIN) & (label == 0)] = LABEL_VEIN
    return label
