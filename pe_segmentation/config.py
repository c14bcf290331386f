"""The one configuration schema of pe-seg: typed sections loaded from YAML, overridable from the command line.

A run is described by a :class:`Config`, made of sections (each a frozen, validated dataclass)::

    data:          where the cases are and how they are split and cached
    preprocessing: :class:`~pe_segmentation.data.settings.PreprocessingSettings`
    patch:         :class:`~pe_segmentation.data.settings.PatchSettings`
    augmentation:  :class:`~pe_segmentation.data.settings.AugmentationSettings`
    model:         ``name`` and the network's parameters (checked against the network registry)
    loss:          ``name``, ``deep_supervision`` and the loss's parameters (checked against the loss registry)
    optimizer, schedule, training, validation, inference, output

YAML is read with ``yaml.safe_load`` only: a config holds data, never code. Unknown keys and bad values raise
:class:`~pe_segmentation.errors.ConfigError` naming the key path (``optimizer.lr: must be > 0, got -1``) with a
"did you mean" for typos. ``--set a.b=value`` overrides any key (the value is parsed as YAML). The resolved
config (:meth:`Config.to_dict`) is saved in the run folder and in every checkpoint.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from pe_segmentation.data.settings import (
    AugmentationSettings,
    PatchSettings,
    PreprocessingSettings,
    SettingsSection,
)
from pe_segmentation.errors import ConfigError

DATASETS = ("datalist", "synthetic", "folder", "fumpe", "cadpe")
CACHE_MODES = ("none", "memory", "disk")
OPTIMIZERS = ("adam", "adamw", "sgd")
DECAYS = ("cosine", "poly", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _choice(section: SettingsSection, name: str, choices: Sequence[str]) -> None:
    value = getattr(section, name)
    if not isinstance(value, str) or value.lower() not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise section._fail(name, f"expected one of {', '.join(choices)}, got {value!r}{hint}")
    section._set(name, value.lower())


def _optional_str(section: SettingsSection, name: str) -> None:
    value = getattr(section, name)
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise section._fail(name, f"expected a path or null, got {value!r}")
    if value is not None:
        section._set(name, str(value))


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
        cache: MONAI dataset caching: ``none``, ``memory`` or ``disk`` (in ``<run_dir>/cache``).
        num_workers: data loader worker processes.
    """

    section: ClassVar[str] = "data"

    dataset: str = "datalist"
    path: str | None = None
    image_key: str = "image"
    val_fraction: float = 0.2
    split_file: str | None = None
    cache: str = "memory"
    num_workers: int = 0

    def __post_init__(self) -> None:
        _choice(self, "dataset", DATASETS)
        _optional_str(self, "path")
        _optional_str(self, "split_file")
        if not isinstance(self.image_key, str) or not self.image_key:
            raise self._fail("image_key", f"expected a non-empty string, got {self.image_key!r}")
        self._set("val_fraction", self._number("val_fraction", low=0.0, high=0.9))
        _choice(self, "cache", CACHE_MODES)
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
        self._set("overlap", self._number("overlap", low=0.0, high=0.95))
        self._set("sw_batch_size", self._int("sw_batch_size", low=1))
        if self.roi_size is not None:
            self._set(
                "roi_size", tuple(self._int("roi_size", v, low=1) for v in self._sequence("roi_size", (2, 3)))
            )


@dataclass(frozen=True)
class InferenceConfig(SettingsSection):
    """From probabilities to a clot mask."""

    section: ClassVar[str] = "inference"

    threshold: float = 0.5
    min_volume_mm3: float = 0.0
    overlap: float = 0.25
    sw_batch_size: int = 2

    def __post_init__(self) -> None:
        self._set("threshold", self._number("threshold", low=0.0, high=1.0))
        self._set("min_volume_mm3", self._number("min_volume_mm3", low=0.0))
        self._set("overlap", self._number("overlap", low=0.0, high=0.95))
        self._set("sw_batch_size", self._int("sw_batch_size", low=1))


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


@dataclass(frozen=True)
class ModelConfig:
    """A registered network and its parameters (``pe_segmentation.networks.network_parameters`` lists them)."""

    name: str = "unet"
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelConfig:
        from pe_segmentation.networks import network_parameters, resolve_name

        data = dict(data or {})
        try:
            name = resolve_name(str(data.pop("name", cls.name)))
        except ConfigError as err:
            raise ConfigError(f"model.name: {err}") from None
        _check_registry_keys("model", data, network_parameters(name))
        return cls(name, data)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **_plain(self.params)}


@dataclass(frozen=True)
class LossConfig:
    """A registered loss, its parameters, and whether deep-supervision outputs are weighted together."""

    name: str = "dice_ce"
    deep_supervision: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LossConfig:
        from pe_segmentation.losses import available_losses, loss_parameters

        data = dict(data or {})
        name = str(data.pop("name", cls.name))
        if name not in available_losses():
            try:
                loss_parameters(name)  # resolves aliases, or raises the registry's error with a suggestion
            except ConfigError as err:
                raise ConfigError(f"loss.name: {err}") from None
        deep = data.pop("deep_supervision", False)
        if not isinstance(deep, bool):
            raise ConfigError(f"loss.deep_supervision: expected true or false, got {deep!r}")
        _check_registry_keys("loss", data, loss_parameters(name))
        return cls(name, deep, data)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "deep_supervision": self.deep_supervision, **_plain(self.params)}


def _check_registry_keys(section: str, data: Mapping[str, Any], accepted: Sequence[str]) -> None:
    for key in data:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), list(accepted), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{section}.{key}: unknown key{hint}; accepted: {', '.join(accepted)}")


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so that the dict is YAML/JSON-ready."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


SECTIONS: dict[str, Any] = {
    "data": DataConfig,
    "preprocessing": PreprocessingSettings,
    "patch": PatchSettings,
    "augmentation": AugmentationSettings,
    "model": ModelConfig,
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "training": TrainingConfig,
    "validation": ValidationConfig,
    "inference": InferenceConfig,
    "output": OutputConfig,
}


@dataclass(frozen=True)
class Config:
    """A whole run's configuration; every section has defaults."""

    data: DataConfig = field(default_factory=DataConfig)
    preprocessing: PreprocessingSettings = field(default_factory=PreprocessingSettings)
    patch: PatchSettings = field(default_factory=PatchSettings)
    augmentation: AugmentationSettings = field(default_factory=AugmentationSettings)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Config:
        """Build and validate a config; missing sections and keys take their defaults.

        Raises:
            ConfigError: unknown section or key (with a suggestion), or an invalid value, naming its path.
        """
        data = dict(data or {})
        for key in data:
            if key not in SECTIONS:
                close = difflib.get_close_matches(str(key), list(SECTIONS), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{key}: unknown section{hint}; sections: {', '.join(SECTIONS)}")
        sections = {}
        for name, section_type in SECTIONS.items():
            value = data.get(name)
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{name}: expected a mapping of keys, got {type(value).__name__}")
            sections[name] = _with_section_name(name, section_type, value)
        config = cls(**sections)
        config._check_consistency()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what is saved beside a run and in its checkpoints)."""
        return {name: getattr(self, name).to_dict() for name in SECTIONS}

    def _check_consistency(self) -> None:
        spatial_dims = self.model.params.get("spatial_dims", 3)
        if spatial_dims != self.patch.spatial_dims:
            raise ConfigError(
                f"model.spatial_dims ({spatial_dims}) differs from patch.spatial_dims ({self.patch.spatial_dims})"
            )
        roi = self.validation.roi_size
        if roi is not None and len(roi) != len(self.patch.patch_size or ()):
            raise ConfigError(f"validation.roi_size {list(roi)} does not match patch.patch_size's dimensions")


def _with_section_name(name: str, section_type: Any, value: Mapping[str, Any] | None) -> Any:
    """Build a section; the settings classes of the data pipeline name themselves, so map their errors' prefix
    onto this schema's key (``patches.x`` -> ``patch.x``)."""
    try:
        return section_type.from_dict(value)
    except ConfigError as err:
        prefix = getattr(section_type, "section", name)
        message = str(err)
        if isinstance(prefix, str) and prefix != name and message.startswith(prefix + "."):
            message = name + message[len(prefix) :]
        raise ConfigError(message) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=1e-4"`` -> ``(["optimizer", "lr"], 0.0001)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. optimizer.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err.problem})") from None
    return key.strip().split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``KEY.PATH=VALUE`` override set (missing sections are created)."""
    result = _plain(dict(data))
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return result


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping from ``path`` (``yaml.safe_load``: tags that would build objects are refused)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}: invalid YAML{at} ({getattr(err, 'problem', None) or err})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return dict(data)


def load_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML recipe (or start from defaults), apply ``--set`` overrides, validate.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown key or bad value; the message names the file or
            key path.
    """
    data = read_yaml(path) if path is not None else {}
    try:
        return Config.from_dict(apply_overrides(data, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def replace_section(config: Config, section: str, **changes: Any) -> Config:
    """A copy of ``config`` with keys of one section changed (and validated)."""
    data = config.to_dict()
    data[section] = {**data[section], **changes}
    return Config.from_dict(data)
