"""TorchScript export of pe-seg networks (ONNX is not supported: the ``onnx`` package is not a dependency).

pe-seg's own networks and most wrapped MONAI networks compile with ``torch.jit.script``, which keeps every
input size working (padding included). Networks that do not compile (MONAI's SwinUNETR, DynUNet with deep
supervision) are traced with ``torch.jit.trace`` on an example input in eval mode; a traced module is only
valid for inputs of the example's size, which is what sliding-window inference feeds it.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch
import torch.nn as nn

from pe_segmentation.io.atomic import atomic_output

logger = logging.getLogger(__name__)

EXPORT_METHODS = ("auto", "script", "trace")


def to_torchscript(
    net: nn.Module, example_input: torch.Tensor | None = None, method: str = "auto"
) -> tuple[torch.jit.ScriptModule, str]:
    """Compile ``net`` (switched to eval mode) to TorchScript.

    Args:
        net: the network.
        example_input: an input tensor; required for tracing (``method="trace"`` or an ``"auto"`` fallback).
        method: ``"script"``, ``"trace"``, or ``"auto"`` (script, fall back to trace if scripting fails).

    Returns:
        The compiled module and the method that produced it (``"script"`` or ``"trace"``).

    Raises:
        ValueError: unknown method, or tracing needed without an example input.
        RuntimeError: the network cannot be compiled with the requested method.
    """
    if method not in EXPORT_METHODS:
        raise ValueError(f"method must be one of {', '.join(EXPORT_METHODS)}, got {method!r}.")
    net = net.eval()
    if method in ("auto", "script"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation notice
                return torch.jit.script(net), "script"
        except Exception as err:
            if method == "script":
                raise RuntimeError(f"{type(net).__name__} cannot be scripted: {err}") from err
            logger.info(
                "%s cannot be scripted (%s); tracing instead", type(net).__name__, str(err).splitlines()[0]
            )
    if example_input is None:
        raise ValueError(
            f"tracing {type(net).__name__} needs an example_input of the size it will be run on."
        )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        traced = torch.jit.trace(net, example_input, check_trace=False)
    return traced, "trace"


def export_torchscript(
    net: nn.Module,
    path: str | os.PathLike[str],
    example_input: torch.Tensor | None = None,
    method: str = "auto",
) -> str:
    """Compile ``net`` with :func:`to_torchscript`, save it atomically to ``path``; return the method used."""
    compiled, used = to_torchscript(net, example_input, method)
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        torch.jit.save(compiled, str(tmp))
    return used


def load_torchscript(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> torch.jit.ScriptModule:
    """Load a module written by :func:`export_torchscript` (in eval mode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location=map_location)
    return module.eval()
