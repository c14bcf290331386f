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

Modules: :mod:`~pe_segmentation.losses.terms` (the terms and the shared rules),
:mod:`~pe_segmentation.losses.segmentation` (:class:`SegmentationLoss`, the target convention),
:mod:`~pe_segmentation.losses.registry` (names, parameters, :func:`build_loss`) and
:mod:`~pe_segmentation.losses.deep_supervision`.
"""

from __future__ import annotations

from pe_segmentation.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights
from pe_segmentation.losses.registry import LOSSES, available_losses, build_loss, loss_parameters
from pe_segmentation.losses.segmentation import SegmentationLoss
from pe_segmentation.losses.terms import ACTIVATIONS

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "DeepSupervisionLoss",
    "SegmentationLoss",
    "available_losses",
    "build_loss",
    "deep_supervision_weights",
    "loss_parameters",
]
