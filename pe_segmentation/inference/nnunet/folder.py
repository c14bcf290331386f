"""An nnU-Net v2 trained-model folder: its plans, dataset description, folds and networks, read safely.

The folder is what ``nnUNetv2_train`` leaves (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__3d_fullres``)::

    plans.json        the plans: axis order, target spacing, patch size, intensity properties, the network
    dataset.json      channels, labels, file ending
    fold_N/checkpoint_final.pth (or checkpoint_best.pth)

Checkpoints and networks are read and built by :mod:`~pe_segmentation.inference.nnunet.network`, which runs
nothing a file names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pe_segmentation.errors import CheckpointError, ConfigError
from pe_segmentation.inference.nnunet.network import build_network, load_trainer_checkpoint
from pe_segmentation.inference.report import file_sha256

#: The configuration pe-seg runs (a CTPA model is a full-resolution 3D model).
CONFIGURATION = "3d_fullres"
#: ``--nnunet-checkpoint``: the checkpoint file of each fold.
CHECKPOINT_NAMES = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
#: Words that name the embolus label in ``dataset.json`` (case-insensitive, within the name's words).
EMBOLUS_WORDS = ("embol", "pe", "clot", "thromb")
#: Image readers whose arrays pe-seg reproduces: SimpleITK's voxel order (nnU-Net's NibabelIO transposes to it).
SUPPORTED_READERS = ("SimpleITKIO", "NibabelIO")


@dataclass
class NnUNetFold:
    """One fold: its checkpoint file, SHA-256, trainer and weights."""

    fold: str
    path: Path
    sha256: str
    trainer: str
    weights: dict[str, torch.Tensor]
    mirror_axes: tuple[int, ...]
    epoch: int | None = None


@dataclass
class NnUNetModel:
    """An nnU-Net v2 model folder as pe-seg runs it.

    Attributes:
        folder: the trained-model folder.
        plans: ``plans.json``.
        dataset: ``dataset.json``.
        configuration: the plans' :data:`CONFIGURATION` entry.
        label: the embolus label's name and its output channel.
        folds: the folds to average.
        plans_sha256: SHA-256 of ``plans.json`` (the plans' identity in reports).
    """

    folder: Path
    plans: dict[str, Any]
    dataset: dict[str, Any]
    configuration: dict[str, Any]
    label: tuple[str, int]
    folds: list[NnUNetFold]
    plans_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Output channels: one per label (background included)."""
        return len(self.dataset["labels"])

    @property
    def in_channels(self) -> int:
        """Input channels (``channel_names``)."""
        return len(self.dataset.get("channel_names") or self.dataset.get("modality") or {"0": "CT"})

    @property
    def patch_size(self) -> tuple[int, int, int]:
        x, y, z = (int(v) for v in self.configuration["patch_size"])
        return (x, y, z)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """The target spacing in the plans' (transposed) axis order."""
        x, y, z = (float(v) for v in self.configuration["spacing"])
        return (x, y, z)

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """Axes the trainer allows mirroring over (network axes), as the first fold records them."""
        return self.folds[0].mirror_axes

    def identity(self) -> dict[str, Any]:
        """What reports say about the model: folder, plans, configuration, label, and each fold's file hash."""
        return {
            "kind": "nnunet",
            "folder": str(self.folder),
            "dataset": self.plans.get("dataset_name"),
            "plans": self.plans.get("plans_name"),
            "plans_sha256": self.plans_sha256,
            "configuration": CONFIGURATION,
            "trainer": self.folds[0].trainer,
            "label": {"name": self.label[0], "channel": self.label[1]},
            "folds": [
                {
                    "fold": f.fold,
                    "file": f"{f.path.parent.name}/{f.path.name}",
                    "sha256": f.sha256,
                    "epoch": f.epoch,
                }
                for f in self.folds
            ],
        }

    def build_networks(self) -> list[nn.Module]:
        """One network per fold, built from the plans, with its weights loaded, in eval mode.

        Raises:
            CheckpointError: weights that do not fit the plans' network.
        """
        networks = []
        for fold in self.folds:
            network = build_network(self.configuration["architecture"], self.in_channels, self.num_classes)
            try:
                network.load_state_dict(fold.weights)
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0]
                raise CheckpointError(
                    f"{fold.path}: weights do not fit the plans' network ({first})"
                ) from None
            networks.append(network.eval())
        return networks


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: not an nnU-Net model folder (no {path.name})")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def load_nnunet_model(
    folder: str | os.PathLike[str],
    folds: Sequence[str | int] | None = None,
    checkpoint: str = "final",
    label: str | None = None,
) -> NnUNetModel:
    """Read an nnU-Net v2 trained-model folder: plans, dataset, the embolus label and the folds' weights.

    Args:
        folder: the trained-model folder (holding ``plans.json``, ``dataset.json`` and ``fold_N/``).
        folds: the folds to average (``0 1 2 3 4``, or ``all``); default: every ``fold_*`` with the checkpoint.
        checkpoint: ``final`` or ``best`` (:data:`CHECKPOINT_NAMES`).
        label: the embolus label's name in ``dataset.json``; default: the one label whose name says embolus
            (:data:`EMBOLUS_WORDS`), or the only foreground label.

    Raises:
        CheckpointError: not a model folder, no 3d_fullres configuration, a missing or unsafe checkpoint, a
            model pe-seg cannot run the nnU-Net way (regions, readers, normalisation, several input channels).
        ConfigError: a bad ``checkpoint`` or ``label`` choice.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"{root}: no such nnU-Net model folder")
    if checkpoint not in CHECKPOINT_NAMES:
        raise ConfigError(
            f"--nnunet-checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}, got {checkpoint!r}"
        )
    plans = _read_json(root / "plans.json")
    dataset = _read_json(root / "dataset.json")
    configuration = _configuration(plans, root)
    _check_supported(plans, dataset, configuration, root)
    chosen = _choose_label(dataset, label, root)
    paths = _fold_paths(root, folds, CHECKPOINT_NAMES[checkpoint])
    loaded = [_load_fold(name, path) for name, path in paths]
    return NnUNetModel(root, plans, dataset, configuration, chosen, loaded, file_sha256(root / "plans.json"))


def _configuration(plans: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """The plans' 3d_fullres configuration, with what it inherits (``inherits_from``) merged in."""
    configurations = plans.get("configurations") or {}
    if CONFIGURATION not in configurations:
        found = ", ".join(configurations) or "none"
        raise CheckpointError(f"{root / 'plans.json'}: no {CONFIGURATION} configuration (found: {found})")
    merged: dict[str, Any] = {}
    name: str | None = CONFIGURATION
    seen = set()
    while name is not None and name not in seen:
        seen.add(name)
        entry = configurations.get(name) or {}
        merged = {**entry, **merged}
        name = entry.get("inherits_from")
    for key in ("patch_size", "spacing", "architecture", "normalization_schemes"):
        if key not in merged:
            raise CheckpointError(f"{root / 'plans.json'}: {CONFIGURATION} has no {key!r}")
    return merged


def _check_supported(
    plans: Mapping[str, Any], dataset: Mapping[str, Any], configuration: Mapping[str, Any], root: Path
) -> None:
    """Refuse, in one line, what pe-seg does not run the nnU-Net way."""
    where = root / "plans.json"
    reader = dataset.get("overwrite_image_reader_writer") or plans.get("image_reader_writer") or "SimpleITKIO"
    if reader not in SUPPORTED_READERS:
        raise CheckpointError(
            f"{where}: image reader {reader} is not supported (pe-seg reproduces "
            f"{' and '.join(SUPPORTED_READERS)}, which read voxels in SimpleITK's order)"
        )
    if len(configuration["patch_size"]) != 3 or len(configuration["spacing"]) != 3:
        raise CheckpointError(f"{where}: {CONFIGURATION} is not a 3D configuration")
    schemes = list(configuration["normalization_schemes"])
    if schemes != ["CTNormalization"]:
        raise CheckpointError(
            f"{where}: normalisation {schemes} is not supported (a CT model has one CT channel "
            "with CTNormalization)"
        )
    if "0" not in (plans.get("foreground_intensity_properties_per_channel") or {}):
        raise CheckpointError(f"{where}: no foreground intensity properties for channel 0")
    labels = dataset.get("labels")
    if not isinstance(labels, Mapping) or any(not isinstance(v, int) for v in labels.values()):
        raise CheckpointError(
            f"{root / 'dataset.json'}: labels must map names to integers (region-based "
            "models are not supported)"
        )
    if sorted(labels.values()) != list(range(len(labels))):
        raise CheckpointError(
            f"{root / 'dataset.json'}: labels must be 0..N-1, got {sorted(labels.values())}"
        )
    if len(labels) != 2:
        raise CheckpointError(
            f"{root / 'dataset.json'}: {len(labels)} labels; pe-seg runs nnU-Net models with "
            "background and one embolus label"
        )
    for key in ("resampling_fn_data", "resampling_fn_probabilities"):
        name = configuration.get(key, "resample_data_or_seg_to_shape")
        if name != "resample_data_or_seg_to_shape":
            raise CheckpointError(f"{where}: {key} {name} is not supported")


def _choose_label(dataset: Mapping[str, Any], label: str | None, root: Path) -> tuple[str, int]:
    """The embolus label: the one named ``label``, else the one whose name says embolus, else the only one."""
    labels = {str(k): int(v) for k, v in dataset["labels"].items()}
    foreground = {k: v for k, v in labels.items() if v != 0}
    if label is not None:
        if label not in labels:
            raise ConfigError(
                f"--label {label!r} is not among {root / 'dataset.json'}'s labels: {', '.join(labels)}"
            )
        if labels[label] == 0:
            raise ConfigError(f"--label {label!r} is the background label")
        return label, labels[label]
    named = [k for k in foreground if _says_embolus(k)]
    if len(named) == 1:
        return named[0], foreground[named[0]]
    if len(foreground) == 1:
        ((name, value),) = foreground.items()
        return name, value
    raise ConfigError(
        f"{root / 'dataset.json'}: cannot tell the embolus label among {', '.join(foreground)}; "
        "give --label NAME"
    )


def _says_embolus(name: str) -> bool:
    words = list("".join(c if c.isalnum() else " " for c in name.lower()).split())
    return any(w.startswith(word) if len(word) > 2 else w == word for w in words for word in EMBOLUS_WORDS)


def _fold_paths(root: Path, folds: Sequence[str | int] | None, filename: str) -> list[tuple[str, Path]]:
    """``(fold, checkpoint file)`` of the folds asked for, or of every fold folder holding ``filename``."""
    if folds is None:
        found = sorted(p for p in root.glob("fold_*") if (p / filename).is_file())
        if not found:
            raise CheckpointError(f"{root}: no fold_*/{filename}")
        return [(p.name[len("fold_") :], p / filename) for p in found]
    paths = []
    for fold in folds:
        path = root / f"fold_{fold}" / filename
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found (fold {fold})")
        paths.append((str(fold), path))
    if not paths:
        raise ConfigError("--folds names no fold")
    return paths


def _load_fold(fold: str, path: Path) -> NnUNetFold:
    data = load_trainer_checkpoint(path)
    axes = data.get("inference_allowed_mirroring_axes")
    epoch = data.get("current_epoch")
    return NnUNetFold(
        fold=fold,
        path=path,
        sha256=file_sha256(path),
        trainer=str(data.get("trainer_name") or "nnUNetTrainer"),
        weights=dict(data["network_weights"]),
        mirror_axes=tuple(int(a) for a in axes) if axes is not None else (),
        epoch=int(epoch) if epoch is not None else None,
    )
