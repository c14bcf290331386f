"""Pictures users look at instead of numbers: CT slices with masks overlaid, written as PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pe_segmentation.io.atomic import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class OverlayPanel:
    """One picture: a 2D image (display units, e.g. windowed [0, 1]) and an optional mask drawn over it.

    Arrays are indexed ``[x, y]`` as in a RAS volume's axial slice; they are shown with anterior up and the
    patient's right on the viewer's left (radiological convention).
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    title: str = ""


def axial_slice_through_mask(volume: np.ndarray, mask: np.ndarray | None) -> int:
    """The axial index (last axis) with most mask voxels, or the middle one when the mask is empty."""
    if mask is not None and mask.any():
        return int(np.argmax(mask.reshape(-1, mask.shape[-1]).sum(axis=0)))
    return volume.shape[-1] // 2


def save_overlay_grid(
    panels: Sequence[OverlayPanel],
    path: str | os.PathLike[str],
    columns: int = 4,
    title: str | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> Path:
    """Draw panels in a grid, masks in translucent red with an outline, and write a PNG atomically."""
    plt = pyplot()
    if not panels:
        raise ValueError("nothing to draw: no panels")
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(3 * columns, 3 * rows + (0.4 if title else 0)), squeeze=False
    )
    try:
        _draw_panels(figure, axes, panels, title, vmin, vmax)
    except BaseException:  # pyplot would keep the figure (and its buffers) otherwise
        plt.close(figure)
        raise
    return save_figure(figure, path, dpi=100)


def _draw_panels(
    figure: Figure,
    axes: np.ndarray,
    panels: Sequence[OverlayPanel],
    title: str | None,
    vmin: float,
    vmax: float,
) -> None:
    """Draw the panels into ``figure``'s axes (see :func:`save_overlay_grid`)."""
    for axis in axes.ravel():
        axis.axis("off")
    for axis, panel in zip(axes.ravel(), panels, strict=False):  # the grid may have spare cells
        # RAS [x, y] -> rows = y flipped so anterior is up, columns = x flipped so patient right is on the left
        shown = np.flip(np.asarray(panel.image, dtype=np.float32).T, axis=(0, 1))
        axis.imshow(shown, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        if panel.mask is not None and np.any(panel.mask):
            mask = np.flip(np.asarray(panel.mask).T > 0, axis=(0, 1))
            axis.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.45, interpolation="nearest")
            axis.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
        axis.set_title(panel.title, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: figures are written to files, no display is needed.

    Imported on first use so that commands which draw nothing do not pay matplotlib's import time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``figure`` as a PNG atomically and close it (also when the write fails)."""
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            figure.savefig(tmp, format="png", dpi=dpi)
    finally:
        pyplot().close(figure)
    return path
