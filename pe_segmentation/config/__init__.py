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

Modules: :mod:`~pe_segmentation.config.sections` (the plain sections), :mod:`~pe_segmentation.config.registered`
(``model`` and ``loss``), :mod:`~pe_segmentation.config.schema` (:class:`Config`) and
:mod:`~pe_segmentation.config.loading` (YAML files and ``--set`` overrides).
"""

from __future__ import annotations

from pe_segmentation.config.loading import (
    apply_overrides,
    config_to_yaml,
    load_config,
    parse_override,
    read_yaml,
)
from pe_segmentation.config.registered import LossConfig, ModelConfig
from pe_segmentation.config.schema import SECTIONS, Config, replace_section
from pe_segmentation.config.sections import (
    CACHE_MODES,
    DATASETS,
    DECAYS,
    OPTIMIZERS,
    PRECISIONS,
    DataConfig,
    InferenceConfig,
    OptimizerConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
    ValidationConfig,
)

__all__ = [
    "CACHE_MODES",
    "DATASETS",
    "DECAYS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SECTIONS",
    "Config",
    "DataConfig",
    "InferenceConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "OutputConfig",
    "ScheduleConfig",
    "TrainingConfig",
    "ValidationConfig",
    "apply_overrides",
    "config_to_yaml",
    "load_config",
    "parse_override",
    "read_yaml",
    "replace_section",
]
