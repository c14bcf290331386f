"""The base of every settings section: ``from_dict`` / ``to_dict`` and one-line checks of values.

Each section (:mod:`~pe_segmentation.data.settings`, :mod:`~pe_segmentation.config.sections`) is a frozen
dataclass of primitives and tuples with defaults, validated in ``__post_init__`` with a one-line
:class:`~pe_segmentation.errors.ConfigError` that names the key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pe_segmentation.errors import ConfigError

_SectionT = TypeVar("_SectionT", bound="SettingsSection")


def _yaml_float(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; accept such numeric strings as numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _fields(section: object) -> tuple[dataclasses.Field[Any], ...]:
    """The dataclass fields of a settings class or instance (every settings section is a dataclass)."""
    if not dataclasses.is_dataclass(section):
        raise TypeError(f"{section!r} is not a dataclass")
    return dataclasses.fields(section)


class SettingsSection:
    """Shared ``from_dict`` / ``to_dict`` and value checks of the settings dataclasses."""

    section: ClassVar[str] = "settings"

    @classmethod
    def from_dict(cls: type[_SectionT], data: Mapping[str, Any] | None) -> _SectionT:
        """Build the settings from a mapping; missing keys take their defaults, unknown keys are refused.

        Raises:
            ConfigError: a key is unknown (with a suggestion) or a value is invalid.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.section}: expected a mapping, got {type(data).__name__}")
        names = [f.name for f in _fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{cls.section}.{key}: unknown key{hint}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON/YAML-ready mapping (tuples become lists)."""
        out: dict[str, Any] = {}
        for entry in _fields(self):
            value = getattr(self, entry.name)
            if isinstance(value, SettingsSection):
                value = value.to_dict()  # a nested section (preprocessing.normalization)
            out[entry.name] = list(value) if isinstance(value, tuple) else value
        return out

    # Value checks. Each returns the normalised value or raises a one-line ConfigError naming the key.

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen dataclass: normalise in __post_init__ only

    def _fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.section}.{name}: {message}")

    def _bool(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, bool):
            raise self._fail(name, f"expected true or false, got {value!r}")

    def _number(
        self,
        name: str,
        value: Any = None,
        *,
        low: float | None = None,
        high: float | None = None,
        strict_low: bool = False,
    ) -> float:
        value = getattr(self, name) if value is None else value
        value = _yaml_float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._fail(name, f"expected a finite number, got {value!r}")
        if low is not None and (value <= low if strict_low else value < low):
            raise self._fail(name, f"must be {'>' if strict_low else '>='} {low:g}, got {value!r}")
        if high is not None and value > high:
            raise self._fail(name, f"must be <= {high:g}, got {value!r}")
        return float(value)

    def _int(self, name: str, value: Any = None, *, low: int) -> int:
        value = getattr(self, name) if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self._fail(name, f"expected an integer >= {low}, got {value!r}")
        return int(value)

    def _sequence(self, name: str, lengths: tuple[int, ...]) -> tuple[Any, ...]:
        value = getattr(self, name)
        if (
            isinstance(value, (str, bytes))
            or not isinstance(value, (list, tuple))
            or len(value) not in lengths
        ):
            expected = " or ".join(str(n) for n in lengths)
            raise self._fail(name, f"expected a list of {expected} values, got {value!r}")
        return tuple(value)
