"""Network registry: one name -> one builder, for pe-seg's own networks and MONAI's.

Every network takes the same core parameters (``spatial_dims``, ``in_channels``, ``out_channels``,
``base_channels``, ``depth`` where the architecture has a variable depth, ``norm``, ``dropout``) and returns
raw logits ``(B, out_channels, *spatial)``. MONAI networks additionally accept their own constructor arguments
that the translation does not set (e.g. ``num_res_units`` or ``act`` for ``monai_unet``).

Mistakes raise :class:`~pe_segmentation.errors.ConfigError` with a one-line message that lists what exists::

    >>> build_network("unte")
    ConfigError: unknown network 'unte' (did you mean 'unet'?); available: unet, r2unet, ...
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn
from monai.networks.nets import AttentionUnet, BasicUNetPlusPlus, DynUNet, SegResNet, SwinUNETR
from monai.networks.nets import UNet as MonaiUNet

from pe_segmentation.errors import ConfigError
from pe_segmentation.networks import monai_nets
from pe_segmentation.networks.nested_unet import NestedUNet
from pe_segmentation.networks.unet import AttentionUNet, R2AttentionUNet, R2UNet, UNet


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network.

    Attributes:
        name: registry name.
        builder: class or function called with the parameters.
        description: one line for listings and docs.
        native: MONAI class whose remaining constructor arguments may be passed through, if any.
        translated: the ``native`` arguments that the builder sets itself (and so may not be passed).
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    native: type | None = None
    translated: frozenset[str] = field(default_factory=frozenset)

    def parameters(self) -> list[str]:
        """All parameter names this network accepts, sorted."""
        names = {
            p.name
            for p in inspect.signature(self.builder).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"
        }
        if self.native is not None:
            native = inspect.signature(self.native).parameters  # the constructor's
            names |= {n for n in native if n != "self" and n not in self.translated}
        return sorted(names)


_COMMON = frozenset({"spatial_dims", "in_channels", "out_channels"})

NETWORKS: dict[str, NetworkSpec] = {
    spec.name: spec
    for spec in [
        NetworkSpec("unet", UNet, "UNet: double-conv blocks, skip concatenation"),
        NetworkSpec("r2unet", R2UNet, "R2U-Net: recurrent residual conv units (t=2)"),
        NetworkSpec(
            "attention_unet", AttentionUNet, "Attention U-Net: additive attention gates on the skips"
        ),
        NetworkSpec(
            "r2_attention_unet", R2AttentionUNet, "R2-Attention U-Net: recurrent residual units + gates"
        ),
        NetworkSpec("nested_unet", NestedUNet, "UNet++: dense nested skips, optional deep supervision"),
        NetworkSpec(
            "monai_unet",
            monai_nets.build_monai_unet,
            "MONAI UNet (residual units, strided convs)",
            MonaiUNet,
            _COMMON | {"channels", "strides", "num_res_units", "norm", "dropout"},
        ),
        NetworkSpec(
            "monai_attention_unet",
            monai_nets.build_monai_attention_unet,
            "MONAI AttentionUnet",
            AttentionUnet,
            _COMMON | {"channels", "strides", "dropout"},
        ),
        NetworkSpec(
            "monai_unetpp",
            monai_nets.build_monai_unetpp,
            "MONAI BasicUNetPlusPlus (depth 4)",
            BasicUNetPlusPlus,
            _COMMON | {"features", "deep_supervision", "norm", "dropout", "upsample"},
        ),
        NetworkSpec(
            "monai_segresnet",
            monai_nets.build_monai_segresnet,
            "MONAI SegResNet (residual encoder, light decoder)",
            SegResNet,
            _COMMON
            | {"init_filters", "blocks_down", "blocks_up", "norm", "norm_name", "num_groups"}
            | {"dropout_prob", "upsample_mode"},
        ),
        NetworkSpec(
            "monai_dynunet",
            monai_nets.build_monai_dynunet,
            "MONAI DynUNet (nnU-Net architecture)",
            DynUNet,
            _COMMON
            | {"kernel_size", "strides", "upsample_kernel_size", "filters", "norm_name", "dropout"}
            | {"deep_supervision", "deep_supr_num"},
        ),
        NetworkSpec(
            "monai_swinunetr",
            monai_nets.build_monai_swinunetr,
            "MONAI SwinUNETR (Swin transformer encoder)",
            SwinUNETR,
            _COMMON | {"feature_size", "norm_name", "drop_rate"},
        ),
    ]
}

_ALIASES = {
    "unetpp": "nested_unet",
    "unet++": "nested_unet",
    "unet_plus_plus": "nested_unet",
    "unetplusplus": "nested_unet",
    "r2_unet": "r2unet",
    "attunet": "attention_unet",
    "attention_r2unet": "r2_attention_unet",
    "r2attunet": "r2_attention_unet",
    "r2_attunet": "r2_attention_unet",
    "segresnet": "monai_segresnet",
    "dynunet": "monai_dynunet",
    "swinunetr": "monai_swinunetr",
    "swin_unetr": "monai_swinunetr",
    "basic_unet_plus_plus": "monai_unetpp",
}


def available_networks() -> list[str]:
    """Registered network names, pe-seg's own first."""
    return list(NETWORKS)


def _suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def resolve_name(name: str) -> str:
    """Canonical registry name for ``name`` (case, ``-`` vs ``_`` and known aliases are forgiven).

    Raises:
        ConfigError: the name is not registered; the message lists the names that are.
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in NETWORKS:
        raise ConfigError(
            f"unknown network {name!r}{_suggest(key, list(NETWORKS) + list(_ALIASES))}; "
            f"available: {', '.join(NETWORKS)}"
        )
    return key


def network_parameters(name: str) -> list[str]:
    """Parameter names accepted by network ``name``."""
    return NETWORKS[resolve_name(name)].parameters()


def build_network(name: str, **params: Any) -> nn.Module:
    """Build a registered network.

    Args:
        name: a name from :func:`available_networks` (or an alias such as ``"unet++"``).
        **params: the network's parameters; :func:`network_parameters` lists them. Unset parameters take the
            network's defaults (3D, 1 input channel, 2 output classes).

    Returns:
        The network, returning raw logits ``(B, out_channels, *spatial)`` (a list of them in training mode
        when deep supervision is on).

    Raises:
        ConfigError: unknown name, unknown parameter name, or a value the network rejects.
    """
    key = resolve_name(name)
    spec = NETWORKS[key]
    accepted = spec.parameters()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        hint = _suggest(unknown[0], accepted)
        raise ConfigError(
            f"network {key!r} got unknown parameter(s) {', '.join(unknown)}{hint}; "
            f"accepted: {', '.join(accepted)}"
        )
    try:
        return spec.builder(**params)
    except (ValueError, TypeError, AssertionError) as err:
        message = " ".join(str(err).split())  # one line, whatever MONAI wrote
        raise ConfigError(f"network {key!r}: {message}") from err
