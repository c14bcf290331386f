"""``configs/metadata.json`` against the mandatory fields of the MONAI bundle specification, and against the
shipped network (its schema URL is not reachable offline, so ``monai.bundle verify_metadata`` cannot run here)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pe_segmentation.config import Config
from pe_segmentation.errors import ConfigError

#: Top-level fields of ``metadata.json`` that the MONAI bundle specification makes mandatory.
METADATA_FIELDS = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
#: Fields of a tensor format specifier (``network_data_format.outputs.pred``) ...
OUTPUT_TENSOR_FIELDS = (
    "type",
    "format",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
)
#: ... and of an input one (``network_data_format.inputs.image``), which also names its modality.
INPUT_TENSOR_FIELDS = (*OUTPUT_TENSOR_FIELDS, "modality")


def check_metadata(metadata: Mapping[str, Any] | str | os.PathLike[str]) -> list[str]:
    """Check ``metadata.json`` against the mandatory fields of the MONAI bundle specification.

    Checks presence and basic types: the mandatory top-level fields, a changelog entry for ``version``,
    ``network_data_format.inputs.image`` and ``outputs.pred`` with every field of a tensor format specifier
    (``num_channels`` an integer, ``spatial_shape`` a list of the network's spatial dimensions, ``dtype`` a torch
    dtype name, ``channel_def`` one entry per channel), in the form ``monai.bundle verify_net_in_out`` reads.

    Args:
        metadata: the parsed metadata, or the path of the JSON file.

    Returns:
        One line per problem (``network_data_format.inputs.image.dtype: missing``); empty when the file is valid.

    Raises:
        ConfigError: the file cannot be read or is not a JSON object.
    """
    if not isinstance(metadata, Mapping):
        path = Path(metadata)
        try:
            metadata = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read bundle metadata ({err})") from None
        if not isinstance(metadata, Mapping):
            raise ConfigError(f"{path}: bundle metadata must be a JSON object")
    problems = [f"{name}: missing" for name in METADATA_FIELDS if name not in metadata]
    for name in ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description"):
        if name in metadata and (not isinstance(metadata[name], str) or not metadata[name].strip()):
            problems.append(f"{name}: expected a non-empty string")
    changelog = metadata.get("changelog")
    if "changelog" in metadata and not isinstance(changelog, Mapping):
        problems.append("changelog: expected an object of version -> change")
    elif isinstance(changelog, Mapping) and metadata.get("version") not in changelog:
        problems.append(f"changelog: no entry for version {metadata.get('version')!r}")
    packages = metadata.get("required_packages_version")
    if "required_packages_version" in metadata and not isinstance(packages, Mapping):
        problems.append("required_packages_version: expected an object of package -> version")
    formats = metadata.get("network_data_format")
    if "network_data_format" in metadata:
        if not isinstance(formats, Mapping):
            return [*problems, "network_data_format: expected an object with inputs and outputs"]
        for group, key, fields in (
            ("inputs", "image", INPUT_TENSOR_FIELDS),
            ("outputs", "pred", OUTPUT_TENSOR_FIELDS),
        ):
            where = f"network_data_format.{group}.{key}"
            spec = (formats.get(group) or {}).get(key) if isinstance(formats.get(group), Mapping) else None
            if not isinstance(spec, Mapping):
                problems.append(f"{where}: missing")
                continue
            problems += [f"{where}.{name}: missing" for name in fields if name not in spec]
            problems += _tensor_problems(where, spec)
    return problems


def _tensor_problems(where: str, spec: Mapping[str, Any]) -> list[str]:
    problems = []
    channels = spec.get("num_channels")
    if "num_channels" in spec and (
        isinstance(channels, bool) or not isinstance(channels, int) or channels < 1
    ):
        problems.append(f"{where}.num_channels: expected an integer >= 1, got {channels!r}")
    shape = spec.get("spatial_shape")
    if "spatial_shape" in spec and (not isinstance(shape, list) or len(shape) not in (2, 3)):
        problems.append(f"{where}.spatial_shape: expected a list of 2 or 3 sizes, got {shape!r}")
    dtype = spec.get("dtype")
    if "dtype" in spec and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        problems.append(f"{where}.dtype: not a torch dtype name: {dtype!r}")
    channel_def = spec.get("channel_def")
    wanted = [str(i) for i in range(channels)] if isinstance(channels, int) else None
    if (
        "channel_def" in spec
        and wanted is not None
        and (not isinstance(channel_def, Mapping) or set(channel_def) != set(wanted))
    ):
        problems.append(f"{where}.channel_def: expected one entry per channel, '0' to '{len(wanted) - 1}'")
    if "value_range" in spec and not isinstance(spec["value_range"], list):
        problems.append(f"{where}.value_range: expected a list")
    if "is_patch_data" in spec and not isinstance(spec["is_patch_data"], bool):
        problems.append(f"{where}.is_patch_data: expected true or false")
    return problems


def model_problems(metadata: Mapping[str, Any], config: Config) -> list[str]:
    """Where the metadata's channel counts and dimensions disagree with the network of ``config``."""
    formats = metadata.get("network_data_format") or {}
    image = (formats.get("inputs") or {}).get("image") or {}
    pred = (formats.get("outputs") or {}).get("pred") or {}
    params = config.model.params
    expected = {
        "inputs.image.num_channels": (image.get("num_channels"), int(params.get("in_channels", 1))),
        "outputs.pred.num_channels": (pred.get("num_channels"), int(params.get("out_channels", 2))),
        "inputs.image.spatial_shape": (len(image.get("spatial_shape") or ()), config.patch.spatial_dims),
    }
    return [
        f"network_data_format.{key}: {found!r} in metadata.json, the network has {want!r}"
        for key, (found, want) in expected.items()
        if found != want
    ]
