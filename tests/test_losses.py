import math
from typing import get_args

import numpy as np
import pytest
import torch

from tunelab.config import BINARY_ONLY_LOSSES, LossName
from tunelab.losses import (
    LOSSES,
    add_sums,
    class_weights_from_frequencies,
    get_loss,
    soft_dice_score,
)

LN2, LN3 = math.log(2), math.log(3)

# Binary example, one 2x2 image. Logits 0, ln 3, -ln 3, ln 3 give sigmoid probabilities
# p = 0.5, 0.75, 0.25, 0.75 against the target t = 1, 1, 0, 0.
BIN_LOGITS = torch.tensor([[[[0.0, LN3], [-LN3, LN3]]]])  # (1, 1, 2, 2)
BIN_TARGET = torch.tensor([[[1, 1], [0, 0]]])  # (1, 2, 2)
# Per-pixel BCE, -ln p where t = 1 and -ln(1 - p) where t = 0:
# ln 2, ln 4/3, ln 4/3, ln 4, whose mean is (ln 2 + 2 (2 ln 2 - ln 3) + 2 ln 2) / 4.
BIN_BCE = (7 * LN2 - 2 * LN3) / 4
# Soft Dice with DICE_EPS = 1: overlap sum(p t) = 0.5 + 0.75 = 1.25, sum p = 2.25, sum t = 2,
# Dice = (2 * 1.25 + 1) / (2.25 + 2 + 1) = 3.5 / 5.25 = 2/3.
BIN_DICE = 2 / 3

# Multiclass example, K = 3, one 1x2 image. Pixel a: logits (ln 2, 0, 0), softmax
# (2, 1, 1) / 4 = (0.5, 0.25, 0.25), target class 0. Pixel b: logits (0, ln 3, 0), softmax
# (1, 3, 1) / 5 = (0.2, 0.6, 0.2), target class 2.
MC_LOGITS = torch.tensor([[[[LN2, 0.0]], [[0.0, LN3]], [[0.0, 0.0]]]])  # (1, 3, 1, 2)
MC_TARGET = torch.tensor([[[0, 2]]])  # (1, 1, 2)
# CE: mean of -ln 0.5 and -ln 0.2 = (ln 2 + ln 5) / 2.
MC_CE = math.log(10) / 2
# Dice per class, (2 overlap + 1) / (sum p + sum t + 1):
#   class 0: overlap 0.5, sum p 0.5 + 0.2 = 0.7, sum t 1 -> 2 / 2.7
#   class 1 (absent): overlap 0, sum p 0.25 + 0.6 = 0.85, sum t 0 -> 1 / 1.85
#   class 2: overlap 0.2, sum p 0.25 + 0.2 = 0.45, sum t 1 -> 1.4 / 2.45
MC_DICE = (2 / 2.7 + 1 / 1.85 + 1.4 / 2.45) / 3

# Binary example, two 1x2 images, where the mean of per-image Dice and one Dice pooled over the
# batch differ. Image A: logits ln 3, -ln 3 -> p = 0.75, 0.25 against t = 1, 0. Image B: logits
# 0, 0 -> p = 0.5, 0.5 against an empty target.
TWO_LOGITS = torch.tensor([[[[LN3, -LN3]]], [[[0.0, 0.0]]]])  # (2, 1, 1, 2)
TWO_TARGET = torch.tensor([[[1, 0]], [[0, 0]]])  # (2, 1, 2)
# Per image, (2 overlap + 1) / (sum p + sum t + 1):
#   A: overlap 0.75, sum p 1, sum t 1 -> 2.5 / 3 = 5/6
#   B: overlap 0, sum p 1, sum t 0 -> 1 / 2
# mean 2/3. Pooled over the batch instead: overlap 0.75, sum p 2, sum t 1 -> 2.5 / 4 = 5/8.
TWO_DICE_PER_IMAGE = (5 / 6, 1 / 2)
TWO_DICE, TWO_POOLED_DICE = (5 / 6 + 1 / 2) / 2, 5 / 8
# BCE: -ln 0.75 twice (A), -ln 0.5 twice (B): mean (2 ln 4/3 + 2 ln 2) / 4 = ln(8/3) / 2
TWO_BCE = math.log(8 / 3) / 2


def binary_batch(n: int = 2, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n, 1, size, size, generator=gen)
    return logits, torch.randint(0, 2, (n, size, size), generator=gen)


def multiclass_batch(k: int = 3, n: int = 2, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(n, k, size, size, generator=gen)
    return logits, torch.randint(0, k, (n, size, size), generator=gen)


def weights_for(logits: torch.Tensor) -> torch.Tensor:
    k = logits.shape[1]
    return torch.linspace(1.0, 2.0, 2 if k == 1 else k)


# every loss with every task it supports
CASES = [(name, k) for name in LOSSES for k in (1, 3) if k == 1 or name not in BINARY_ONLY_LOSSES]


def test_registry_matches_config_literal():
    assert set(LOSSES) == set(get_args(LossName))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bce", BIN_BCE),
        ("bce_logits", BIN_BCE),
        ("ce", BIN_BCE),
        # SmoothL1 (beta 1) on |p - t| = 0.5, 0.25, 0.25, 0.75, all < 1, so 0.5 d^2 each:
        # 0.125 + 0.03125 + 0.03125 + 0.28125 = 0.46875, mean 0.1171875
        ("smooth_l1", 0.1171875),
        ("dice", 1 - BIN_DICE),
        ("dice_ce", BIN_BCE + 1 - BIN_DICE),
        ("logdice_ce", BIN_BCE - math.log(BIN_DICE)),
    ],
)
def test_binary_hand_computed(name, expected):
    loss = LOSSES[name](BIN_LOGITS, BIN_TARGET, None)
    assert loss.shape == () and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_binary_wce_hand_computed():
    # weights [background 1, foreground 3] -> pixel weights 3, 3, 1, 1 on the BCE terms
    # ln 2, ln 4/3, ln 4/3, ln 4: (3 ln 2 + 4 ln 4/3 + 2 ln 2) / (3 + 3 + 1 + 1)
    # = (13 ln 2 - 4 ln 3) / 8
    loss = LOSSES["wce"](BIN_LOGITS, BIN_TARGET, torch.tensor([1.0, 3.0]))
    assert loss.item() == pytest.approx((13 * LN2 - 4 * LN3) / 8, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ce", MC_CE),
        ("dice", 1 - MC_DICE),
        ("dice_ce", MC_CE + 1 - MC_DICE),
        ("logdice_ce", MC_CE - math.log(MC_DICE)),
    ],
)
def test_multiclass_hand_computed(name, expected):
    loss = LOSSES[name](MC_LOGITS, MC_TARGET, None)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_multiclass_wce_hand_computed():
    # weights (1, 2, 3): pixel a (class 0) weight 1 on -ln 0.5, pixel b (class 2) weight 3 on
    # -ln 0.2, divided by the summed weights 1 + 3 as nn.CrossEntropyLoss(weight=w) does
    loss = LOSSES["wce"](MC_LOGITS, MC_TARGET, torch.tensor([1.0, 2.0, 3.0]))
    assert loss.item() == pytest.approx((LN2 + 3 * math.log(5)) / 4, rel=1e-6)


def test_soft_dice_of_two_images_is_the_mean_of_each_image_s_dice():
    scores = soft_dice_score(TWO_LOGITS, TWO_TARGET)  # (N, K') = (2, 1)
    assert scores[:, 0].tolist() == pytest.approx(TWO_DICE_PER_IMAGE, rel=1e-6)
    dice = LOSSES["dice"](TWO_LOGITS, TWO_TARGET, None).item()
    assert dice == pytest.approx(1 - TWO_DICE, rel=1e-6)
    assert dice != pytest.approx(1 - TWO_POOLED_DICE, rel=1e-2)  # 1/3, not the pooled 3/8
    dice_ce = LOSSES["dice_ce"](TWO_LOGITS, TWO_TARGET, None).item()
    assert dice_ce == pytest.approx(TWO_BCE + 1 - TWO_DICE, rel=1e-6)
    logdice_ce = LOSSES["logdice_ce"](TWO_LOGITS, TWO_TARGET, None).item()
    assert logdice_ce == pytest.approx(TWO_BCE - math.log(TWO_DICE), rel=1e-6)


def test_soft_dice_score_is_per_image_and_class():
    logits, target = multiclass_batch(k=4, n=3)
    assert soft_dice_score(logits, target).shape == (3, 4)
    assert soft_dice_score(*binary_batch(n=5)).shape == (5, 1)


@pytest.mark.parametrize("k", [1, 3])
def test_perfect_prediction_gives_zero_dice(k):
    target = torch.tensor([[[0, 1, 1], [1, 0, 0], [0, 0, 1]], [[1, 1, 1], [1, 1, 1], [0, 0, 0]]])
    if k == 1:
        logits = (20.0 * (2 * target - 1)).unsqueeze(1).float()  # (N, 1, H, W)
    else:
        # class 2 never occurs: it must still count as a match, not as a Dice of 0
        onehot = torch.nn.functional.one_hot(target, k).permute(0, 3, 1, 2)  # (N, K, H, W)
        logits = 20.0 * (2 * onehot - 1).float()
    assert LOSSES["dice"](logits, target, None).item() == pytest.approx(0.0, abs=1e-4)
    assert LOSSES["logdice_ce"](logits, target, None).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize(("name", "k"), CASES)
def test_gradients_are_finite(name, k):
    logits, target = binary_batch() if k == 1 else multiclass_batch(k)
    logits.requires_grad_(True)
    LOSSES[name](logits, target, weights_for(logits)).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["ce", "bce_logits", "bce"])
def test_binary_cross_entropy_matches_the_formula_on_random_logits(name):
    # -mean(t ln s(x) + (1 - t) ln(1 - s(x))), s the sigmoid, in float64 NumPy
    logits, target = binary_batch()
    x, t = logits.double().numpy()[:, 0], target.double().numpy()
    s = 1 / (1 + np.exp(-x))
    expected = -np.mean(t * np.log(s) + (1 - t) * np.log(1 - s))
    assert LOSSES[name](logits, target, None).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("value", [1.0, 1 / 3, 7.0])
def test_wce_with_uniform_weights_equals_ce(k, value):
    logits, target = binary_batch() if k == 1 else multiclass_batch(k)
    weights = torch.full((2 if k == 1 else k,), value)
    expected = LOSSES["ce"](logits, target, None)
    assert LOSSES["wce"](logits, target, weights).item() == pytest.approx(expected.item(), rel=1e-6)


def test_class_weights_from_paper_frequencies():
    # 1/0.525 = 1.9048, 1/0.275 = 3.6364, 1/0.2 = 5, sum 10.5411 -> 0.1807, 0.3450, 0.4743
    weights = class_weights_from_frequencies(torch.tensor([0.525, 0.275, 0.2]))
    assert weights.tolist() == pytest.approx([0.181, 0.345, 0.474], abs=5e-4)
    assert weights.sum().item() == pytest.approx(1.0)


def test_zero_frequency_gives_finite_weights_with_exact_ratios():
    weights = class_weights_from_frequencies(torch.tensor([0.6, 0.4, 0.0]))
    assert torch.isfinite(weights).all() and weights.sum().item() == pytest.approx(1.0)
    assert (weights[1] / weights[0]).item() == pytest.approx(0.6 / 0.4, rel=1e-5)
    assert torch.isfinite(class_weights_from_frequencies(torch.zeros(2))).all()


@pytest.mark.parametrize("freqs", [[0.5, -0.1], [0.5, math.nan], [1.0], [[0.5, 0.5]]])
def test_invalid_frequencies_raise(freqs):
    with pytest.raises(ValueError, match="frequenc"):
        class_weights_from_frequencies(torch.tensor(freqs))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown loss 'focal'.*'bce'.*'logdice_ce'"):
        get_loss("focal")
    assert get_loss("dice") is LOSSES["dice"]


@pytest.mark.parametrize("name", BINARY_ONLY_LOSSES)
def test_binary_only_losses_reject_multiclass(name):
    with pytest.raises(ValueError, match=rf"'{name}' is binary-only.*'ce'"):
        LOSSES[name](*multiclass_batch(), None)


def test_wce_needs_matching_weights():
    with pytest.raises(ValueError, match="'wce' needs class_weights"):
        LOSSES["wce"](*multiclass_batch(), None)
    with pytest.raises(ValueError, match="needs 3 class weights"):
        LOSSES["wce"](*multiclass_batch(), torch.ones(2))
    with pytest.raises(ValueError, match="needs 2 class weights"):
        LOSSES["wce"](*binary_batch(), torch.ones(1))


def test_shape_mismatch_is_a_clear_error():
    logits, target = multiclass_batch()
    with pytest.raises(ValueError, match=r"expected logits \(N, K, H, W\) and target \(N, H, W\)"):
        LOSSES["ce"](logits, target[:, :4], None)


@pytest.mark.parametrize(("name", "k"), CASES)
def test_bf16_logits_give_float32_loss(name, k):
    logits, target = binary_batch() if k == 1 else multiclass_batch(k)
    low = logits.bfloat16()
    weights = weights_for(logits)
    # same values in float32: the loss must be computed in float32 either way
    expected = LOSSES[name](low.float(), target, weights)
    loss = LOSSES[name](low, target, weights)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(LOSSES[name](low, target, weights))


@pytest.mark.parametrize(("name", "k"), CASES)
def test_a_set_summed_a_batch_at_a_time_gives_the_loss_of_the_whole_set(name, k):
    logits, target = binary_batch(n=7) if k == 1 else multiclass_batch(k, n=7)
    target[4:] = 0  # batches unlike each other, as a set's are: the last all background
    loss, weights = LOSSES[name], weights_for(logits)
    whole = loss(logits, target, weights).item()
    sums: dict = {}
    batches = (slice(0, 3), slice(3, 4), slice(4, 7))  # uneven, as a short last batch is
    for part in batches:
        sums = add_sums(sums, loss.sums(logits[part], target[part], weights))
    assert loss.of_sums(sums).item() == pytest.approx(whole, rel=1e-6)
    if name in ("wce", "logdice_ce"):  # ratios of sums: a mean of batch losses is not the loss
        sizes = np.array([3, 1, 3])
        batch_losses = [loss(logits[p], target[p], weights).item() for p in batches]
        assert np.average(batch_losses, weights=sizes) != pytest.approx(whole, rel=1e-4)
