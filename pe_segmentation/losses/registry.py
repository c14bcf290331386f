"""Loss registry: one name -> one builder, each a weighted sum of terms with the package's shared parameters.

A builder's signature is its parameter list: :func:`loss_parameters` reads it, and :func:`build_loss` refuses
other keywords with a "did you mean" (the config validates ``loss:`` keys the same way).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from pe_segmentation.errors import ConfigError
from pe_segmentation.losses.segmentation import SegmentationLoss
from pe_segmentation.losses.terms import (
    DiceOptions,
    TermRules,
    ce_term,
    check_activation,
    dice_term,
    focal_term,
    generalized_dice_term,
    tversky_term,
)


def _check_lambdas(**lambdas: float) -> None:
    for name, value in lambdas.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}.")
    if not any(lambdas.values()):
        raise ValueError(f"at least one of {', '.join(lambdas)} must be > 0.")


def _build_dice(
    activation: str = "softmax",
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    squared_pred: bool = False,
    jaccard: bool = False,
    batch: bool = False,
) -> SegmentationLoss:
    """Soft Dice loss (MONAI ``DiceLoss``), mean over samples and classes."""
    rules = TermRules.of(activation, include_background, class_weights)
    dice = dice_term(rules, DiceOptions(smooth_nr, smooth_dr, squared_pred, jaccard, batch))
    return SegmentationLoss([("dice", dice, 1.0)], activation, class_weights)


def _build_ce(
    activation: str = "softmax",
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
) -> SegmentationLoss:
    """Cross-entropy (softmax) or binary cross-entropy (sigmoid), mean over voxels."""
    rules = TermRules.of(activation, include_background, class_weights)
    return SegmentationLoss([("ce", ce_term(rules, label_smoothing), 1.0)], activation, class_weights)


def _build_dice_ce(
    activation: str = "softmax",
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    squared_pred: bool = False,
    jaccard: bool = False,
    batch: bool = False,
    label_smoothing: float = 0.0,
) -> SegmentationLoss:
    """``lambda_dice * dice + lambda_ce * ce`` (as MONAI ``DiceCELoss``)."""
    _check_lambdas(lambda_dice=lambda_dice, lambda_ce=lambda_ce)
    rules = TermRules.of(activation, include_background, class_weights)
    dice = dice_term(rules, DiceOptions(smooth_nr, smooth_dr, squared_pred, jaccard, batch))
    ce = ce_term(rules, label_smoothing)
    return SegmentationLoss([("dice", dice, lambda_dice), ("ce", ce, lambda_ce)], activation, class_weights)


def _build_focal(
    activation: str = "softmax",
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
) -> SegmentationLoss:
    """Focal loss (MONAI ``FocalLoss``), mean over voxels and classes."""
    rules = TermRules.of(activation, include_background, class_weights)
    return SegmentationLoss([("focal", focal_term(rules, gamma, alpha), 1.0)], activation, class_weights)


def _build_dice_focal(
    activation: str = "softmax",
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
    lambda_dice: float = 1.0,
    lambda_focal: float = 1.0,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    squared_pred: bool = False,
    jaccard: bool = False,
    batch: bool = False,
) -> SegmentationLoss:
    """``lambda_dice * dice + lambda_focal * focal`` (as MONAI ``DiceFocalLoss``)."""
    _check_lambdas(lambda_dice=lambda_dice, lambda_focal=lambda_focal)
    rules = TermRules.of(activation, include_background, class_weights)
    dice = dice_term(rules, DiceOptions(smooth_nr, smooth_dr, squared_pred, jaccard, batch))
    focal = focal_term(rules, gamma, alpha)
    return SegmentationLoss(
        [("dice", dice, lambda_dice), ("focal", focal, lambda_focal)], activation, class_weights
    )


def _build_tversky(
    activation: str = "softmax",
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
) -> SegmentationLoss:
    """Tversky loss (MONAI ``TverskyLoss``): ``alpha`` weighs false positives, ``beta`` false negatives."""
    rules = TermRules.of(activation, include_background, class_weights)
    term = tversky_term(rules, alpha, beta, smooth_nr, smooth_dr, batch)
    return SegmentationLoss([("tversky", term, 1.0)], activation, class_weights)


def _build_generalized_dice(
    activation: str = "softmax",
    include_background: bool = True,
    w_type: str = "square",
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
) -> SegmentationLoss:
    """Generalised Dice (MONAI ``GeneralizedDiceLoss``); class weights from label volumes (``w_type``)."""
    check_activation(activation)
    softmax = activation == "softmax"
    term = generalized_dice_term(softmax, include_background, w_type, smooth_nr, smooth_dr, batch)
    return SegmentationLoss([("generalized_dice", term, 1.0)], activation)


LOSSES: dict[str, Callable[..., SegmentationLoss]] = {
    "dice": _build_dice,
    "ce": _build_ce,
    "dice_ce": _build_dice_ce,
    "focal": _build_focal,
    "dice_focal": _build_dice_focal,
    "tversky": _build_tversky,
    "generalized_dice": _build_generalized_dice,
}

_ALIASES = {"cross_entropy": "ce", "dicece": "dice_ce", "dicefocal": "dice_focal", "gdl": "generalized_dice"}


def available_losses() -> list[str]:
    """Registered loss names."""
    return list(LOSSES)


def _resolve(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        match = difflib.get_close_matches(key, list(LOSSES) + list(_ALIASES), n=1, cutoff=0.6)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise ConfigError(f"unknown loss {name!r}{hint}; available: {', '.join(LOSSES)}")
    return key


def loss_parameters(name: str) -> list[str]:
    """Parameter names accepted by loss ``name``."""
    return list(inspect.signature(LOSSES[_resolve(name)]).parameters)


def build_loss(name: str, **params: Any) -> SegmentationLoss:
    """Build a registered loss.

    Args:
        name: one of :func:`available_losses` (``dice``, ``ce``, ``dice_ce``, ``focal``, ``dice_focal``,
            ``tversky``, ``generalized_dice``).
        **params: ``activation``, ``include_background``, ``class_weights`` and the loss's own parameters
            (:func:`loss_parameters` lists them, e.g. ``lambda_dice``/``lambda_ce`` for ``dice_ce``).

    Returns:
        A module called as ``loss(logits, target)`` that returns a scalar.

    Raises:
        ConfigError: unknown name, unknown parameter, or an invalid value.
    """
    key = _resolve(name)
    accepted = loss_parameters(key)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        match = difflib.get_close_matches(unknown[0], accepted, n=1, cutoff=0.6)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise ConfigError(
            f"loss {key!r} got unknown parameter(s) {', '.join(unknown)}{hint}; "
            f"accepted: {', '.join(accepted)}"
        )
    try:
        return LOSSES[key](**params)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"loss {key!r}: {' '.join(str(err).split())}") from err
