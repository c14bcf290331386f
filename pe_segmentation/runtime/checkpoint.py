"""Checkpoints: one file each, written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain data only (tensors, dicts, lists, numbers, strings, ``None``), so that
``weights_only`` loading accepts it and nothing in the file can run code::

    format            "pe-seg-checkpoint"
    format_version    1
    kind              "best" | "last" | "periodic"
    model             the network's state dict (unwrapped from DDP)
    optimizer         optimizer state dict
    scheduler         learning-rate scheduler state dict (iteration counter, base rates)
    scaler            fp16 gradient-scaler state dict, or None
    trainer           {"epoch", "iteration", "epoch_length", "max_epochs", "best_dice", "best_epoch",
                       "stale_validations", "seed", "world_size"}
    metrics           the latest validation metrics ({"val_dice": ...}, empty without validation)
    rng               {"world_size": N, "ranks": [per-process RNG states]}; each holds torch (CPU), CUDA,
                      NumPy and Python generator states as tensors and numbers
    config            the resolved run config (``Config.to_dict()``); its ``preprocessing.spacing`` is the one
                      spacing the network was trained at and is run at
    spacing           {"mm": [x, y, z], "source": "recipe" | "training-set median rule" | ...}: that spacing
                      and how it was chosen (absent from checkpoints of pe-seg before issue 15)
    versions          {"pe_segmentation", "torch", "monai", "ignite", "numpy", "python"}

MONAI's ``CheckpointSaver`` is not used: it saves through ignite's ``Checkpoint`` (no fsync/rename, so a crash
can leave a truncated file under the final name) and stores whole objects keyed by name, not this plain,
versioned, ``weights_only``-safe layout with RNG states and config.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pe_segmentation.config import Config
from pe_segmentation.errors import CheckpointError, ConfigError
from pe_segmentation.io.atomic import atomic_output
from pe_segmentation.versions import package_versions as _package_versions

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pe-seg-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside a DDP / DataParallel / ``torch.compile`` wrapper (the model itself otherwise)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


# ------------------------------------------------------------------------------------------------ RNG states


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a checkpoint, as strings."""
    return _package_versions("ignite")


def get_rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, NumPy, Python) as tensors and plain numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states saved by :func:`get_rng_state` (CUDA states only where the same GPUs are visible)."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    py_state = state["python"]
    random.setstate(
        (int(py_state["version"]), tuple(int(v) for v in py_state["state"].tolist()), py_state["gauss_next"])
    )


# ------------------------------------------------------------------------------------------------ save / load


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (built by the trainer, see the module docstring) to ``path`` atomically.

    The format fields and package versions are added here. The file appears whole under its name or not at
    all (temporary file in the same folder, fsync, rename).
    """
    data = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **payload}
    data.setdefault("versions", package_versions())
    data.setdefault("saved_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    data = _plain_data(data, "checkpoint")
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(data, tmp)
    return path


def _plain_data(value: Any, where: str) -> Any:
    """``value`` with only types that ``weights_only`` loading accepts (checked before anything is written).

    ``str`` / ``int`` / ``float`` subclasses (``torch.__version__`` is a ``TorchVersion``) and NumPy scalars
    become their plain type; anything else that is not a tensor or a container of these is refused.
    """
    if value is None or isinstance(value, (bool, torch.Tensor, torch.dtype, torch.device, torch.Size)):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, Mapping):
        return {key: _plain_data(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain_data(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a weights_only checkpoint")


def _first_line(err: BaseException, marker: str | None = None) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if marker is not None:
        lines = [line for line in lines if marker in line] or lines
    return lines[0] if lines else type(err).__name__


def _is_state_dict(data: Any) -> bool:
    return (
        isinstance(data, Mapping) and bool(data) and all(isinstance(v, torch.Tensor) for v in data.values())
    )


def _is_bare_pickle(path: Path) -> bool:
    """Whether ``path`` starts like a pickle stream of protocol 3 or later (torch's own files are zip archives
    or, in the legacy format, start with a protocol-2 magic number)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 3 <= head[1] <= pickle.HIGHEST_PROTOCOL


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    A bare state dict (a file holding only ``{name: tensor}``, as other tools save) is accepted and returned
    as ``{"model": state_dict}`` so that it can seed fine-tuning.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, holds objects that ``weights_only`` loading
            refuses (arbitrary pickled classes, which could run code), or is not a pe-seg checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if _is_bare_pickle(path):  # what pickle.dump writes (protocol >= 3): torch's reader takes none of it
            raise CheckpointError(
                f"{path}: refused by weights_only loading: a plain Python pickle, not a torch checkpoint "
                "(pickles can run code when loaded; nothing in it was read)"
            ) from None
        if "Unsupported global" not in str(err):  # a damaged stream, not an object that weights_only refuses
            raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(err)})") from None
        raise CheckpointError(
            f"{path}: refused by weights_only loading: it holds pickled objects other than tensors and plain "
            f"data (not a pe-seg checkpoint, possibly unsafe; {_first_line(err, 'WeightsUnpickler error')})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(err)})") from None
    if isinstance(data, Mapping) and data.get("format") == CHECKPOINT_FORMAT:
        version = data.get("format_version")
        if version != CHECKPOINT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {version!r} is not supported")
        if not _is_state_dict(data.get("model")):
            raise CheckpointError(f"{path}: corrupt checkpoint (no model weights)")
        return dict(data)
    if _is_state_dict(data):
        return {"model": dict(data)}
    raise CheckpointError(
        f"{path}: not a pe-seg checkpoint (found {type(data).__name__} without model weights)"
    )


def saved_config(checkpoint: Mapping[str, Any], path: str | os.PathLike[str], needed_for: str) -> Config:
    """The training config a pe-seg checkpoint carries, read through the schema.

    Args:
        checkpoint: the loaded checkpoint (:func:`load_checkpoint`).
        path: its file, for the messages.
        needed_for: what the caller needs the config for, said when there is none.

    Raises:
        CheckpointError: no config in it (a bare state dict?), or one this pe-seg version cannot read.
    """
    data = checkpoint.get("config")
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: holds no training config (a bare state dict?); {needed_for}")
    try:
        return Config.from_dict(data)
    except ConfigError as err:
        raise CheckpointError(f"{path}: its config is not valid with this pe-seg version ({err})") from None


def _model_name(checkpoint: Mapping[str, Any]) -> str | None:
    config = checkpoint.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("model"), Mapping):
        name = config["model"].get("name")
        return str(name) if name is not None else None
    return None


def check_architecture(
    checkpoint: Mapping[str, Any],
    model: nn.Module,
    model_config: Mapping[str, Any] | None = None,
    source: str = "",
) -> None:
    """Refuse weights that do not fit ``model``: another network, or the same network with other sizes.

    Args:
        checkpoint: from :func:`load_checkpoint`.
        model: the network the weights are for (DDP wrappers are looked through).
        model_config: the run's ``model`` section as a dict (``name`` and parameters), compared by name with
            the checkpoint's.
        source: the checkpoint's path, for the message.

    Raises:
        CheckpointError: one line naming the first difference.
    """
    where = f"{source}: " if source else ""
    saved_name = _model_name(checkpoint)
    wanted = (model_config or {}).get("name")
    if saved_name is not None and wanted is not None and saved_name != wanted:
        raise CheckpointError(f"{where}checkpoint holds a '{saved_name}' network; this run builds '{wanted}'")
    expected = unwrap_model(model).state_dict()
    saved = checkpoint["model"]
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        name = f"'{wanted}' " if wanted else ""
        raise CheckpointError(
            f"{where}checkpoint weights do not fit the {name}network: {'; '.join(parts)} parameter names"
        )
    for key, tensor in expected.items():
        if tuple(saved[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{where}checkpoint weights do not fit the network: {key} has shape {list(saved[key].shape)} "
                f"in the checkpoint, {list(tensor.shape)} in the network (other model parameters?)"
            )


def load_model_weights(
    model: nn.Module,
    checkpoint: Mapping[str, Any],
    model_config: Mapping[str, Any] | None = None,
    source: str = "",
) -> None:
    """Check the architecture (:func:`check_architecture`), then copy the weights into ``model``."""
    check_architecture(checkpoint, model, model_config, source)
    unwrap_model(model).load_state_dict(checkpoint["model"], strict=True)


def find_resume_checkpoint(run_dir_or_file: str | os.PathLike[str]) -> Path:
    """The checkpoint to resume from: the file itself, or ``<run_dir>/checkpoints/last.pt``.

    Raises:
        CheckpointError: neither exists.
    """
    path = Path(run_dir_or_file).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / CHECKPOINT_DIR / LAST_NAME, path / LAST_NAME):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path}: no {CHECKPOINT_DIR}/{LAST_NAME} to resume from in this run folder")
    raise CheckpointError(f"{path}: no such run folder or checkpoint file")


def run_dir_of_checkpoint(checkpoint_path: str | os.PathLike[str]) -> Path:
    """The run folder a checkpoint belongs to (``run/checkpoints/x.pt`` -> ``run``)."""
    path = Path(checkpoint_path).expanduser().resolve()
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
