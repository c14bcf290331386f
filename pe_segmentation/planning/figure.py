"""``fingerprint.png``: the fingerprint's distributions beside the plan's choices.

Three panels: the voxel size along R, A and S (the target spacing marked), the HU of the labelled voxels (the
clip range, mean and SD of ``ct_foreground`` marked) and the embolus volumes on a log scale (the size classes'
bounds marked).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pe_segmentation.data.embolus_sizes import CENTRAL_MIN_MM3, SMALL_MAX_MM3
from pe_segmentation.planning.fingerprint import AXES, DatasetFingerprint
from pe_segmentation.planning.recipe import Plan

_COLOURS = ("tab:red", "tab:green", "tab:blue")


def _spacing_panel(axis: Any, fingerprint: DatasetFingerprint, plan: Plan | None) -> None:
    spacings = fingerprint.spacings
    bins = np.linspace(0.0, max(float(spacings.max()) * 1.05, 0.1), 30) if spacings.size else 10
    for index, name in enumerate(AXES):
        axis.hist(spacings[:, index], bins=bins, alpha=0.5, color=_COLOURS[index], label=f"{name}")
        if plan is not None:
            axis.axvline(plan.spacing.mm[index], color=_COLOURS[index], linestyle="--", linewidth=1)
    axis.set_xlabel("voxel size (mm); dashed: target spacing")
    axis.set_ylabel("cases")
    axis.set_title(f"spacing, {len(fingerprint.cases)} cases")
    axis.legend(fontsize=8)


def _hu_panel(axis: Any, fingerprint: DatasetFingerprint) -> None:
    values = fingerprint.foreground_hu
    fg = fingerprint.foreground
    if fg is None:
        axis.text(0.5, 0.5, "no labelled voxels", ha="center", va="center", transform=axis.transAxes)
    else:
        axis.hist(values, bins=80, color="tab:purple", alpha=0.8)
        for value, style in ((fg.percentile_00_5, ":"), (fg.percentile_99_5, ":"), (fg.mean, "-")):
            axis.axvline(value, color="black", linestyle=style, linewidth=1)
        axis.set_title(
            f"HU in labels: mean {fg.mean:.0f}, SD {fg.sd:.0f}, "
            f"0.5-99.5% {fg.percentile_00_5:.0f} to {fg.percentile_99_5:.0f}",
            fontsize=9,
        )
    axis.set_xlabel("HU (dotted: clip range, solid: mean)")
    axis.set_ylabel("voxels")


def _emboli_panel(axis: Any, fingerprint: DatasetFingerprint) -> None:
    volumes = fingerprint.emboli_ml
    if volumes.size:
        low = min(float(volumes.min()), SMALL_MAX_MM3 / 1000.0) / 2
        high = max(float(volumes.max()), CENTRAL_MIN_MM3 / 1000.0) * 2
        axis.hist(volumes, bins=np.geomspace(low, high, 30), color="tab:orange", alpha=0.8)
        axis.set_xscale("log")
    for bound in (SMALL_MAX_MM3, CENTRAL_MIN_MM3):
        axis.axvline(bound / 1000.0, color="black", linestyle=":", linewidth=1)
    axis.set_xlabel("embolus volume (mL); dotted: 50 and 500 mm^3")
    axis.set_ylabel("emboli")
    axis.set_title(
        f"{volumes.size} emboli; {fingerprint.cases_without_emboli} of {len(fingerprint.cases)} cases without",
        fontsize=9,
    )


def draw_fingerprint(plt: Any, fingerprint: DatasetFingerprint, plan: Plan | None = None) -> Any:
    """The figure (matplotlib's ``pyplot`` as ``plt``, see :func:`~pe_segmentation.visualization.pyplot`)."""
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    _spacing_panel(axes[0], fingerprint, plan)
    _hu_panel(axes[1], fingerprint)
    _emboli_panel(axes[2], fingerprint)
    figure.tight_layout()
    return figure
