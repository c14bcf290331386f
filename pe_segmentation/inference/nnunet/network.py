"""An nnU-Net v2 trainer checkpoint and network, read and built without running anything a file names.

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
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pe_segmentation.errors import CheckpointError

#: What a network class name and its layer types may name (no other module is imported for a plans file).
ALLOWED_CLASS_PREFIXES = ("dynamic_network_architectures.architectures.",)
ALLOWED_LAYER_PREFIXES = ("torch.nn.",)


def _numpy_globals() -> list[Any]:
    """The NumPy types a trainer checkpoint pickles: scalars (``np.float64`` values of its logging and EMA) with
    their dtypes, under NumPy 2's and NumPy 1's module names (checkpoints saved with either)."""
    scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]  # NumPy 2's home of the scalar constructor
    names: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    for kind in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        names.append(getattr(np.dtypes, kind))
    return names


NUMPY_GLOBALS = _numpy_globals()


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
