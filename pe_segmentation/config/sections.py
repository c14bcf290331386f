"""The plain sections of the config schema: data, optimizer, schedule, training, validation, inference, output.

Each is a frozen dataclass built on :class:`~pe_segmentation.data.settings_base.SettingsSection`, validated in
``__post_init__`` with a one-line :class:`~pe_segmentation.errors.ConfigError` naming the key path. The
``model`` and ``loss`` sections, checked against the registries, are in :mod:`pe_segmentation.config.registered`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pe_segmentation.data.settings_base import SettingsSection

DATASETS = ("datalist", "synthetic", "folder", "fumpe", "cadpe")
CACHE_MODES = ("none", "memory", "disk", "store")
OPTIMIZERS = ("adam", "adamw", "sgd")
DECAYS = ("cosine", "poly", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def did_you_mean(word: object, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def plain(value: Any) -> Any:
    """Tuples to lists, recursively, so that the dict is YAML/JSON-ready."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _choice(section: SettingsSection, name: str, choices: Sequence[str]) -> None:
    value = getattr(section, name)
    if not isinstance(value, str) or value.lower() not in choices:
        raise section._fail(
            name, f"expected one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}"
        )
    section._set(name, value.lower())


def _optional_str(section: SettingsSection, name: str) -> None:
    value = getattr(section, name)
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise section._fail(name, f"expected a path or null, got {value!r}")
    if value is not None:
        section._set(name, str(value))


def _check_sliding_window(section: SettingsSection) -> None:
    """``overlap`` and ``sw_batch_size``: the sliding-window keys of validation and inference."""
    section._set("overlap", section._number("overlap", low=0.0, high=0.95))
    section._set("sw_batch_size", section._int("sw_batch_size", low=1))


@dataclass(frozen=True)
class DataConfig(SettingsSection):
    """Where the training cases come from.

    Attributes:
        dataset: layout of ``path``: ``datalist`` (MSD-style JSON), ``synthetic`` (a ``pe-seg synth`` folder),
            ``folder`` (``path/images`` + ``path/labels``), ``fumpe``, ``cadpe``.
        path: the datalist file or dataset folder.
        image_key: datalist entry key of the image (``dicom`` reads the phantoms' DICOM series).
        val_fraction: share of patients held out for validation.
        split_file: saved train/validation split to reuse; default ``<run_dir>/split.json``.
        cache: how preprocessed cases are kept: ``none`` (preprocessed again each time), ``memory`` (in RAM),
            ``disk`` (MONAI's ``PersistentDataset`` in ``<run_dir>/cache``: whole volumes, loaded whole), or
            ``store`` (the preprocessed store: each case preprocessed once, training reads only its patches;
            ``pe-seg preprocess`` fills it ahead, else the run does before its first epoch).
        store_dir: the preprocessed store's folder (``cache: store``); default ``<run_dir>/cache/store``.
            Shared by runs (and by the nodes of a multi-node run, on a shared file system): each preprocessing
            has its own sub-folder in it.
        num_workers: data loader worker processes (with ``cache: store`` they persist across epochs, and also
            preprocess cases side by side).
    """

    section: ClassVar[str] = "data"

    dataset: str = "datalist"
    path: str | None = None
    image_key: str = "image"
    val_fraction: float = 0.2
    split_file: str | None = None
    cache: str = "memory"
    store_dir: str | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        _choice(self, "dataset", DATASETS)
        _optional_str(self, "path")
        _optional_str(self, "split_file")
        if not isinstance(self.image_key, str) or not self.image_key:
            raise self._fail("image_key", f"expected a non-empty string, got {self.image_key!r}")
        self._set("val_fraction", self._number("val_fraction", low=0.0, high=0.9))
        _choice(self, "cache", CACHE_MODES)
        _optional_str(self, "store_dir")
        self._set("num_workers", self._int("num_workers", low=0))


@dataclass(frozen=True)
class OptimizerConfig(SettingsSection):
    """Optimizer: ``adam`` (betas 0.9/0.999, as in the original project), ``adamw`` or ``sgd`` with momentum."""

    section: ClassVar[str] = "optimizer"

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.99
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        _choice(self, "name", OPTIMIZERS)
        self._set("lr", self._number("lr", low=0.0, strict_low=True))
        self._set("weight_decay", self._number("weight_decay", low=0.0))
        self._set("momentum", self._number("momentum", low=0.0, high=1.0))
        self._set(
            "betas", tuple(self._number("betas", v, low=0.0, high=1.0) for v in self._sequence("betas", (2,)))
        )


@dataclass(frozen=True)
class ScheduleConfig(SettingsSection):
    """Learning rate per iteration: linear warmup from ``lr * warmup_start_factor`` to ``lr`` over
    ``warmup_epochs``, then ``decay`` (cosine or polynomial to ``min_lr``, or constant)."""

    section: ClassVar[str] = "schedule"

    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.1
    decay: str = "cosine"
    min_lr: float = 0.0
    poly_power: float = 0.9

    def __post_init__(self) -> None:
        self._set("warmup_epochs", self._number("warmup_epochs", low=0.0))
        self._set("warmup_start_factor", self._number("warmup_start_factor", low=0.0, high=1.0))
        _choice(self, "decay", DECAYS)
        self._set("min_lr", self._number("min_lr", low=0.0))
        self._set("poly_power", self._number("poly_power", low=0.0, strict_low=True))


@dataclass(frozen=True)
class TrainingConfig(SettingsSection):
    """The training loop.

    Attributes:
        epochs: passes over the training cases.
        batch_size: patches per iteration (a loaded volume yields ``patch.samples_per_volume`` patches).
        seed: seeds Python, NumPy, torch and the data pipeline; with it a CPU run is repeatable.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (bf16 autocast on CPUs that support it, fp16 on CUDA), ``fp32``, ``bf16``, ``fp16``.
        channels_last: run the network in channels-last memory format (faster with bf16 on CPU).
        grad_clip: clip the gradient norm to this value; 0 disables.
        early_stop_patience: stop after this many validations without a better Dice; 0 disables.
        augment: apply the ``augmentation`` section to training patches.
        distributed: one process per visible GPU with torch.distributed (``--parallel``); under ``torchrun`` DDP
            is used whatever this says.
    """

    section: ClassVar[str] = "training"

    epochs: int = 10
    batch_size: int = 2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = False
    grad_clip: float = 0.0
    early_stop_patience: int = 0
    augment: bool = True
    distributed: bool = False

    def __post_init__(self) -> None:
        self._set("epochs", self._int("epochs", low=1))
        self._set("batch_size", self._int("batch_size", low=1))
        self._set("seed", self._int("seed", low=0))
        device = self.device
        if not isinstance(device, str) or not (
            device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
        ):
            raise self._fail("device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
        _choice(self, "precision", PRECISIONS)
        self._bool("channels_last")
        self._set("grad_clip", self._number("grad_clip", low=0.0))
        self._set("early_stop_patience", self._int("early_stop_patience", low=0))
        self._bool("augment")
        self._bool("distributed")


@dataclass(frozen=True)
class ValidationConfig(SettingsSection):
    """Validation on whole volumes with sliding-window inference every ``every`` epochs."""

    section: ClassVar[str] = "validation"

    every: int = 1
    overlap: float = 0.25
    sw_batch_size: int = 2
    roi_size: tuple[int, ...] | None = None  # default: the training patch size

    def __post_init__(self) -> None:
        self._set("every", self._int("every", low=1))
        _check_sliding_window(self)
        if self.roi_size is not None:
            self._set(
                "roi_size", tuple(self._int("roi_size", v, low=1) for v in self._sequence("roi_size", (2, 3)))
            )


@dataclass(frozen=True)
class InferenceConfig(SettingsSection):
    """From probabilities to a clot mask.

    ``min_peak`` keeps only the clots whose highest probability reaches it (0: every clot): clots are found at
    ``min_peak`` and outlined at ``threshold``. ``pe-seg evaluate`` prints the peak of each FROC reading.
    """

    section: ClassVar[str] = "inference"

    threshold: float = 0.5
    min_peak: float = 0.0
    min_volume_mm3: float = 0.0
    overlap: float = 0.25
    sw_batch_size: int = 2

    def __post_init__(self) -> None:
        self._set("threshold", self._number("threshold", low=0.0, high=1.0))
        self._set("min_peak", self._number("min_peak", low=0.0, high=1.0))
        self._set("min_volume_mm3", self._number("min_volume_mm3", low=0.0))
        _check_sliding_window(self)


@dataclass(frozen=True)
class OutputConfig(SettingsSection):
    """Where a run writes (config, split, metrics CSV, curves PNG, TensorBoard events, checkpoints)."""

    section: ClassVar[str] = "output"

    run_dir: str = "runs/pe_seg"
    checkpoint_every: int = 0  # also keep a checkpoint every N epochs; 0: only best and last
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.run_dir, (str, os.PathLike)) or not str(self.run_dir):
            raise self._fail("run_dir", f"expected a folder path, got {self.run_dir!r}")
        self._set("run_dir", str(self.run_dir))
        self._set("checkpoint_every", self._int("checkpoint_every", low=0))
        self._bool("tensorboard")
