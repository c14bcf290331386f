"""Spatial sizes: inputs padded to a multiple of the network's down-sampling factor, outputs cropped back.

A network with ``depth`` 2x down-samplings needs every spatial size to be a multiple of ``2**depth`` for its
skips to line up. pe-seg's networks zero-pad other inputs at the far end and crop the logits back
(``pad_input=True``), or refuse them naming sizes that work; the MONAI wrappers always pad. Every function
here is TorchScript-compatible, so it runs inside compiled ``forward`` methods.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_to_multiple(x: torch.Tensor, multiple: int, pad: bool) -> torch.Tensor:
    """``x`` zero-padded up to ``multiple`` when ``pad``; otherwise ``x`` itself, after :func:`check_divisible`."""
    if pad:
        return pad_to_multiple(x, multiple)
    check_divisible(list(x.shape[2:]), multiple)
    return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the spatial dims of ``x`` (at their far end) up to the next multiple of ``multiple``."""
    pad: list[int] = []
    needed = False
    # F.pad lists the last dimension first
    for d in range(x.dim() - 1, 1, -1):
        extra = (multiple - x.shape[d] % multiple) % multiple
        needed = needed or extra > 0
        pad += [0, extra]
    if not needed:
        return x
    return F.pad(x, pad)


def crop_to(y: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Crop the trailing ``len(size)`` dims of ``y`` to ``size`` (undoes :func:`pad_to_multiple`).

    Works on stacked deep-supervision outputs ``(B, N, C, *spatial)`` too, because it only looks at trailing
    dims.
    """
    offset = y.dim() - len(size)
    for d, s in enumerate(size):
        if y.shape[offset + d] != s:
            y = y.narrow(offset + d, 0, s)
    return y


def check_divisible(size: list[int], multiple: int) -> None:
    """Raise ``ValueError`` naming the sizes that work if any spatial size is not a multiple of ``multiple``.

    Written with plain string concatenation so that it stays inside TorchScript-compiled ``forward`` methods.
    """
    for s in size:
        if s % multiple != 0:
            lower = multiple * max(1, s // multiple)
            upper = multiple * (s // multiple + 1)
            raise ValueError(
                "spatial size "
                + str(size)
                + " must be a multiple of "
                + str(multiple)
                + " (2**depth) along every axis, e.g. "
                + str(lower)
                + " or "
                + str(upper)
                + " instead of "
                + str(s)
                + "; build the network with pad_input=True to pad and crop back automatically."
            )
