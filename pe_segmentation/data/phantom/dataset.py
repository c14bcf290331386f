"""A folder of phantoms: images, labels, optional DICOM series, an MSD-style datalist and a size summary.

Layout of ``generate_dataset(DIR, ...)``::

    DIR/images/phantom_000.nii.gz     CT in HU (int16)           (format "nifti")
    DIR/labels/phantom_000.nii.gz     0 background, 1 embolus (vessel_label: 2 patent artery, 3 vein)
    DIR/dicom/phantom_000/IM00001.dcm one CT series per case      (format "dicom")
    DIR/datalist.json                 paths relative to itself, emboli per case, settings and summary

Case ``i`` is generated from :func:`~pe_segmentation.data.phantom.generator.case_seed` ``(seed, i)``, so it is
the same whether it is made alone or among others. Whether it is a normal scan (no embolus) is decided by
:func:`is_negative` from ``(seed, i, negative_fraction)``, likewise independent of the number of cases.

Each datalist entry says what the case holds: ``profile``, ``negative``, ``mimics`` (kind, location, voxels,
HU, size; all label 0), ``scanner`` (the clinical profile's draw: shape, spacing, field of view, slice
thickness, kernel, noise, trunk/systemic/vein/SVC HU, phase, streaks, motion; ``null`` for ``uniform``),
``shape`` and ``spacing``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pe_segmentation.data.embolus_sizes import CLASS_DEFINITIONS, SIZE_CLASSES
from pe_segmentation.data.phantom.calibration import compare_to_fumpe, format_calibration
from pe_segmentation.data.phantom.emboli import EmbolusInfo
from pe_segmentation.data.phantom.generator import (
    LABEL_NAMES,
    LABEL_VEIN,
    LABEL_VESSEL,
    Phantom,
    PhantomSettings,
    case_seed,
    generate_phantom,
)
from pe_segmentation.data.phantom.mimics import MIMIC_KINDS, MimicInfo
from pe_segmentation.data.phantom.scanner import ScannerDraw
from pe_segmentation.errors import ConfigError, OutputError
from pe_segmentation.io.atomic import atomic_write_text
from pe_segmentation.io.dicom_writer import write_dicom_series
from pe_segmentation.io.volume_files import write_volume

FORMATS = ("nifti", "dicom")
DATALIST_NAME = "datalist.json"
DATASET_NAME = "pe-seg synthetic CTPA"
MAX_CASES = 10000
NEGATIVE_BLOCK = 20  # normal scans are spread over blocks of this many consecutive cases
_NEGATIVE_KEY = 2**32 - 1  # spawn key of the normal-scan draws, apart from the cases' (seed, i)


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"negative fraction must be a number from 0 to 1, got {fraction!r}")
    return float(fraction)


def is_negative(seed: int, index: int, fraction: float) -> bool:
    """Whether case ``index`` of a dataset with ``seed`` is a normal scan (no embolus).

    The rule: a seeded offset ``u`` in [0, 1) fixes how many normal scans each block of
    :data:`NEGATIVE_BLOCK` consecutive cases holds, ``floor(20 (b + 1) f + u) - floor(20 b f + u)`` for block
    ``b``, and a seeded permutation of the block picks which. So the first ``n`` cases hold exactly
    ``floor(n f + u)`` normal scans whenever ``n`` is a multiple of 20 (``n f`` when that is a whole number,
    e.g. 10 of 40 at 0.25), and a case's answer does not depend on how many cases are made.
    """
    fraction = _check_fraction(fraction)
    case_seed(seed, index)  # validates both
    if fraction == 0.0:
        return False
    offset = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_NEGATIVE_KEY,))).random()
    block, position = divmod(int(index), NEGATIVE_BLOCK)
    count = math.floor(NEGATIVE_BLOCK * (block + 1) * fraction + offset) - math.floor(
        NEGATIVE_BLOCK * block * fraction + offset
    )
    order = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_NEGATIVE_KEY, block)))
    return bool(order.permutation(NEGATIVE_BLOCK)[position] < count)


@dataclass(frozen=True)
class CaseRecord:
    """One written case: its name, paths relative to the dataset folder, its emboli, mimics and scanner."""

    name: str
    image: str
    label: str
    dicom: str | None
    emboli: tuple[EmbolusInfo, ...]
    profile: str = "uniform"
    negative: bool = False
    mimics: tuple[MimicInfo, ...] = ()
    scanner: ScannerDraw | None = None
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None

    def to_dict(self) -> dict:
        entry: dict = {"case": self.name, "image": self.image, "label": self.label}
        if self.dicom is not None:
            entry["dicom"] = self.dicom
        entry["emboli"] = [e.to_dict() for e in self.emboli]
        entry["profile"] = self.profile
        entry["negative"] = self.negative
        entry["mimics"] = [m.to_dict() for m in self.mimics]
        entry["scanner"] = self.scanner.to_dict() if self.scanner is not None else None
        if self.shape is not None and self.spacing is not None:
            entry["shape"] = list(self.shape)
            entry["spacing"] = [round(v, 4) for v in self.spacing]
        return entry


@dataclass
class DatasetSummary:
    """What :func:`generate_dataset` wrote.

    Attributes:
        output_dir: the dataset folder.
        datalist: path of ``datalist.json``.
        seed: the dataset seed.
        settings: phantom settings of every case.
        formats: the image formats written.
        cases: the cases, in order.
        seconds: wall time of the whole run.
    """

    output_dir: Path
    datalist: Path
    seed: int
    settings: PhantomSettings
    formats: tuple[str, ...]
    cases: list[CaseRecord] = field(default_factory=list)
    seconds: float = 0.0
    negative_fraction: float = 0.0

    @property
    def emboli(self) -> list[EmbolusInfo]:
        return [e for case in self.cases for e in case.emboli]

    def statistics(self) -> dict:
        """The size distribution as a JSON-ready mapping (also the datalist's ``summary`` block)."""
        stats = summarize_emboli([case.emboli for case in self.cases], self.settings)
        if not self.settings.fixed_grid:
            volumes = [math.prod(c.spacing) for c in self.cases if c.spacing is not None]
            stats["voxel_volume_mm3"] = None
            stats["voxel_volume_mm3_range"] = (
                [round(min(volumes), 4), round(max(volumes), 4)] if volumes else None
            )
        stats["negative_cases"] = sum(case.negative for case in self.cases)
        stats["mimics"] = {
            kind: sum(any(m.kind == kind for m in case.mimics) for case in self.cases) for kind in MIMIC_KINDS
        }
        return stats


def summarize_emboli(per_case: Sequence[Sequence[EmbolusInfo]], settings: PhantomSettings) -> dict:
    """Counts, shares and labelled volumes per size class of the emboli of some cases.

    With a grid drawn per case (clinical profile) ``voxel_volume_mm3`` is ``None``.
    """
    emboli = [e for case in per_case for e in case]
    counts = [len(case) for case in per_case]
    classes = {}
    for size in SIZE_CLASSES:
        volumes = sorted(e.volume_mm3 for e in emboli if e.size_class == size)
        classes[size] = {
            "definition": CLASS_DEFINITIONS[size],
            "count": len(volumes),
            "fraction": round(len(volumes) / len(emboli), 4) if emboli else 0.0,
            "median_mm3": round(statistics.median(volumes), 1) if volumes else None,
            "min_mm3": round(volumes[0], 1) if volumes else None,
            "max_mm3": round(volumes[-1], 1) if volumes else None,
        }
    return {
        "cases": len(per_case),
        "emboli": len(emboli),
        "per_case": {
            "allowed": list(settings.emboli_per_case) if settings.emboli_per_case else "FUMPE",
            "min": min(counts, default=0),
            "max": max(counts, default=0),
            "mean": round(len(emboli) / len(per_case), 2) if per_case else 0.0,
        },
        "occlusive": sum(e.occlusive for e in emboli),
        "partial": sum(not e.occlusive for e in emboli),
        "enlarged": sum(e.enlarged for e in emboli),
        "voxel_volume_mm3": round(settings.grid.voxel_volume_mm3, 4) if settings.fixed_grid else None,
        "volumes": "labelled volume = voxel count x voxel volume",
        "classes": classes,
    }


def format_summary(summary: DatasetSummary) -> str:
    """Human-readable report of a generated dataset: where, what grid, and the emboli size distribution."""
    stats = summary.statistics()
    settings = summary.settings
    per_case = stats["per_case"]
    lines = [
        f"Wrote {stats['cases']} synthetic CTPA phantom(s) to {summary.output_dir} in {summary.seconds:.1f} s "
        f"(seed {summary.seed}; {_grid_text(summary)}; {' + '.join(summary.formats)})",
        f"Emboli: {stats['emboli']} ({per_case['min']}-{per_case['max']} per case, mean {per_case['mean']:.1f}; "
        f"drawn {_drawn(per_case['allowed'])}), {stats['occlusive']} occlusive, {stats['partial']} partial",
        f"  {'class':<10} {'definition':<12} {'count':>5} {'share':>6} {'median mm^3':>12} {'range mm^3':>16}",
    ]
    for size, row in stats["classes"].items():
        if row["count"]:
            spread = f"{row['min_mm3']:g}-{row['max_mm3']:g}"
            median = f"{row['median_mm3']:g}"
        else:
            spread = median = "-"
        lines.append(
            f"  {size:<10} {row['definition']:<12} {row['count']:>5} {row['fraction']:>6.1%} {median:>12} {spread:>16}"
        )
    if stats["voxel_volume_mm3"] is not None:
        lines.append(f"  (labelled volumes: voxel count x {stats['voxel_volume_mm3']:g} mm^3)")
    else:
        lines.append("  (labelled volumes: voxel count x each case's voxel volume)")
    if stats["enlarged"]:
        lines.append(
            f"  {stats['enlarged']} embol{'us' if stats['enlarged'] == 1 else 'i'} smaller than this grid can "
            "label in its class were labelled larger (at least one voxel); use a finer spacing to avoid this"
        )
    if summary.negative_fraction > 0 or stats["negative_cases"]:
        lines.append(
            f"Normal scans (no embolus): {stats['negative_cases']} of {stats['cases']} "
            f"(negative fraction {summary.negative_fraction:g})"
        )
    if settings.profile == "clinical":
        shown = ", ".join(f"{kind.replace('_', ' ')} {count}" for kind, count in stats["mimics"].items())
        lines.append(f"Cases with PE mimics (label 0): {shown}")
    lines.append(format_calibration(compare_to_fumpe([case.emboli for case in summary.cases])))
    lines.append(f"Datalist: {summary.datalist}")
    return "\n".join(lines)


def _grid_text(summary: DatasetSummary) -> str:
    settings = summary.settings
    if settings.shape is not None and settings.spacing is not None:
        grid = f"{'x'.join(map(str, settings.shape))} voxels of {'x'.join(f'{s:g}' for s in settings.spacing)} mm"
        return grid if settings.profile == "uniform" else f"clinical profile, {grid}"
    spacings = [c.spacing for c in summary.cases if c.spacing is not None]
    inplane = [s[0] for s in spacings] or [0.0]
    slices = [s[2] for s in spacings] or [0.0]
    return (
        f"clinical profile, grids drawn per case: in-plane {min(inplane):g}-{max(inplane):g} mm, "
        f"slices {min(slices):g}-{max(slices):g} mm"
    )


def _drawn(allowed: list[int] | str) -> str:
    return f"{allowed[0]}-{allowed[1]}" if isinstance(allowed, list) else "as FUMPE's patients"


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    chosen = tuple(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in FORMATS]
    if not chosen or unknown:
        raise ConfigError(
            f"phantom formats must be one or both of {', '.join(FORMATS)}, got {list(formats)!r}"
        )
    return chosen


def _check_cases(cases: int) -> int:
    if isinstance(cases, bool) or not isinstance(cases, int) or not 1 <= cases <= MAX_CASES:
        raise ConfigError(f"number of cases must be an integer from 1 to {MAX_CASES}, got {cases!r}")
    return cases


def _write_dicom(phantom: Phantom, folder: Path, name: str, seed: int, index: int) -> None:
    """Write the case's image as a DICOM series, replacing an earlier one of the same name."""
    settings = phantom.settings
    shape, spacing = settings.shape, settings.spacing
    if phantom.scanner is not None:
        shape, spacing = phantom.scanner.shape, phantom.scanner.spacing
    staging = folder.with_name(f".{folder.name}.new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    write_dicom_series(
        phantom.image,
        staging,
        patient_name=f"PHANTOM^{name.upper()}",
        patient_id=f"PESEG-{seed}-{index:03d}",
        series_description=f"CTPA pe-seg phantom {name}",
        uid_seed=f"pe-seg phantom seed={seed} case={index} shape={shape} spacing={spacing}",
    )
    try:
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{folder}: cannot replace the DICOM series ({err.strerror or err})") from err


def write_case(
    phantom: Phantom, output_dir: Path, name: str, formats: tuple[str, ...], seed: int, index: int
) -> CaseRecord:
    """Write one phantom into the dataset layout and return its datalist record."""
    label_rel = f"labels/{name}.nii.gz"
    write_volume(phantom.label, output_dir / label_rel)
    image_rel = dicom_rel = None
    if "nifti" in formats:
        image_rel = f"images/{name}.nii.gz"
        write_volume(phantom.image, output_dir / image_rel)
    if "dicom" in formats:
        dicom_rel = f"dicom/{name}"
        _write_dicom(phantom, output_dir / dicom_rel, name, seed, index)
    grid = phantom.grid
    return CaseRecord(
        name,
        image_rel or dicom_rel or "",
        label_rel,
        dicom_rel,
        tuple(phantom.emboli),
        profile=phantom.settings.profile,
        negative=phantom.negative,
        mimics=tuple(phantom.mimics),
        scanner=phantom.scanner,
        shape=grid.shape,
        spacing=grid.spacing,
    )


def _datalist(summary: DatasetSummary) -> dict:
    settings = summary.settings
    vessel_labels = {LABEL_VESSEL, LABEL_VEIN} if settings.profile == "clinical" else {LABEL_VESSEL}
    labels = {
        str(k): v
        for k, v in LABEL_NAMES.items()
        if (k in vessel_labels and settings.vessel_label) or k not in (LABEL_VESSEL, LABEL_VEIN)
    }
    return {
        "name": DATASET_NAME,
        "description": (
            "Synthetic CT pulmonary angiography phantoms made by pe-seg: chest with contrast-filled pulmonary "
            "artery tree and emboli as low-attenuation filling defects whose count, volumes and "
            "burden per case follow FUMPE's 35 expert masks (1-15 per case, median 2; about 65% central > 500 "
            "mm^3, 25% segmental 50-500 mm^3, 10% small < 50 mm^3; large ones are casts along the branches, some "
            "saddle emboli). Not patient data."
            + (
                " Clinical profile: each case draws its scanner (grid, slice thickness, kernel, noise, contrast "
                "timing, SVC streaks, motion) and PE mimics (label 0); see each entry's scanner and mimics."
                if settings.profile == "clinical"
                else ""
            )
        ),
        "reference": "pe_segmentation.data.phantom",
        "modality": {"0": "CT"},
        "seed": summary.seed,
        "labels": labels,
        "shape": list(settings.shape) if settings.shape is not None else None,
        "spacing": list(settings.spacing) if settings.spacing is not None else None,
        "profile": settings.profile,
        "negative_fraction": summary.negative_fraction,
        "orientation": "LPS voxel order (i: right to left, j: anterior to posterior, k: inferior to superior)",
        "formats": list(summary.formats),
        "settings": settings.to_dict(),
        "numTraining": len(summary.cases),
        "training": [case.to_dict() for case in summary.cases],
        "summary": summary.statistics(),
    }


def generate_dataset(
    output_dir: str | os.PathLike[str],
    cases: int,
    seed: int = 0,
    settings: PhantomSettings | None = None,
    formats: Sequence[str] = ("nifti",),
    progress: bool = True,
    negative_fraction: float = 0.0,
) -> DatasetSummary:
    """Generate ``cases`` phantoms into ``output_dir`` and write ``datalist.json``.

    Existing files of the same case names are replaced; other files in the folder are left alone.

    Args:
        output_dir: dataset folder (created).
        cases: number of cases (``phantom_000`` ...).
        seed: dataset seed; case ``i`` uses ``case_seed(seed, i)``.
        settings: phantom settings (default :class:`PhantomSettings`).
        formats: ``("nifti",)``, ``("dicom",)`` or both. Labels are always NIfTI; with DICOM only, the
            datalist's ``image`` is the DICOM folder.
        progress: show a progress bar over cases (only when stderr is a terminal).
        negative_fraction: share of normal scans, without any embolus (see :func:`is_negative`).

    Returns:
        The :class:`DatasetSummary` (see :func:`format_summary`).

    Raises:
        ConfigError: invalid cases, seed, settings or formats.
        OutputError: a file cannot be written.
    """
    cases = _check_cases(cases)
    formats = _check_formats(formats)
    negative_fraction = _check_fraction(negative_fraction)
    settings = settings or PhantomSettings()
    case_seed(seed, 0)  # validates the seed before any work
    root = Path(output_dir)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root}: exists and is not a folder")
    start = time.perf_counter()
    summary = DatasetSummary(
        root, root / DATALIST_NAME, int(seed), settings, formats, negative_fraction=negative_fraction
    )
    bar = tqdm(range(cases), desc="synth", unit="case", disable=not (progress and sys.stderr.isatty()))
    for index in bar:
        name = f"phantom_{index:03d}"
        negative = is_negative(seed, index, negative_fraction)
        phantom = generate_phantom(settings, case_seed(seed, index), negative=negative)
        summary.cases.append(write_case(phantom, root, name, formats, int(seed), index))
    summary.seconds = time.perf_counter() - start
    atomic_write_text(summary.datalist, json.dumps(_datalist(summary), indent=2) + "\n")
    return summary
