"""Loss registry against hand-computed values, empty-case safety, and the deep-supervision wrapper.

The reference case is one 2x2 image with two classes: the embolus (class 1) fills the top row, and the network
predicts embolus probabilities ``[[0.9, 0.2], [0.2, 0.1]]`` (logits ``0`` for background and ``logit(p)`` for
the embolus, so the softmax gives exactly ``p``).
"""

from __future__ import annotations

import math

import pytest
import torch

from pe_segmentation.errors import ConfigError
from pe_segmentation.losses import (
    DeepSupervisionLoss,
    available_losses,
    build_loss,
    deep_supervision_weights,
    loss_parameters,
)

P_FG = torch.tensor([[0.9, 0.2], [0.2, 0.1]], dtype=torch.float64)
LABEL = torch.tensor([[[[1, 1], [0, 0]]]])  # (B=1, 1, 2, 2) class map: top row embolus


def _logits(p_fg: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose softmax gives ``p_fg`` for class 1."""
    fg = torch.log(p_fg / (1 - p_fg))
    return torch.stack([torch.zeros_like(fg), fg]).unsqueeze(0).float()  # (1, 2, 2, 2)


def _hard_logits(label: torch.Tensor, margin: float = 10.0) -> torch.Tensor:
    """Two-class logits predicting ``label`` (B, 1, ...) with a logit gap of ``margin``."""
    fg = (label.float() * 2 - 1) * margin
    return torch.cat([torch.zeros_like(fg), fg], dim=1)


# hand-worked values for the reference case (smoothing terms of 1e-5 are below the tolerance)
DICE_FG = 1 - 2 * (0.9 + 0.2) / ((0.9 + 0.2 + 0.2 + 0.1) + 2)  # 1 - 2.2 / 3.4
DICE_BG = 1 - 2 * (0.8 + 0.9) / ((0.1 + 0.8 + 0.8 + 0.9) + 2)  # 1 - 3.4 / 4.6
CE = -(math.log(0.9) + math.log(0.2) + math.log(0.8) + math.log(0.9)) / 4
TVERSKY_FG = 1 - 1.1 / (1.1 + 0.3 * (0.2 + 0.1) + 0.7 * (0.1 + 0.8))  # alpha=0.3 weighs FP, beta=0.7 FN
TVERSKY_BG = 1 - 1.7 / (1.7 + 0.3 * (0.1 + 0.8) + 0.7 * (0.2 + 0.1))


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("dice", {}, (DICE_FG + DICE_BG) / 2),
        ("dice", {"include_background": False}, DICE_FG),
        (
            "dice",
            {"class_weights": [0.0, 2.0]},
            (0 * DICE_BG + 2 * DICE_FG) / 2,
        ),  # weights multiply, then mean
        ("ce", {}, CE),
        (
            "ce",
            {"class_weights": [1.0, 3.0]},
            -(3 * math.log(0.9) + 3 * math.log(0.2) + math.log(0.8) + math.log(0.9)) / 8,
        ),
        ("dice_ce", {}, (DICE_FG + DICE_BG) / 2 + CE),
        (
            "dice_ce",
            {"lambda_dice": 0.25, "lambda_ce": 2.0, "include_background": False},
            0.25 * DICE_FG + 2 * CE,
        ),
        # focal: -(1 - p_t)^2 log p_t on the true class, averaged over voxels and both class channels
        (
            "focal",
            {},
            -(
                0.1**2 * math.log(0.9)
                + 0.8**2 * math.log(0.2)
                + 0.2**2 * math.log(0.8)
                + 0.1**2 * math.log(0.9)
            )
            / 8,
        ),
        ("focal", {"gamma": 0.0}, CE / 2),  # gamma 0 is cross-entropy (spread over two channels)
        ("dice_focal", {"gamma": 0.0, "include_background": False}, DICE_FG + CE / 2),
        ("tversky", {"alpha": 0.3, "beta": 0.7}, (TVERSKY_FG + TVERSKY_BG) / 2),
        ("tversky", {"alpha": 0.3, "beta": 0.7, "include_background": False}, TVERSKY_FG),
        ("tversky", {}, (DICE_FG + DICE_BG) / 2),  # alpha = beta = 0.5 is Dice
        # generalised Dice: both classes cover 2 pixels, so w = 1/4 each: 1 - 2 (1.1 + 1.7) / (3.4 + 4.6)
        ("generalized_dice", {}, 1 - 2 * (1.1 + 1.7) / (3.4 + 4.6)),
        ("generalized_dice", {"include_background": False}, DICE_FG),
    ],
)
def test_partial_overlap_matches_hand_computation(name, params, expected):
    loss = build_loss(name, **params)(_logits(P_FG), LABEL)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dice", DICE_FG),
        ("ce", CE),
        ("dice_ce", DICE_FG + CE),
        ("tversky", DICE_FG),
        ("generalized_dice", DICE_FG),
    ],
)
def test_sigmoid_single_channel_matches_softmax_foreground(name, expected):
    """One sigmoid channel with logit(p) gives the same probabilities as the two-class softmax above."""
    logit = torch.log(P_FG / (1 - P_FG)).float().reshape(1, 1, 2, 2)
    loss = build_loss(name, activation="sigmoid")(logit, LABEL)
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_one_hot_target_equals_class_map():
    one_hot = torch.cat([1 - LABEL, LABEL], dim=1)
    for name in available_losses():
        loss = build_loss(name)
        assert loss(_logits(P_FG), one_hot).item() == pytest.approx(
            loss(_logits(P_FG), LABEL).item(), rel=1e-6
        )


@pytest.mark.parametrize("name", available_losses())
def test_perfect_prediction_scores_zero(name):
    label = torch.tensor([[[[1, 0, 0], [1, 1, 0], [0, 0, 0]]]])
    assert build_loss(name)(_hard_logits(label, margin=20.0), label).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dice", 1.0),  # no overlap in either class
        ("tversky", 1.0),
        ("generalized_dice", 1.0),
        ("ce", 10.0000454),  # every voxel wrong by a logit gap of 10: log(1 + e^10)
        ("dice_ce", 11.0000454),
    ],
)
def test_disjoint_prediction(name, expected):
    label = torch.tensor([[[[1, 1], [0, 0]]]])
    logits = _hard_logits(1 - label, margin=10.0)  # predicts the embolus exactly where it is not
    assert build_loss(name)(logits, label).item() == pytest.approx(expected, rel=1e-4)


def test_empty_label_with_empty_prediction_is_perfect_and_with_a_false_positive_is_not():
    empty = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    dice = build_loss("dice", include_background=False)
    # MONAI's smoothing (1e-5) makes 0/0 a perfect score; the residual mass 4 * sigmoid(-20) still counts
    residual = 4 / (1 + math.exp(20.0))
    expected = 1 - 1e-5 / (residual + 1e-5)
    assert dice(_hard_logits(empty, 20.0), empty).item() == pytest.approx(expected, rel=1e-3)
    assert dice(_hard_logits(empty, 40.0), empty).item() == pytest.approx(0.0, abs=1e-6)
    assert dice(_hard_logits(torch.ones_like(empty), 20.0), empty).item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", available_losses())
def test_no_nan_on_empty_labels_or_predictions(name, activation, include_background):
    loss = build_loss(name, activation=activation, include_background=include_background)
    channels = 2 if activation == "softmax" else 1
    empty = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    full = torch.ones(2, 1, 4, 4, dtype=torch.long)
    for label in (empty, full):
        for logits in (
            torch.zeros(2, channels, 4, 4),  # undecided
            torch.full((2, channels, 4, 4), -30.0),  # empty prediction (sigmoid) / undecided (softmax)
            _hard_logits(empty, 30.0)[:, -channels:],  # empty prediction
            _hard_logits(full, 30.0)[:, -channels:],  # everything embolus
        ):
            logits = logits.clone().requires_grad_(True)
            value = loss(logits, label)
            value.backward()
            assert torch.isfinite(value), (label.sum(), logits)
            assert torch.isfinite(logits.grad).all()


def test_voxel_losses_keep_background_in_softmax_mode():
    """Without background, softmax focal/CE would not push background down; it is kept (documented)."""
    logits, other = _logits(P_FG), _logits(torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64))
    for name in ("focal", "ce"):
        excluded = build_loss(name, include_background=False)
        assert excluded(logits, LABEL).item() == pytest.approx(build_loss(name)(logits, LABEL).item())
        assert excluded(logits, LABEL).item() != pytest.approx(excluded(other, LABEL).item())


def test_losses_run_in_float32_under_bfloat16_logits():
    logits = _logits(P_FG)
    loss = build_loss("dice_ce")
    value = loss(logits.bfloat16(), LABEL)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(loss(logits, LABEL).item(), rel=2e-2)


def test_registry_lists_and_describes_losses():
    assert available_losses() == [
        "dice",
        "ce",
        "dice_ce",
        "focal",
        "dice_focal",
        "tversky",
        "generalized_dice",
    ]
    assert {"activation", "include_background", "class_weights", "lambda_dice", "lambda_ce"} <= set(
        loss_parameters("dice_ce")
    )
    assert "class_weights" not in loss_parameters("generalized_dice")  # it computes its own


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("dcie", {}, r"unknown loss 'dcie' \(did you mean 'dice'\?\); available: dice, ce, dice_ce"),
        (
            "dice_ce",
            {"lambda_dcie": 1},
            r"unknown parameter\(s\) lambda_dcie \(did you mean 'lambda_dice'\?\)",
        ),
        ("generalized_dice", {"class_weights": [1, 2]}, "accepted: activation, include_background"),
        ("dice", {"activation": "softmin"}, "activation must be one of softmax, sigmoid"),
        ("dice_ce", {"lambda_dice": -1.0}, "lambda_dice must be >= 0"),
        ("dice", {"class_weights": [1.0, -2.0]}, "non-negative"),
    ],
)
def test_bad_configuration_raises_one_line_config_error(name, params, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        build_loss(name, **params)
    assert "\n" not in str(info.value)


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="use activation='sigmoid'"):
        build_loss("dice")(torch.zeros(1, 1, 2, 2), LABEL)
    with pytest.raises(ValueError, match="class_weights has 3 entries but the logits have 2 channels"):
        build_loss("dice", class_weights=[1, 1, 1])(_logits(P_FG), LABEL)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        build_loss("ce")(_logits(P_FG), LABEL * 2)
    with pytest.raises(ValueError, match=r"class map \(B, 1, \*spatial\)"):
        build_loss("ce")(_logits(P_FG), LABEL[0])


# ------------------------------------------------------------------------------------ deep supervision
def test_deep_supervision_weights_halve_and_sum_to_one():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert deep_supervision_weights(1) == [1.0]


def _outputs(n: int, size=(4, 4)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(2, 2, *size, generator=generator) for _ in range(n)]


def test_deep_supervision_is_the_weighted_sum_of_levels():
    base = build_loss("dice_ce")
    outputs = _outputs(3)
    target = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5).long()
    expected = sum(w * base(o, target) for w, o in zip([4 / 7, 2 / 7, 1 / 7], outputs, strict=True))
    ds = DeepSupervisionLoss(base)
    assert ds(outputs, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert ds(tuple(outputs), target).item() == pytest.approx(expected.item(), rel=1e-6)
    # DynUNet-style stacked tensor (B, N, C, *spatial) is the same thing
    assert ds(torch.stack(outputs, dim=1), target).item() == pytest.approx(expected.item(), rel=1e-6)
    # a single output (validation / eval mode) is the plain loss
    assert ds(outputs[0], target).item() == pytest.approx(base(outputs[0], target).item(), rel=1e-6)


def test_deep_supervision_resizes_targets_to_lower_resolution_heads():
    base = build_loss("dice")
    full, half = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)
    target = torch.tensor([[[[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]]])
    # nearest-neighbour 2x down-sampling keeps every other voxel: [[1, 0], [0, 1]]
    small = torch.tensor([[[[1, 0], [0, 1]]]])
    assert torch.equal(DeepSupervisionLoss.resize_target(target, (2, 2)), small)
    expected = 2 / 3 * base(full, target) + 1 / 3 * base(half, small)
    assert DeepSupervisionLoss(base)([full, half], target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_deep_supervision_custom_weights_are_normalised_and_checked():
    base = build_loss("ce")
    outputs = _outputs(2)
    target = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    expected = 0.5 * base(outputs[0], target) + 0.5 * base(outputs[1], target)
    assert DeepSupervisionLoss(base, weights=[2, 2])(outputs, target).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="2 weights but the network gave 3 outputs"):
        DeepSupervisionLoss(base, weights=[2, 2])(_outputs(3), target)
    with pytest.raises(ValueError, match="non-negative"):
        DeepSupervisionLoss(base, weights=[1, -1])


def test_deep_supervision_is_finite_and_zero_when_every_level_is_perfect():
    label = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    label[..., :2, :2] = 1
    outputs = [_hard_logits(label, 20.0), _hard_logits(label[..., ::2, ::2], 20.0)]
    for name in available_losses():
        value = DeepSupervisionLoss(build_loss(name))(outputs, label)
        assert value.item() == pytest.approx(0.0, abs=1e-5)
    empty = torch.zeros_like(label)
    value = DeepSupervisionLoss(build_loss("dice_focal", include_background=False))(outputs, empty)
    assert torch.isfinite(value)
