"""The ``model`` and ``loss`` sections: a registered name and its parameters, checked against the registry.

Unlike the other sections their keys are not fixed here: the network or loss registry says which parameters
a name accepts, so a typo is caught when the config is read, not when training starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pe_segmentation.config.sections import did_you_mean, plain
from pe_segmentation.errors import ConfigError
from pe_segmentation.losses import available_losses, loss_parameters
from pe_segmentation.networks import network_parameters, resolve_name


def _check_registry_keys(section: str, data: Mapping[str, Any], accepted: Sequence[str]) -> None:
    for key in data:
        if key not in accepted:
            raise ConfigError(
                f"{section}.{key}: unknown key{did_you_mean(key, accepted)}; accepted: {', '.join(accepted)}"
            )


@dataclass(frozen=True)
class ModelConfig:
    """A registered network and its parameters (``pe_segmentation.networks.network_parameters`` lists them)."""

    name: str = "unet"
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelConfig:
        """Build the section; the name may be an alias, the parameters must be the network's own.

        Raises:
            ConfigError: unknown network name or parameter, prefixed with ``model.``.
        """
        data = dict(data or {})
        try:
            name = resolve_name(str(data.pop("name", cls.name)))
        except ConfigError as err:
            raise ConfigError(f"model.name: {err}") from None
        _check_registry_keys("model", data, network_parameters(name))
        return cls(name, data)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **plain(self.params)}


@dataclass(frozen=True)
class LossConfig:
    """A registered loss, its parameters, and whether deep-supervision outputs are weighted together."""

    name: str = "dice_ce"
    deep_supervision: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LossConfig:
        """Build the section; the parameters must be the loss's own.

        Raises:
            ConfigError: unknown loss name or parameter, or a non-boolean ``deep_supervision``.
        """
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
        return {"name": self.name, "deep_supervision": self.deep_supervision, **plain(self.params)}
