"""The loss terms (overlap, cross-entropy, focal) and the background/class-weight rules they share.

Every term takes ``(logits, target)`` with a float target of the logits' shape and returns a scalar. The rules
of the package docstring (:mod:`pe_segmentation.losses`) are applied here, once: :class:`TermRules` checks
``activation`` and ``class_weights`` and says whether channel 0 is dropped, and each ``*_term`` factory builds
one term from those rules and its own parameters.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss, GeneralizedDiceLoss, TverskyLoss

ACTIVATIONS = ("softmax", "sigmoid")


def check_activation(activation: str) -> None:
    """Raise ``ValueError`` unless ``activation`` is one of :data:`ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}.")


def _checked_weights(class_weights: Sequence[float] | None) -> tuple[float, ...] | None:
    if class_weights is None:
        return None
    values = tuple(float(w) for w in class_weights)
    if not values or any(w < 0 for w in values):
        raise ValueError(
            f"class_weights must be a non-empty sequence of non-negative numbers, got {class_weights!r}."
        )
    return values


@dataclass(frozen=True)
class TermRules:
    """The shared parameters of every loss, checked once and turned into what the terms need.

    Attributes:
        softmax: ``activation == "softmax"`` (else sigmoid).
        drop_background: ``not include_background``: drop channel 0 from the overlap terms.
        class_weights: one non-negative weight per output channel, background first, or ``None``.
    """

    softmax: bool
    drop_background: bool
    class_weights: tuple[float, ...] | None

    @classmethod
    def of(
        cls, activation: str, include_background: bool, class_weights: Sequence[float] | None
    ) -> TermRules:
        """Check ``activation`` and ``class_weights`` (raising ``ValueError``) and build the rules."""
        check_activation(activation)
        return cls(activation == "softmax", not include_background, _checked_weights(class_weights))

    def weights_tensor(self) -> torch.Tensor | None:
        """The class weights as a float32 tensor (a new one per term), or ``None``."""
        return None if self.class_weights is None else torch.tensor(self.class_weights, dtype=torch.float32)

    @property
    def drop_voxel_background(self) -> bool:
        """Whether the voxel-wise terms drop channel 0: only in sigmoid mode (see the package docstring)."""
        return self.drop_background and not self.softmax


@dataclass(frozen=True)
class DiceOptions:
    """MONAI ``DiceLoss`` options of the Dice term (shared by ``dice``, ``dice_ce`` and ``dice_focal``)."""

    smooth_nr: float
    smooth_dr: float
    squared_pred: bool
    jaccard: bool
    batch: bool


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None, drop_background: bool) -> torch.Tensor:
    """Mean of ``values`` ``(B, C, ...)`` after weighting each channel and optionally dropping channel 0."""
    if weights is not None and values.shape[1] == weights.numel():
        values = values * weights.view([1, -1] + [1] * (values.dim() - 2))
    if drop_background and values.shape[1] > 1:
        values = values[:, 1:]
    return values.mean()


class _WeightedTerm(nn.Module):
    """A term whose per-channel values are weighted by class and may drop channel 0 before the mean."""

    class_weights: torch.Tensor | None

    def __init__(self, drop_background: bool, class_weights: torch.Tensor | None) -> None:
        super().__init__()
        self.drop_background = drop_background
        self.register_buffer("class_weights", class_weights, persistent=False)

    def reduce(self, values: torch.Tensor) -> torch.Tensor:
        """The weighted mean of per-channel ``values`` ``(B, C, ...)`` (see :func:`_weighted_mean`)."""
        return _weighted_mean(values, self.class_weights, self.drop_background)


class _RegionTerm(_WeightedTerm):
    """An overlap loss from MONAI (Dice, Tversky, generalised Dice) with pe-seg's background/weight rules.

    The MONAI loss runs with ``reduction="none"`` on all channels; channel 0 is dropped afterwards (Dice and
    Tversky are per class, so this equals MONAI's own ``include_background=False``) and class weights are
    applied to the per-(sample, class) values before the mean. Generalised Dice couples the classes through
    its own weights, so it is given ``include_background`` directly and accepts no class weights.
    """

    def __init__(self, loss: nn.Module, drop_background: bool, class_weights: torch.Tensor | None) -> None:
        super().__init__(drop_background, class_weights)
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            # one output channel: MONAI notes that include_background has no effect, as documented here
            warnings.filterwarnings("ignore", message="single channel prediction")
            per_class = self.loss(logits, target)  # (B, C[, 1, ...]); C = 1 for generalised Dice
        if per_class.dim() > 2:
            per_class = per_class.flatten(2).mean(2)
        return self.reduce(per_class)


class _CrossEntropyTerm(_WeightedTerm):
    """Softmax cross-entropy on the class map, or per-channel binary cross-entropy for sigmoid outputs."""

    def __init__(
        self, softmax: bool, drop_background: bool, class_weights: torch.Tensor | None, label_smoothing: float
    ) -> None:
        super().__init__(drop_background, class_weights)
        self.softmax = softmax
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.softmax:
            return F.cross_entropy(
                logits,
                target.argmax(1),
                weight=self.class_weights,
                label_smoothing=self.label_smoothing,
            )
        return self.reduce(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))


class _FocalTerm(_WeightedTerm):
    """MONAI's focal loss (Lin et al. 2017), per voxel, with pe-seg's background/weight rules."""

    def __init__(
        self,
        softmax: bool,
        drop_background: bool,
        class_weights: torch.Tensor | None,
        gamma: float,
        alpha: float | Sequence[float] | None,
    ) -> None:
        super().__init__(drop_background, class_weights)
        self.loss = FocalLoss(
            include_background=True, gamma=gamma, alpha=alpha, use_softmax=softmax, reduction="none"
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.loss(logits, target))


def _per_class_region(loss_type: type[nn.Module], rules: TermRules, **options: Any) -> nn.Module:
    """A per-class MONAI overlap loss (Dice, Tversky) on all channels, reduced by pe-seg's rules."""
    loss = loss_type(
        include_background=True,
        softmax=rules.softmax,
        sigmoid=not rules.softmax,
        reduction="none",
        **options,
    )
    return _RegionTerm(loss, rules.drop_background, rules.weights_tensor())


def dice_term(rules: TermRules, dice: DiceOptions) -> nn.Module:
    """Soft Dice (MONAI ``DiceLoss``) per sample and class."""
    return _per_class_region(
        DiceLoss,
        rules,
        squared_pred=dice.squared_pred,
        jaccard=dice.jaccard,
        smooth_nr=dice.smooth_nr,
        smooth_dr=dice.smooth_dr,
        batch=dice.batch,
    )


def tversky_term(
    rules: TermRules, alpha: float, beta: float, smooth_nr: float, smooth_dr: float, batch: bool
) -> nn.Module:
    """Tversky (MONAI ``TverskyLoss``): ``alpha`` weighs false positives, ``beta`` false negatives."""
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha!r}, beta={beta!r}.")
    return _per_class_region(
        TverskyLoss, rules, alpha=alpha, beta=beta, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch
    )


def generalized_dice_term(
    softmax: bool, include_background: bool, w_type: str, smooth_nr: float, smooth_dr: float, batch: bool
) -> nn.Module:
    """Generalised Dice (MONAI ``GeneralizedDiceLoss``): its own class weights, so none of pe-seg's."""
    loss = GeneralizedDiceLoss(
        include_background=include_background,
        softmax=softmax,
        sigmoid=not softmax,
        w_type=w_type,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        batch=batch,
        reduction="none",
    )
    return _RegionTerm(loss, False, None)


def focal_term(rules: TermRules, gamma: float, alpha: float | Sequence[float] | None) -> nn.Module:
    """Focal loss per voxel; every class scored in softmax mode (see the package docstring)."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}.")
    return _FocalTerm(rules.softmax, rules.drop_voxel_background, rules.weights_tensor(), gamma, alpha)


def ce_term(rules: TermRules, label_smoothing: float) -> nn.Module:
    """Cross-entropy (softmax) or binary cross-entropy (sigmoid) per voxel."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
    if label_smoothing and not rules.softmax:
        raise ValueError("label_smoothing is only supported with activation='softmax'.")
    return _CrossEntropyTerm(
        rules.softmax, rules.drop_voxel_background, rules.weights_tensor(), label_smoothing
    )
