"""The whole config: one :class:`Config` of every section, validated as a whole.

:data:`SECTIONS` maps each top-level YAML key to its section class; the data pipeline's settings classes
(:mod:`pe_segmentation.data.settings`) are embedded as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pe_segmentation.config.registered import LossConfig, ModelConfig
from pe_segmentation.config.sections import (
    DataConfig,
    InferenceConfig,
    OptimizerConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
    ValidationConfig,
    did_you_mean,
)
from pe_segmentation.data.settings import AugmentationSettings, PatchSettings, PreprocessingSettings
from pe_segmentation.errors import ConfigError

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
                raise ConfigError(
                    f"{key}: unknown section{did_you_mean(key, list(SECTIONS))}; sections: {', '.join(SECTIONS)}"
                )
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
        if self.patch.spatial_dims == 2 and self.augmentation.thick_slice_prob > 0:
            raise ConfigError(
                "augmentation.thick_slice_prob: 2D patches are single axial slices, there is no z to thicken; set it to 0"
            )


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


def replace_section(config: Config, section: str, **changes: Any) -> Config:
    """A copy of ``config`` with keys of one section changed (and validated)."""
    data = config.to_dict()
    data[section] = {**data[section], **changes}
    return Config.from_dict(data)
