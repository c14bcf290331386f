"""``synth``: a folder of synthetic CTPA phantoms, what ``pe-seg synth`` writes."""

from __future__ import annotations

import os
from collections.abc import Sequence

from pe_segmentation.data.phantom import DatasetSummary, PhantomSettings, generate_dataset
from pe_segmentation.data.phantom.calibration import compare_to_fumpe, draw_calibration
from pe_segmentation.errors import ConfigError
from pe_segmentation.visualization import pyplot, save_figure

CALIBRATION_FIGURE = "calibration.png"  # the emboli against FUMPE's figures, beside the datalist


def synth(
    output: str | os.PathLike[str],
    cases: int = 4,
    seed: int = 0,
    *,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    vessel_label: bool = False,
    noise_hu: float | None = None,
    formats: Sequence[str] = ("nifti",),
    progress: bool = False,
    profile: str = "uniform",
    negative_fraction: float = 0.0,
) -> DatasetSummary:
    """Write ``cases`` synthetic CTPA phantoms with embolus labels and a datalist into ``output``.

    Args:
        output: the dataset folder (created): ``images/``, ``labels/``, ``dicom/``, ``datalist.json`` and
            ``calibration.png`` (the emboli's count, burden, volume and labelled HU beside FUMPE's).
        cases: how many cases.
        seed: the dataset seed; case ``i`` derives from ``(seed, i)``, so a seed reproduces the set exactly.
        shape: voxels along i, j, k. Uniform profile: default the default field of view at ``spacing``.
            Clinical profile: fixes the voxel counts; the field of view is still drawn (spacing = field / shape).
        spacing: voxel size in mm. Uniform: default the default field of view at ``shape``. Clinical: fixes the
            spacing; the field of view is drawn (shape = field / spacing). Both: a fixed grid.
        vessel_label: also label the patent pulmonary artery lumen as 2 and, in the clinical profile, the
            pulmonary veins as 3 (emboli are 1).
        noise_hu: the noise standard deviation in HU (uniform profile only, default 15; the clinical profile
            draws it per case with the kernel).
        formats: image formats to write: ``nifti`` and/or ``dicom``.
        progress: show a progress bar.
        profile: ``uniform`` (default here; one fixed grid and look) or ``clinical`` (``pe-seg synth``'s
            default: scanner variety, pulmonary veins and PE mimics per case).
        negative_fraction: share of normal scans without any embolus (``pe-seg synth``'s default: 0.25).

    Returns:
        The dataset's summary (cases, emboli and their size classes), printable with ``format_summary``.

    Raises:
        ConfigError: fewer than one case, a negative seed, a grid that cannot hold the chest, an unknown
            profile, a noise level with the clinical profile, or a negative fraction outside [0, 1].
    """
    if cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {cases}")
    if seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {seed}")
    grid_shape = (int(shape[0]), int(shape[1]), int(shape[2])) if shape else None
    grid_spacing = (float(spacing[0]), float(spacing[1]), float(spacing[2])) if spacing else None
    if profile == "clinical":
        if noise_hu is not None:
            raise ConfigError(
                "--noise sets the uniform profile's noise; the clinical profile draws noise and kernel per case"
            )
        settings = PhantomSettings(
            shape=grid_shape, spacing=grid_spacing, vessel_label=vessel_label, profile="clinical"
        )
    else:
        settings = PhantomSettings.for_field(
            shape=grid_shape,
            spacing=grid_spacing,
            vessel_label=vessel_label,
            noise_hu=15.0 if noise_hu is None else noise_hu,
            profile=profile,
        )
    summary = generate_dataset(
        output,
        cases,
        seed,
        settings=settings,
        formats=tuple(formats),
        progress=progress,
        negative_fraction=negative_fraction,
    )
    comparison = compare_to_fumpe([case.emboli for case in summary.cases])
    save_figure(draw_calibration(pyplot(), comparison), summary.datalist.with_name(CALIBRATION_FIGURE))
    return summary
