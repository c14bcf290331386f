"""Config files and overrides: read a YAML recipe, apply ``--set KEY.PATH=VALUE``, write the resolved YAML.

YAML is read with ``yaml.safe_load`` only: a config holds data, never code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pe_segmentation.config.schema import Config
from pe_segmentation.config.sections import plain
from pe_segmentation.errors import ConfigError


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
    result = plain(dict(data))
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
