"""The loss that training calls: a weighted sum of terms, with one target/activation convention.

:class:`SegmentationLoss` takes the raw logits and either a class map or a one-hot target, checks that they
fit, one-hot encodes the class map once, and sums its terms (:mod:`pe_segmentation.losses.terms`) in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.utils import one_hot

from pe_segmentation.losses.terms import check_activation


class SegmentationLoss(nn.Module):
    """Weighted sum of loss terms on logits and a label map, with one target/activation convention.

    Built by :func:`~pe_segmentation.losses.build_loss`; see the package docstring for the conventions.

    Args:
        terms: ``(name, module, weight)`` triples; each module takes ``(logits, target)`` with a float target
            of the logits' shape and returns a scalar.
        activation: ``"softmax"`` or ``"sigmoid"``.
        class_weights: per-channel weights, only used here to check their count against the logits.
    """

    def __init__(
        self,
        terms: Sequence[tuple[str, nn.Module, float]],
        activation: str = "softmax",
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        check_activation(activation)
        self.activation = activation
        self.names = [name for name, _, _ in terms]
        self.terms = nn.ModuleList([module for _, module, _ in terms])
        self.lambdas = [float(weight) for _, _, weight in terms]
        self.n_class_weights = None if class_weights is None else len(class_weights)

    def extra_repr(self) -> str:
        parts = ", ".join(f"{lam:g}*{name}" for name, lam in zip(self.names, self.lambdas, strict=True))
        return f"activation={self.activation!r}, loss={parts}"

    def _check_shapes(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Refuse a target that does not fit the logits, and logits that do not fit the settings."""
        channels = logits.shape[1]
        if (
            target.dim() != logits.dim()
            or target.shape[2:] != logits.shape[2:]
            or target.shape[0] != logits.shape[0]
        ):
            raise ValueError(
                f"target shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}: "
                f"expected a class map (B, 1, *spatial) or a one-hot tensor (B, {channels}, *spatial)."
            )
        if self.activation == "softmax" and channels < 2:
            raise ValueError(
                "activation='softmax' needs at least 2 output channels (background, embolus); "
                "use activation='sigmoid' for a single-channel output."
            )
        if self.n_class_weights is not None and self.n_class_weights != channels:
            raise ValueError(
                f"class_weights has {self.n_class_weights} entries but the logits have {channels} channels; "
                "give one weight per channel, background first."
            )

    def _prepare_target(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The target as a float tensor of the logits' shape (a class map is one-hot encoded)."""
        self._check_shapes(logits, target)
        channels = logits.shape[1]
        if target.shape[1] == channels and (channels > 1 or self.activation == "sigmoid"):
            return target.float()  # already one-hot / binary / multi-label
        if target.shape[1] != 1:
            raise ValueError(
                f"target has {target.shape[1]} channels; expected 1 (class map) or {channels} (one-hot)."
            )
        labels = target.long()
        if bool((labels < 0).any()) or bool((labels >= channels).any()):
            raise ValueError(
                f"target class map holds values outside 0..{channels - 1} for {channels} output channels."
            )
        return one_hot(labels, num_classes=channels, dtype=torch.float32)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` ``(B, C, *spatial)`` against ``target`` ``(B, 1 or C, *spatial)``; a scalar."""
        logits = logits.float()  # losses in float32 under autocast (bf16 softmax/log would lose precision)
        target = self._prepare_target(logits, target)
        total = logits.new_zeros(())
        for lam, term in zip(self.lambdas, self.terms, strict=True):
            if lam != 0.0:
                total = total + lam * term(logits, target)
        return total
