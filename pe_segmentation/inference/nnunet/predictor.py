"""pe-seg's :class:`~pe_segmentation.inference.predictor.Predictor` running an nnU-Net v2 model the nnU-Net way.

What changes against a pe-seg checkpoint, and only that: the preprocessing
(:func:`~pe_segmentation.inference.nnunet.preprocessing.preprocess_nnunet`), the windows and their weights
(:mod:`~pe_segmentation.inference.nnunet.windows`, at the plan's patch size and step ``1 - overlap``, 0.5 by
default), mirroring over the trainer's allowed axes with ``tta``, the folds averaged, and a map of log-odds that
is resampled back before the sigmoid. Everything else is pe-seg's: scan quality checks, the territory (windows
skipped, clots outside dropped), the memory budget, precision and channels-last, the mask on the input grid and
every output. ``territory=False`` with ``precision="fp32"`` gives nnU-Net's probabilities (the tests compare them
with ``nnUNetPredictor``'s).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from pe_segmentation.config import Config
from pe_segmentation.errors import ConfigError
from pe_segmentation.inference.network_pass import WindowRun
from pe_segmentation.inference.nnunet.folder import CONFIGURATION, NnUNetModel, load_nnunet_model
from pe_segmentation.inference.nnunet.preprocessing import NnUNetPlan, preprocess_nnunet
from pe_segmentation.inference.nnunet.resampling import CHUNK_PLANES
from pe_segmentation.inference.nnunet.windows import FoldEnsemble, nnunet_gaussian, nnunet_tiling
from pe_segmentation.inference.postprocess import GridMapping
from pe_segmentation.inference.predictor import Predictor
from pe_segmentation.inference.preprocessing import PreparedImage
from pe_segmentation.inference.window_network import flip_combinations
from pe_segmentation.io.volume import Volume
from pe_segmentation.runtime.memory_budget import MemoryEstimate

#: nnU-Net's ``tile_step_size``: windows half a window apart (``overlap`` 0.5).
NNUNET_OVERLAP = 0.5


def nnunet_config(model: NnUNetModel) -> Config:
    """The pe-seg config a predictor of this model runs with: the plan's patch as the window, nnU-Net's
    overlap, the plan's spacing (in the plans' axis order; reports only)."""
    return Config.from_dict(
        {
            "preprocessing": {"spacing": list(model.spacing)},
            "patch": {"patch_size": list(model.patch_size), "spatial_dims": 3},
            "validation": {"roi_size": list(model.patch_size), "overlap": NNUNET_OVERLAP},
            "inference": {"overlap": NNUNET_OVERLAP},
        }
    )


class NnUNetModelPredictor(Predictor):
    """A :class:`Predictor` for an nnU-Net v2 trained-model folder (see the module docstring).

    Args:
        model: the folder as read by :func:`~pe_segmentation.inference.nnunet.folder.load_nnunet_model`.
        device, precision: as for :class:`Predictor`.
        options: :class:`Predictor`'s keyword options; ``overlap`` is ``1 - `` nnU-Net's tile step.

    Raises:
        ConfigError: ``fast`` (an nnU-Net model runs at its plan's spacing and patch only).
    """

    def __init__(
        self, model: NnUNetModel, device: str | torch.device = "auto", precision: str = "auto", **options: Any
    ) -> None:
        if options.get("fast"):
            raise ConfigError("--fast does not apply to nnU-Net models: they run at their plan's spacing")
        self.nnunet = model
        self.plan = NnUNetPlan.from_plans(model.plans, model.configuration)
        self._importance = nnunet_gaussian(model.patch_size)
        network_class = str(model.configuration["architecture"].get("network_class_name", ""))
        info = {**model.identity(), "name": f"nnU-Net {network_class.rsplit('.', 1)[-1]}"}
        info["sha256"] = model.folds[0].sha256
        super().__init__(
            FoldEnsemble(model.build_networks()),
            nnunet_config(model),
            device,
            precision,
            model_info=info,
            **options,
        )
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap:g}")

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        folds: Sequence[str | int] | None = None,
        label: str | None = None,
        checkpoint: str = "final",
        device: str | torch.device = "auto",
        precision: str = "auto",
        **options: Any,
    ) -> NnUNetModelPredictor:
        """Read the model folder (:func:`~pe_segmentation.inference.nnunet.folder.load_nnunet_model`) and
        build the predictor."""
        model = load_nnunet_model(folder, folds, checkpoint, label)
        return cls(model, device, precision, **options)

    def settings(self) -> dict[str, Any]:
        """:meth:`Predictor.settings`, with what nnU-Net's run used."""
        settings = super().settings()
        settings["spacing_mm"] = None  # the plan's spacing is in the plans' axis order: given below
        settings["nnunet"] = {
            "configuration": CONFIGURATION,
            "spacing_mm": list(self.plan.spacing),
            "transpose_forward": list(self.plan.transpose_forward),
            "patch_size": list(self.nnunet.patch_size),
            "tile_step_size": round(1.0 - self.overlap, 6),
            "mirror_axes": list(self.nnunet.mirror_axes) if self.tta else [],
            "folds": [fold.fold for fold in self.nnunet.folds],
            "label": self.nnunet.label[0],
        }
        return settings

    def _flips(self) -> list[tuple[int, ...]]:
        return flip_combinations(3, self.nnunet.mirror_axes)

    def _preprocess(self, volume: Volume) -> tuple[PreparedImage, GridMapping]:
        """nnU-Net's preprocessing, refused first when its memory would not fit the budget."""
        self.memory.check_estimate(volume, preprocess_estimate(volume, self.plan))
        prepared = preprocess_nnunet(volume, self.plan)
        cropped = tuple(s.stop - s.start for s in prepared.crop)
        image = PreparedImage(prepared.tensor, prepared.network_affine, volume.affine.copy(), cropped)
        return image, prepared.mapping

    def _window_run(self) -> WindowRun:
        """pe-seg's window run with nnU-Net's tiles and Gaussian, keeping the blended log-odds."""
        return replace(
            super()._window_run(),
            tiling=nnunet_tiling(self.nnunet.patch_size, 1.0 - self.overlap),
            importance=self._importance,
            log_odds=True,
        )


def preprocess_estimate(volume: Volume, plan: NnUNetPlan) -> MemoryEstimate:
    """nnU-Net preprocessing's memory beyond the CT as read: the cropped float32 copy, the float32 results of
    two resampling passes (:mod:`~pe_segmentation.inference.nnunet.resampling` works one axis at a time) and one
    chunk's float64 work arrays."""
    axes = plan.volume_axes()
    spacing = [float(volume.spacing[a]) for a in axes]
    shape = [volume.shape[a] for a in axes]
    grid = [max(round(s / t * n), 1) for s, t, n in zip(spacing, plan.spacing, shape, strict=True)]
    voxels, out = int(np.prod(shape)), int(np.prod(grid))
    largest = max(voxels, out)
    chunk = CHUNK_PLANES * largest // max(min(min(shape), min(grid)), 1)
    parts = {
        "cropped CT (float32)": 4 * voxels,
        "resampling passes (float32)": 8 * largest,
        "one chunk's spline (float64)": 8 * 7 * chunk,
    }
    return MemoryEstimate("preprocess", parts)
