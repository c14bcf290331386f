"""Predict clot masks for new CTs with a trained checkpoint, on the original image grid.

The preprocessing comes from the checkpoint's saved config (never a second copy), the network from the
registry, the whole-volume inferer from :func:`~pe_segmentation.runtime.inferer.build_inferer`, autocast and
channels-last from :class:`~pe_segmentation.runtime.inferer.AutocastInferer`.

Where time goes is chosen with care, since inference is what users run most, often on a CPU:

* the CT is read once (the writers need its DICOM identity and geometry too) and handed to the transform
  chain through :class:`~pe_segmentation.inference.preloaded.PreloadedReader`, already in the memory layout
  MONAI wants;
* each window yields one channel, the embolus logit
  (:class:`~pe_segmentation.inference.window_network.EmbolusLogit`), so the sliding-window buffers hold one
  channel instead of one per class, and no multi-class logits exist at the original resolution;
* the probability is brought back to the original grid only around voxels that can reach the threshold
  (:func:`~pe_segmentation.inference.postprocess.probability_to_mask`), unless the whole map is asked for.

Before the network runs, the scan's quality is checked from its HU
(:func:`~pe_segmentation.inference.scan_quality.assess_scan`), which also gives the territory where emboli can
be: the lungs and the mediastinal pulmonary arteries. Windows that hold none of it are not run, and candidate
clots that lie mostly outside it are dropped and counted
(:func:`~pe_segmentation.inference.postprocess.drop_outside_territory`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from monai.inferers import SimpleInferer

from pe_segmentation.config import Config, replace_section
from pe_segmentation.errors import CheckpointError, ConfigError, ScanQualityError
from pe_segmentation.inference.memory import MemoryGuard
from pe_segmentation.inference.network_pass import WindowRun, network_probability
from pe_segmentation.inference.postprocess import (
    Box,
    DroppedClots,
    GridMapping,
    MaskResult,
    bounding_box,
    box_in,
    drop_low_peak_clots,
    drop_outside_territory,
    log_odds_threshold,
    probability_to_mask,
    remove_small_components,
)
from pe_segmentation.inference.preprocessing import PreparedImage, preprocess_volume
from pe_segmentation.inference.scan_quality import ScanQuality, assess_scan
from pe_segmentation.inference.window_network import SKIPPED_LOG_ODDS, EmbolusLogit, flip_combinations
from pe_segmentation.io.loader import load_volume
from pe_segmentation.io.volume import Volume
from pe_segmentation.networks import build_network
from pe_segmentation.runtime.allocator import keep_freed_memory, release_freed_memory
from pe_segmentation.runtime.checkpoint import load_checkpoint, load_model_weights, saved_config
from pe_segmentation.runtime.devices import inference_device, inference_precision
from pe_segmentation.runtime.inferer import AutocastInferer, window_size
from pe_segmentation.runtime.memory_format import channels_last_format, to_memory_format

log = logging.getLogger(__name__)

#: ``--fast``: the network grid is this many times coarser than the training spacing along each axis ...
FAST_SPACING_FACTOR = 1.5
#: ... and windows overlap this much (docs/inference.md gives the agreement this costs).
FAST_OVERLAP = 0.0
#: ``qc``: ``report`` writes the checks and goes on (a failed check marks the findings unreliable);
#: ``strict`` refuses a case whose scan fails a check (:class:`~pe_segmentation.errors.ScanQualityError`).
QC_MODES = ("report", "strict")
#: When one of these checks fails, the scan has no territory: not a chest CT, or no lungs in view (the lung bases
#: at the top of an abdominal CT are no place to look for emboli).
NO_TERRITORY_WHEN_FAILED = ("chest", "lungs")
#: A candidate clot is kept when at least this share of its voxels lies in the territory.
MIN_SHARE_IN_TERRITORY = 0.5


@dataclass
class Prediction:
    """A predicted clot mask on the input's own grid, and what it took.

    Attributes:
        mask: uint8 (1 = embolus) with the input's shape and affine.
        roi: a box (original voxels) holding every mask voxel; ``None`` for an empty mask.
        roi_probability: embolus probability inside ``roi`` (exact at every mask voxel).
        probability: the whole probability map (float32, input grid) when asked for, else ``None``.
        image: the input CT as read (the writers use its DICOM identity; the preview its voxels).
        seconds: time per stage: ``load``, ``preprocess``, ``network``, ``postprocess``.
        details: how the case was run (network grid, device, precision, windows, TTA, ...).
        quality: the scan quality checks (``None`` when the predictor was asked not to run them).
        territory: windows run and skipped, and candidate clots dropped outside the territory.
        study_score: the highest embolus probability inside the territory, in [0, 1]: ranks studies.
    """

    mask: Volume
    roi: Box | None
    roi_probability: np.ndarray | None
    probability: Volume | None
    image: Volume
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    quality: ScanQuality | None = None
    territory: dict[str, Any] = field(default_factory=dict)
    study_score: float = 0.0


#: The command that records the training spacing in a checkpoint saved without one (``{path}``: the file).
SET_SPACING_COMMAND = "pe-seg checkpoint set-spacing {path} --spacing SX SY SZ --output NEW.pt"


def _fast_config(config: Config) -> Config:
    """The config of ``--fast``: the training spacing made :data:`FAST_SPACING_FACTOR` times coarser."""
    spacing = config.preprocessing.fixed_spacing or ()
    return replace_section(config, "preprocessing", spacing=[v * FAST_SPACING_FACTOR for v in spacing])


def _no_spacing_message(path: Path) -> str:
    """Why a checkpoint without a fixed spacing is refused, and the command that fixes it (one line)."""
    return (
        f"{path}: its config has no fixed spacing (preprocessing.spacing is null or has a null axis: saved "
        "before every model had one), so the grid it runs on is unknown; record the spacing it was trained "
        f"at with `{SET_SPACING_COMMAND.format(path=path)}` (the demo's phantoms: 2.24 2.24 2.5) and use NEW.pt"
    )


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of the ``with`` body as ``seconds[stage]``."""
    start = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - start


class Predictor:
    """A network with its preprocessing and post-processing, ready to segment CTs.

    Args:
        network: the trained network.
        config: the config it was trained with (preprocessing, window size, inference defaults).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (or a ``torch.device``).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :mod:`pe_segmentation.runtime.devices`).
        overlap: window overlap; default ``inference.overlap`` (``--fast``: :data:`FAST_OVERLAP`).
        sw_batch_size: windows per forward pass; default ``inference.sw_batch_size``.
        threshold: probability at or above which a voxel is embolus, in (0, 1]; default ``inference.threshold``.
        min_peak: clots whose highest probability stays below this are dropped (found at ``min_peak``,
            outlined at ``threshold``); default ``inference.min_peak``.
        min_volume_mm3: clots smaller than this are dropped; default ``inference.min_volume_mm3``.
        tta: average the prediction over all flips of the spatial axes (8 passes in 3D).
        fast: resample :data:`FAST_SPACING_FACTOR` times coarser than in training, with less overlap.
        channels_last: run the network in channels-last memory format (faster with bf16 on CPUs).
        progress: MONAI's progress bar over the windows.
        model_info: what reports say about the model (file, hash, epoch, ...).
        qc: one of :data:`QC_MODES`.
        territory: confine the network and its clots to the territory where emboli can be (the scan quality
            checks find it); ``False`` runs every window and keeps clots anywhere.
        memory_budget: the most resident memory the process may reach, in GB (2^30 bytes); per case the
            window batch (at most ``sw_batch_size``) and the stitching are chosen to stay under it
            (:mod:`pe_segmentation.inference.memory`). ``None``: what the machine has available, less a margin.

    Raises:
        ConfigError: a config without a fixed spacing (``preprocessing.spacing`` null or with a null axis: the
            network runs at the one spacing it was trained at), a bad device, precision, threshold, overlap,
            window batch, QC mode or memory budget.
        MemoryBudgetError: the budget cannot hold the network running on one window.
    """

    def __init__(
        self,
        network: nn.Module,
        config: Config,
        device: str | torch.device = "auto",
        precision: str = "auto",
        *,
        overlap: float | None = None,
        sw_batch_size: int | None = None,
        threshold: float | None = None,
        min_peak: float | None = None,
        min_volume_mm3: float | None = None,
        tta: bool = False,
        fast: bool = False,
        channels_last: bool = True,
        progress: bool = False,
        model_info: dict[str, Any] | None = None,
        qc: str = "report",
        territory: bool = True,
        memory_budget: float | None = None,
    ) -> None:
        if config.preprocessing.fixed_spacing is None:
            raise ConfigError(
                f"preprocessing.spacing is {list(config.preprocessing.spacing or []) or None}: a Predictor "
                "needs the one spacing its network was trained at (give the config it was trained with)"
            )
        self.trained_config = config
        self.config = _fast_config(config) if fast else config
        settings = config.inference
        self.threshold = float(settings.threshold if threshold is None else threshold)
        self.min_peak = float(settings.min_peak if min_peak is None else min_peak)
        self.min_volume_mm3 = float(settings.min_volume_mm3 if min_volume_mm3 is None else min_volume_mm3)
        if overlap is None:
            overlap = FAST_OVERLAP if fast else settings.overlap
        self.overlap = float(overlap)
        self.sw_batch_size = int(settings.sw_batch_size if sw_batch_size is None else sw_batch_size)
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold:g}")
        if not 0.0 <= self.min_peak <= 1.0:
            raise ConfigError(f"min peak must be in [0, 1], got {self.min_peak:g}")
        if self.min_volume_mm3 < 0:
            raise ConfigError(f"min volume must be >= 0 mm^3, got {self.min_volume_mm3:g}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap:g}")
        if self.sw_batch_size < 1:
            raise ConfigError(f"window batch size must be >= 1, got {self.sw_batch_size}")
        if qc not in QC_MODES:
            raise ConfigError(f"qc must be one of {', '.join(QC_MODES)}, got {qc!r}")
        self.qc = qc
        self.use_territory = bool(territory)
        self.tta = bool(tta)
        self.fast = bool(fast)
        self.progress = bool(progress)
        self.model_info = dict(model_info or {})

        self.device = device if isinstance(device, torch.device) else inference_device(device)
        self.precision = inference_precision(precision, self.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        spatial_dims = self.config.patch.spatial_dims
        self.memory_format = channels_last_format(spatial_dims, channels_last)
        self.network = to_memory_format(network.to(self.device).eval(), self.memory_format)
        flips = self._flips() if self.tta else [()]
        self.window_network = EmbolusLogit(self.network, flips=flips, memory_format=self.memory_format).eval()
        self.memory = MemoryGuard.for_network(
            memory_budget,
            self._run_windows,
            self.device,
            window_size(self.config),
            self.sw_batch_size,
            in_channels=int(config.model.params.get("in_channels", 1)),
            slab_stitching=spatial_dims == 3,
        )
        self.window_network.reset_counts()

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], device: str = "auto", precision: str = "auto", **options: Any
    ) -> Predictor:
        """Load weights and config from a pe-seg checkpoint (``weights_only`` loading).

        Args:
            path: a checkpoint written by ``pe-seg train`` (``best.pt``, ``last.pt``, ...).
            device: see :class:`Predictor`.
            precision: see :class:`Predictor`.
            options: the keyword arguments of :class:`Predictor`.

        Raises:
            CheckpointError: missing, corrupt or unsafe file, no saved config, a config without a fixed spacing
                (the message gives the command that records it), or weights that do not fit.
        """
        path = Path(path)
        checkpoint = load_checkpoint(path)
        config = saved_config(
            checkpoint,
            path,
            "inference needs the preprocessing and network settings pe-seg saves in its checkpoints",
        )
        if config.preprocessing.fixed_spacing is None:
            raise CheckpointError(_no_spacing_message(path))
        network = build_network(config.model.name, **config.model.params)
        load_model_weights(network, checkpoint, config.model.to_dict(), str(path))
        info = {
            "file": path.name,
            "name": config.model.name,
            "kind": checkpoint.get("kind"),
            "epoch": (checkpoint.get("trainer") or {}).get("epoch"),
            "metrics": checkpoint.get("metrics") or {},
            "saved_at": checkpoint.get("saved_at"),
            "versions": checkpoint.get("versions") or {},
        }
        return cls(network, config, device, precision, model_info=info, **options)

    # ------------------------------------------------------------------------------------------ prediction

    def settings(self) -> dict[str, Any]:
        """The settings of this predictor, as the report lists them."""
        return {
            "device": str(self.device),
            "precision": self.precision.name,
            "channels_last": self.memory_format is not None,
            "threshold": self.threshold,
            "min_peak": self.min_peak,
            "min_volume_mm3": self.min_volume_mm3,
            "overlap": self.overlap,
            "sw_batch_size": self.sw_batch_size,
            "roi_size": list(self.config.validation.roi_size or self.config.patch.patch_size or ()),
            "spacing_mm": None
            if self.config.preprocessing.spacing is None
            else list(self.config.preprocessing.spacing),
            "tta": self.tta,
            "fast": self.fast,
            "qc": self.qc,
            "territory": self.use_territory,
            "memory_budget_gb": self.memory.budget_gb,
        }

    @torch.no_grad()
    def predict(
        self,
        image: Volume | str | os.PathLike[str],
        series_uid: str | None = None,
        full_probability: bool = False,
    ) -> Prediction:
        """Segment one CT; outputs share the input's shape and affine.

        Five timed stages (``Prediction.seconds``): read the CT, check its quality, preprocess it onto the
        network grid, run the sliding window over the territory, and bring the probability back to the input
        grid as a mask.

        Args:
            image: a read :class:`Volume` (HU), or a DICOM folder/file or NIfTI/NRRD/MHA file to read.
            series_uid: for a DICOM folder with several series, the series to read (default: the series rule).
            full_probability: also compute the whole probability map on the original grid.

        Raises:
            InputDataError: the input cannot be read or is not a usable CT.
            ScanQualityError: with ``qc="strict"``, the scan failed a quality check.
        """
        seconds: dict[str, float] = {}
        with _timed(seconds, "load"):
            volume = image if isinstance(image, Volume) else load_volume(image, series_uid)
        with _timed(seconds, "quality"):
            quality = assess_scan(volume)
        self._enforce_quality(quality, volume)
        with _timed(seconds, "preprocess"):
            prepared, mapping = self._preprocess(volume)
            grid = tuple(int(n) for n in prepared.tensor.shape[1:])
            territory = self._network_territory(quality, volume, prepared.network_affine, grid)
        # refused here, before the network runs, when no window batch and stitching fit the budget
        plan = self.memory.plan(grid, volume.shape, str(volume.metadata.get("source") or "input"))
        with _timed(seconds, "network"):
            probability, stitch = network_probability(self._window_run(), prepared.tensor, territory, plan)
        del prepared  # the network-grid image: not needed any more
        release_freed_memory()
        with _timed(seconds, "postprocess"):
            log_odds = self._window_run().log_odds  # a map of log-odds (nnU-Net), else of probabilities
            outside = DroppedClots()
            cut = log_odds_threshold(self.threshold) if log_odds else self.threshold
            fill = SKIPPED_LOG_ODDS if log_odds else 0.0
            if territory is not None:
                outside = drop_outside_territory(probability, territory, cut, MIN_SHARE_IN_TERRITORY, fill)
            # the study's score before min_peak, which would flatten the ranking
            score = _study_score(probability, territory, log_odds)
            peak = log_odds_threshold(self.min_peak) if log_odds and self.min_peak > 0 else self.min_peak
            low_peak = drop_low_peak_clots(probability, cut, peak, fill)
            result = probability_to_mask(probability, mapping, self.threshold, full_probability, log_odds)
            del probability
            result = self._drop_small_clots(result, volume)
        prediction = self._prediction(volume, result, mapping, stitch, seconds)
        prediction.details["memory"] = plan.summary()
        prediction.details["dropped_low_peak_clots"] = low_peak.count
        prediction.quality = quality
        prediction.territory = self._territory_summary(territory, outside, volume, mapping)
        prediction.study_score = score
        release_freed_memory()
        return prediction

    def _enforce_quality(self, quality: ScanQuality, volume: Volume) -> None:
        """Refuse the case in ``strict`` mode when the scan fails a check; else warn once on the console."""
        source = volume.metadata.get("source") or "input"
        failed = [f"{check.name}: {check.reason}" for check in quality.checks if check.verdict == "fail"]
        if failed and self.qc == "strict":
            raise ScanQualityError(f"{source}: not a usable CTPA (--qc strict): {'; '.join(failed)}")

    def _network_territory(
        self, quality: ScanQuality, volume: Volume, network_affine: np.ndarray, shape: Sequence[int]
    ) -> np.ndarray | None:
        """The territory on the network grid (uint8), or ``None`` when the predictor does not use it."""
        if not self.use_territory:
            return None
        x, y, z = (int(n) for n in shape)
        if any(quality.check(name).verdict == "fail" for name in NO_TERRITORY_WHEN_FAILED):
            return np.zeros((x, y, z), dtype=np.uint8)
        territory = quality.regions.territory_on_grid(network_affine, (x, y, z), volume.affine)
        return territory.view(np.uint8)

    def _territory_summary(
        self, territory: np.ndarray | None, outside: DroppedClots, volume: Volume, mapping: GridMapping
    ) -> dict[str, Any]:
        """What the territory did: windows run and skipped, candidate clots dropped outside it."""
        run = self.window_network.windows_run
        skipped = self.window_network.windows_skipped
        network_voxel_ml = float(np.prod(volume.spacing)) / abs(float(np.prod(mapping.scale))) / 1000.0
        summary: dict[str, Any] = {
            "used": territory is not None,
            "windows_run": run,
            "windows_skipped": skipped,
            "skipped_share": round(skipped / max(run + skipped, 1), 4),
            "dropped_clots": outside.count,
            "dropped_volume_ml": round(outside.voxels * network_voxel_ml, 4),
        }
        if territory is not None:
            summary["network_grid_share"] = round(float(np.count_nonzero(territory)) / territory.size, 4)
        return summary

    def _preprocess(self, volume: Volume) -> tuple[PreparedImage, GridMapping]:
        """The preprocessed image (:func:`~pe_segmentation.inference.preprocessing.preprocess_volume`) and where
        its grid lies in the input's; refused first when its memory would not fit the budget.

        Resampling and windowing run on the GPU when the stitching does (MONAI's transforms follow their
        input's device): on an H200 they took 1.9 s of the CPU's time per 512x512x300 CT, a quarter of the
        whole case.
        """
        spacing = self.config.preprocessing.fixed_spacing
        assert spacing is not None  # checked in __init__
        self.memory.check_preprocess(volume, spacing)
        prepared = preprocess_volume(self.config.preprocessing, volume, self.device)
        mapping = GridMapping.from_affines(
            volume.affine,
            volume.shape,
            prepared.cropped_affine,
            prepared.cropped_shape,
            prepared.network_affine,
            tuple(prepared.tensor.shape[1:]),
        )
        return prepared, mapping

    def _drop_small_clots(self, result: MaskResult, volume: Volume) -> MaskResult:
        """``result`` without clots under ``min_volume_mm3`` (the mask is edited in place), its box shrunk."""
        if result.roi is None or self.min_volume_mm3 <= 0:
            return result
        roi = result.roi
        kept = remove_small_components(result.mask[roi], volume.spacing, self.min_volume_mm3)
        result.mask[roi] = kept
        inner = bounding_box(kept)
        if inner is None:
            return MaskResult(result.mask, None, None, result.probability)
        assert result.roi_probability is not None  # a MaskResult with a box has its probability
        return MaskResult(result.mask, box_in(roi, inner), result.roi_probability[inner], result.probability)

    def _prediction(
        self,
        volume: Volume,
        result: MaskResult,
        mapping: GridMapping,
        stitch: torch.device,
        seconds: dict[str, float],
    ) -> Prediction:
        """The :class:`Prediction`: the mask (and full map) as volumes on the input grid, and how it was run."""
        source = {"source": volume.metadata.get("source", "")}
        details = {
            **self.settings(),
            "stitch_device": str(stitch),
            "network_grid": list(mapping.network_shape),
            "body_box": [[s.start, s.stop - 1] for s in mapping.body_box],
        }
        full = None
        if result.probability is not None:
            full = Volume(result.probability, volume.affine.copy(), dict(source))
        return Prediction(
            mask=Volume(result.mask, volume.affine.copy(), dict(source)),
            roi=result.roi,
            roi_probability=result.roi_probability,
            probability=full,
            image=volume,
            seconds=seconds,
            details=details,
        )

    def _window_run(self) -> WindowRun:
        """How this predictor's windows run (:mod:`pe_segmentation.inference.network_pass`)."""
        return WindowRun(
            self.window_network,
            self.config,
            self.overlap,
            self.device,
            self.precision,
            self.memory_format,
            self.progress,
        )

    def _flips(self) -> list[tuple[int, ...]]:
        """The flips of ``tta``: every subset of the spatial axes (another model may allow fewer)."""
        return flip_combinations(self.config.patch.spatial_dims)

    def _run_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """One batch of windows through the network as the sliding window runs it (autocast, memory format):
        what :class:`~pe_segmentation.inference.memory.MemoryGuard` measures."""
        wrapped = AutocastInferer(SimpleInferer(), self.precision, self.memory_format)
        return torch.as_tensor(wrapped(windows, self.window_network))


def _study_score(probability: np.ndarray, territory: np.ndarray | None, log_odds: bool = False) -> float:
    """The highest embolus probability in the territory (everywhere without one): how likely PE is, to rank
    studies by. Candidates dropped outside the territory are already zero in ``probability`` (a map of
    log-odds with ``log_odds``)."""
    values = probability if territory is None else probability[territory != 0]
    if not values.size:
        return 0.0
    top = float(values.max())
    return float(1.0 / (1.0 + np.exp(-top))) if log_odds else top
