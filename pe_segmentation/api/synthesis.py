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
    noise_hu: float = 15.0,
    formats: Sequence[str] = ("nifti",),
    progress: bool = False,
) -> DatasetSummary:
    """Write ``cases`` synthetic CTPA phantoms with embolus labels and a datalist into ``output``.

    Args:
        output: the dataset folder (created): ``images/``, ``labels/``, ``dicom/``, ``datalist.json`` and
            ``calibration.png`` (the emboli's count, burden, volume and labelled HU beside FUMPE's).
        cases: how many cases.
        seed: the dataset seed; case ``i`` derives from ``(seed, i)``, so a seed reproduces the set exactly.
        shape: voxels along i, j, k (default: the default field of view at ``spacing``).
        spacing: voxel size in mm (default: the default field of view at ``shape``).
        vessel_label: also label the patent pulmonary artery lumen as 2 (emboli are 1).
        noise_hu: the noise standard deviation in HU.
        formats: image formats to write: ``nifti`` and/or ``dicom``.
        progress: show a progress bar.

    Returns:
        The dataset's summary (cases, emboli and their size classes), printable with ``format_summary``.

    Raises:
        ConfigError: fewer than one case, a negative seed, or a grid that cannot hold the chest.
    """
    if cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {cases}")
    if seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {seed}")
    settings = PhantomSettings.for_field(
        shape=(int(shape[0]), int(shape[1]), int(shape[2])) if shape else None,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])) if spacing else None,
        vessel_label=vessel_label,
        noise_hu=noise_hu,
    )
    summary = generate_dataset(
        output, cases, seed, settings=settings, formats=tuple(formats), progress=progress
    )
    comparison = compare_to_fumpe([case.emboli for case in summary.cases])
    save_figure(draw_calibration(pyplot(), comparison), summary.datalist.with_name(CALIBRATION_FIGURE))
    return summary
