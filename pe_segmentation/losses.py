"""Loss registry and deep-supervision wrapper for PE segmentation, built on MONAI's losses.

``build_loss(name, **params)`` returns an ``nn.Module`` called as ``loss(logits, target)``:

* ``logits``: raw network output ``(B, C, *spatial)``.
* ``target``: an integer class map ``(B, 1, *spatial)`` (MONAI's convention; one-hot encoded here, once), or
  an already one-hot / multi-label tensor ``(B, C, *spatial)``.

Every loss shares three parameters, applied the same way everywhere:

* ``activation``: ``"softmax"`` (default; mutually exclusive classes, ``C >= 2``, e.g. background + embolus)
  or ``"sigmoid"`` (independent channels; ``C = 1`` for a binary embolus map).
* ``include_background``: whether channel 0 counts in the *overlap* terms (Dice, Tversky, generalised Dice).
  Voxel-wise terms (cross-entropy, focal) score every class in softmax mode, because dropping the background
  from a softmax voxel loss leaves nothing that pushes background voxels away from the embolus class (MONAI's
  ``FocalLoss`` would even take the log-softmax of the remaining channel alone, a constant zero for two
  classes). In sigmoid mode channels are independent and channel 0 is dropped from every term. With a single
  output channel the flag has no effect.
* ``class_weights``: one weight per output channel, background first (always the full ``C`` entries, whatever
  ``include_background`` says). They multiply each class's term before averaging (as MONAI's ``weight``);
  softmax cross-entropy normalises by the summed voxel weights as ``torch.nn.CrossEntropyLoss`` does.

Losses are computed in float32 even under autocast, and are finite on empty labels and empty predictions (Dice
terms use MONAI's ``smooth_nr``/``smooth_dr``; an empty label with an empty prediction is a perfect score).

:class:`DeepSupervisionLoss` applies a loss to every output of a deep-supervised network.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss, GeneralizedDiceLoss, TverskyLoss
from monai.networks.utils import one_hot

from pe_segmentation.errors import ConfigError

ACTIVATIONS = ("softmax", "sigmoid")


# --------------------------------------------------------------------------------------------------- terms
class _RegionTerm(nn.Module):
    """An overlap loss from MONAI (Dice, Tversky, generalised Dice) with pe-seg's background/weight rules.

    The MONAI loss runs with ``reduction="none"`` on all channels; channel 0 is dropped afterwards (Dice and
    Tversky are per class, so this equals MONAI's own ``include_background=False``) and class weights are
    applied to the per-(sample, class) values before the mean. Generalised Dice couples the classes through
    its own weights, so it is given ``include_background`` directly and accepts no class weights.
    """

    def __init__(self, loss: nn.Module, drop_background: bool, class_weights: torch.Tensor | None) -> None:
        super().__init__()
        self.loss = loss
        self.drop_background = drop_background
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            # one output channel: MONAI notes that include_background has no effect, as documented here
            warnings.filterwarnings("ignore", message="single channel prediction")
            per_class = self.loss(logits, target)  # (B, C[, 1, ...]); C = 1 for generalised Dice
        if per_class.dim() > 2:
            per_class = per_class.flatten(2).mean(2)
        return _weighted_mean(per_class, self.class_weights, self.drop_background)


class _CrossEntropyTerm(nn.Module):
    """Softmax cross-entropy on the class map, or per-channel binary cross-entropy for sigmoid outputs."""

    def __init__(
        self, softmax: bool, drop_background: bool, class_weights: torch.Tensor | None, label_smoothing: float
    ) -> None:
        super().__init__()
        self.softmax = softmax
        self.drop_background = drop_background
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.softmax:
            return F.cross_entropy(
                logits,
                target.argmax(1),
                weight=self.class_weights,
                label_smoothing=self.label_smoothing,
            )
        per_voxel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return _weighted_mean(per_voxel, self.class_weights, self.drop_background)


class _FocalTerm(nn.Module):
    """MONAI's focal loss (Lin et al. 2017), per voxel, with pe-seg's background/weight rules."""

    def __init__(
        self,
        softmax: bool,
        drop_background: bool,
        class_weights: torch.Tensor | None,
        gamma: float,
        alpha: float | Sequence[float] | None,
    ) -> None:
        super().__init__()
        self.loss = FocalLoss(
            include_background=True, gamma=gamma, alpha=alpha, use_softmax=softmax, reduction="none"
        )
        self.drop_background = drop_background
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _weighted_mean(self.loss(logits, target), self.class_weights, self.drop_background)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None, drop_background: bool) -> torch.Tensor:
    """Mean of ``values`` ``(B, C, ...)`` after weighting each channel and optionally dropping channel 0."""
    if weights is not None and values.shape[1] == weights.numel():
        values = values * weights.view([1, -1] + [1] * (values.dim() - 2))
    if drop_background and values.shape[1] > 1:
        values = values[:, 1:]
    return values.mean()


# ----------------------------------------------------------------------------------------------- the loss
class SegmentationLoss(nn.Module):
    """Weighted sum of loss terms on logits and a label map, with one target/activation convention.

    Built by :func:`build_loss`; see the module docstring for the conventions.

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
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}.")
        self.activation = activation
        self.names = [name for name, _, _ in terms]
        self.terms = nn.ModuleList([module for _, module, _ in terms])
        self.lambdas = [float(weight) for _, _, weight in terms]
        self.n_class_weights = None if class_weights is None else len(class_weights)

    def extra_repr(self) -> str:
        parts = ", ".join(f"{lam:g}*{name}" for name, lam in zip(self.names, self.lambdas, strict=True))
        return f"activation={self.activation!r}, loss={parts}"

    def _prepare_target(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
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


# ---------------------------------------------------------------------------------------------- builders
def _weights_tensor(class_weights: Sequence[float] | None) -> torch.Tensor | None:
    if class_weights is None:
        return None
    values = [float(w) for w in class_weights]
    if not values or any(w < 0 for w in values):
        raise ValueError(
            f"class_weights must be a non-empty sequence of non-negative numbers, got {class_weights!r}."
        )
    return torch.tensor(values, dtype=torch.float32)


def _common(activation: str, include_background: bool, class_weights: Sequence[float] | None):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}.")
    softmax = activation == "softmax"
    return softmax, not include_background, _weights_tensor(class_weights)


def _dice_term(
    activation: str,
    include_background: bool,
    class_weights: Sequence[float] | None,
    *,
    smooth_nr: float,
    smooth_dr: float,
    squared_pred: bool,
    jaccard: bool,
    batch: bool,
) -> nn.Module:
    softmax, drop, weights = _common(activation, include_background, class_weights)
    loss = DiceLoss(
        include_background=True,
        softmax=softmax,
        sigmoid=not softmax,
        squared_pred=squared_pred,
        jaccard=jaccard,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        batch=batch,
        reduction="none",
    )
    return _RegionTerm(loss, drop, weights)


def _focal_term(
    activation: str,
    include_background: bool,
    class_weights: Sequence[float] | None,
    *,
    gamma: float,
    alpha: float | Sequence[float] | None,
) -> nn.Module:
    softmax, drop, weights = _common(activation, include_background, class_weights)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}.")
    return _FocalTerm(softmax, drop and not softmax, weights, gamma, alpha)


def _ce_term(
    activation: str,
    include_background: bool,
    class_weights: Sequence[float] | None,
    *,
    label_smoothing: float,
) -> nn.Module:
    softmax, drop, weights = _common(activation, include_background, class_weights)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
    if label_smoothing and not softmax:
        raise ValueError("label_smoothing is only supported with activation='softmax'.")
    return _CrossEntropyTerm(softmax, drop and not softmax, weights, label_smoothing)


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
    term = _dice_term(
        activation,
        include_background,
        class_weights,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        squared_pred=squared_pred,
        jaccard=jaccard,
        batch=batch,
    )
    return SegmentationLoss([("dice", term, 1.0)], activation, class_weights)


def _build_ce(
    activation: str = "softmax",
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
) -> SegmentationLoss:
    """Cross-entropy (softmax) or binary cross-entropy (sigmoid), mean over voxels."""
    term = _ce_term(activation, include_background, class_weights, label_smoothing=label_smoothing)
    return SegmentationLoss([("ce", term, 1.0)], activation, class_weights)


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
    dice = _dice_term(
        activation,
        include_background,
        class_weights,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        squared_pred=squared_pred,
        jaccard=jaccard,
        batch=batch,
    )
    ce = _ce_term(activation, include_background, class_weights, label_smoothing=label_smoothing)
    return SegmentationLoss([("dice", dice, lambda_dice), ("ce", ce, lambda_ce)], activation, class_weights)


def _build_focal(
    activation: str = "softmax",
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
) -> SegmentationLoss:
    """Focal loss (MONAI ``FocalLoss``), mean over voxels and classes."""
    term = _focal_term(activation, include_background, class_weights, gamma=gamma, alpha=alpha)
    return SegmentationLoss([("focal", term, 1.0)], activation, class_weights)


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
    dice = _dice_term(
        activation,
        include_background,
        class_weights,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        squared_pred=squared_pred,
        jaccard=jaccard,
        batch=batch,
    )
    focal = _focal_term(activation, include_background, class_weights, gamma=gamma, alpha=alpha)
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
    softmax, drop, weights = _common(activation, include_background, class_weights)
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha!r}, beta={beta!r}.")
    loss = TverskyLoss(
        include_background=True,
        softmax=softmax,
        sigmoid=not softmax,
        alpha=alpha,
        beta=beta,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        batch=batch,
        reduction="none",
    )
    return SegmentationLoss([("tversky", _RegionTerm(loss, drop, weights), 1.0)], activation, class_weights)


def _build_generalized_dice(
    activation: str = "softmax",
    include_background: bool = True,
    w_type: str = "square",
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
) -> SegmentationLoss:
    """Generalised Dice (MONAI ``GeneralizedDiceLoss``); class weights from label volumes (``w_type``)."""
    softmax, _, _ = _common(activation, include_background, None)
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
    return SegmentationLoss([("generalized_dice", _RegionTerm(loss, False, None), 1.0)], activation)


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


# ------------------------------------------------------------------------------------- deep supervision
def deep_supervision_weights(n: int) -> list[float]:
    """Weights ``1, 1/2, 1/4, ...`` for ``n`` outputs (final output first), normalised to sum to 1."""
    if n < 1:
        raise ValueError(f"need at least one output, got {n}.")
    raw = [0.5**i for i in range(n)]
    total = sum(raw)
    return [w / total for w in raw]


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to each output of a deep-supervised network and sum with per-level weights.

    Accepted outputs:

    * a list/tuple of logits, final (full-resolution) output first, possibly at decreasing resolutions
      (targets are resized to each output with nearest-neighbour interpolation, which keeps integer labels
      integer);
    * a stacked tensor ``(B, N, C, *spatial)`` such as MONAI ``DynUNet`` returns in training mode;
    * a single logits tensor (plain ``loss``), so one wrapped loss serves training and validation.

    Args:
        loss: the per-output loss, e.g. from :func:`build_loss`.
        weights: one weight per output, final first; defaults to halving per level. Always normalised to sum
            to 1, so the total stays on the scale of a single loss.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if weights is not None:
            values = [float(w) for w in weights]
            if not values or any(w < 0 for w in values) or sum(values) <= 0:
                raise ValueError(f"weights must be non-negative with a positive sum, got {weights!r}.")
            weights = values
        self.loss = loss
        self.weights = weights

    def level_weights(self, n: int) -> list[float]:
        """The normalised weights used for ``n`` outputs."""
        if self.weights is None:
            return deep_supervision_weights(n)
        if len(self.weights) != n:
            raise ValueError(
                f"DeepSupervisionLoss has {len(self.weights)} weights but the network gave {n} outputs."
            )
        total = sum(self.weights)
        return [w / total for w in self.weights]

    @staticmethod
    def resize_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Nearest-neighbour resize of ``target`` ``(B, C, *spatial)`` to ``size``; the dtype is kept."""
        if tuple(target.shape[2:]) == tuple(size):
            return target
        resized = F.interpolate(target.float(), size=tuple(size), mode="nearest")
        return resized.to(target.dtype)

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            if outputs.dim() != target.dim() + 1:
                return self.loss(outputs, target)
            outputs = outputs.unbind(1)
        outputs = list(outputs)
        total = target.new_zeros((), dtype=torch.float32)
        for weight, output in zip(self.level_weights(len(outputs)), outputs, strict=True):
            total = total + weight * self.loss(output, self.resize_target(target, output.shape[2:]))
        return total
