"""An nnU-Net v2 trained-model folder: its plans, dataset description, folds and networks, read safely.

The folder is what ``nnUNetv2_train`` leaves (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__3d_fullres``)::

    plans.json        the plans: axis order, target spacing, patch size, intensity properties, the network
    dataset.json      channels, labels, file ending
    fold_N/checkpoint_final.pth (or checkpoint_best.pth)

What nnU-Net does differently here, and why:

* **Checkpoints** are read with ``torch.load(weights_only=True)``: nnU-Net itself unpickles them whole
  (``weights_only=False``), which runs whatever code a file holds. A trainer checkpoint holds only tensors,
  plain data, a ``torch.device`` and NumPy scalars (its logging and EMA entries), so the NumPy types in
  :data:`NUMPY_GLOBALS` are allowed and nothing else; anything else is refused in one line.
* **The network** is built from the plans' ``architecture`` the way nnU-Net's ``get_network_from_plans`` does,
  without nnU-Net's trainer-class search (it imports every trainer module, one of which needs timm and
  torchvision) and without ``pydoc.locate`` on any name a plans file gives: the class must come from
  ``dynamic_network_architectures`` and its layer types from ``torch.nn`` (:func:`locate_allowed`).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pe_segmentation.errors import CheckpointError, ConfigError
from pe_segmentation.inference.report import file_sha256

#: The configuration pe-seg runs (a CTPA model is a full-resolution 3D model).
CONFIGURATION = "3d_fullres"
#: ``--nnunet-checkpoint``: the checkpoint file of each fold.
CHECKPOINT_NAMES = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
#: Words that name the embolus label in ``dataset.json`` (case-insensitive, within the name's words).
EMBOLUS_WORDS = ("embol", "pe", "clot", "thromb")
#: What a network class name and its layer types may name (no other module is imported for a plans file).
ALLOWED_CLASS_PREFIXES = ("dynamic_network_architectures.architectures.",)
ALLOWED_LAYER_PREFIXES = ("torch.nn.",)
#: Image readers whose arrays pe-seg reproduces: SimpleITK's voxel order (nnU-Net's NibabelIO transposes to it).
SUPPORTED_READERS = ("SimpleITKIO", "NibabelIO")


def _numpy_globals() -> list[Any]:
    """The NumPy types a trainer checkpoint pickles: scalars (``np.float64`` values of its logging and EMA) with
    their dtypes, under NumPy 2's and NumPy 1's module names (checkpoints saved with either)."""
    scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]  # NumPy 2's home of the scalar constructor
    names: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    for kind in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        names.append(getattr(np.dtypes, kind))
    return names


NUMPY_GLOBALS = _numpy_globals()


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


def load_trainer_checkpoint(path: Path) -> dict[str, Any]:
    """A trainer checkpoint read with ``weights_only=True``, allowing only :data:`NUMPY_GLOBALS` beyond what
    torch allows.

    Raises:
        CheckpointError: a missing, corrupt or unsafe file, or one without network weights.
    """
    try:
        with torch.serialization.safe_globals(NUMPY_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL (\S+)", text)
        if found is not None or "Unsupported global" in text:
            what = f"it names {found.group(1)}" if found is not None else text.splitlines()[0]
            raise CheckpointError(
                f"{path}: refused by weights_only loading: it holds objects other than tensors, "
                f"plain data and NumPy scalars ({what}; nothing in it was run)"
            ) from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({text.splitlines()[0]})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError) as err:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({str(err).splitlines()[0]})"
        ) from None
    if not isinstance(data, Mapping) or not isinstance(data.get("network_weights"), Mapping):
        raise CheckpointError(f"{path}: not an nnU-Net trainer checkpoint (no network_weights)")
    return dict(data)


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


def locate_allowed(name: str, prefixes: Sequence[str]) -> Any:
    """The object a dotted ``name`` names, imported only from modules under ``prefixes``.

    Raises:
        CheckpointError: a name outside ``prefixes``, or one that does not exist.
    """
    if not any(name.startswith(prefix) for prefix in prefixes):
        raise CheckpointError(f"plans.json names {name!r}: only {', '.join(prefixes)}* may be named")
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError as err:
            if parts[0] == "dynamic_network_architectures":
                raise CheckpointError(
                    f"{name}: dynamic_network_architectures is not installed; install pe-seg's nnunet extra "
                    f"(docs/inference.md, 'nnU-Net models') ({err})"
                ) from None
            continue
        try:
            for attr in parts[cut:]:
                value = getattr(value, attr)
        except AttributeError:
            break
        return value
    raise CheckpointError(f"plans.json names {name!r}, which does not exist")


def build_network(architecture: Mapping[str, Any], in_channels: int, num_classes: int) -> nn.Module:
    """The plans' network without deep supervision, as nnU-Net's ``get_network_from_plans`` builds it for
    inference (its own initialisation is skipped: the weights are loaded next).

    Raises:
        CheckpointError: an architecture entry naming something outside the allowed modules.
    """
    kwargs = dict(architecture.get("arch_kwargs") or {})
    for key in architecture.get("_kw_requires_import") or ():
        if kwargs.get(key) is not None:
            kwargs[key] = locate_allowed(str(kwargs[key]), ALLOWED_LAYER_PREFIXES)
    network_class = locate_allowed(str(architecture.get("network_class_name")), ALLOWED_CLASS_PREFIXES)
    kwargs["deep_supervision"] = False
    try:
        network = network_class(input_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise CheckpointError(f"plans.json: cannot build {network_class.__name__} ({err})") from None
    if not isinstance(network, nn.Module):
        raise CheckpointError(f"plans.json: {network_class.__name__} is not a torch module")
    return network
