"""tunelab's losses and metrics against MONAI's on random inputs: an independent library.

MONAI's soft Dice is 1 - (2 sum(p t) + smooth_nr) / (sum p + sum t + smooth_dr) per image and
class (`batch=False`), averaged; tunelab smooths both by DICE_EPS = 1 (one pixel, as the README
says), so MONAI gets smooth_nr = smooth_dr = 1.0 here. MONAI's DiceMetric and MeanIoU with
`ignore_empty=False` score an empty target predicted empty 1 and an empty target with a false
positive 0, tunelab's convention; for multiclass images MONAI scores a class absent from both
masks 1 where tunelab leaves it out, so the per-image means below drop those classes by hand.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import DiceMetric, MeanIoU

from tunelab import metrics
from tunelab.losses import LOSSES

SMOOTH = {"smooth_nr": 1.0, "smooth_dr": 1.0}


def binary_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(6, 1, 16, 16) logits and (6, 16, 16) targets; the last two targets empty, the last
    image predicted empty at every threshold used below."""
    gen = torch.Generator().manual_seed(27)
    logits = 2 * torch.randn(6, 1, 16, 16, generator=gen)
    target = (torch.rand(6, 16, 16, generator=gen) < 0.3).long()
    target[4:] = 0
    logits[5] = -logits[5].abs() - 1  # sigmoid < 0.27 everywhere
    return logits, target


def multiclass_inputs(k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, K, 16, 16) logits and (4, 16, 16) targets; the last image has no class K - 1 in its
    target nor its prediction (the case where the conventions differ)."""
    gen = torch.Generator().manual_seed(28)
    logits = 2 * torch.randn(4, k, 16, 16, generator=gen)
    target = torch.randint(0, k, (4, 16, 16), generator=gen)
    target[3] = target[3].clamp(max=k - 2)
    logits[3, k - 1] = -20.0
    return logits, target


def channels_first_onehot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(labels.long(), k).permute(0, 3, 1, 2).float()  # (N, K, H, W)


# --- losses ------------------------------------------------------------------------------------


def monai_dice_loss(k: int, batch: bool = False) -> DiceLoss:
    if k == 1:
        return DiceLoss(sigmoid=True, batch=batch, **SMOOTH)
    return DiceLoss(softmax=True, to_onehot_y=True, include_background=True, batch=batch, **SMOOTH)


@pytest.mark.parametrize("k", [1, 3])
def test_dice_matches_monai_dice_loss_per_image(k):
    logits, target = binary_inputs() if k == 1 else multiclass_inputs(k)
    ours = LOSSES["dice"](logits, target, None).item()
    assert ours == pytest.approx(monai_dice_loss(k)(logits, target[:, None]).item(), rel=1e-5)
    # and not the Dice pooled over the batch, which these inputs (empty targets) set apart
    pooled = monai_dice_loss(k, batch=True)(logits, target[:, None]).item()
    assert abs(ours - pooled) > 0.02


@pytest.mark.parametrize(
    ("name", "k", "lambda_dice"),
    [
        ("bce_logits", 1, 0.0),
        ("bce", 1, 0.0),
        ("ce", 1, 0.0),
        ("ce", 3, 0.0),
        ("dice_ce", 1, 1.0),
        ("dice_ce", 3, 1.0),
    ],
)
def test_cross_entropy_and_dice_ce_match_monai_dice_ce_loss(name, k, lambda_dice):
    # DiceCELoss is lambda_dice * DiceLoss + BCEWithLogitsLoss (K = 1) or CrossEntropyLoss
    logits, target = binary_inputs() if k == 1 else multiclass_inputs(k)
    act = {"sigmoid": True} if k == 1 else {"softmax": True, "to_onehot_y": True}
    monai = DiceCELoss(**act, lambda_dice=lambda_dice, lambda_ce=1.0, **SMOOTH)
    expected = monai(logits, target[:, None]).item()
    assert LOSSES[name](logits, target, None).item() == pytest.approx(expected, rel=1e-5)


def test_multiclass_wce_matches_monai_weighted_cross_entropy():
    logits, target = multiclass_inputs()
    weights = torch.tensor([0.2, 0.3, 0.5])
    monai = DiceCELoss(softmax=True, to_onehot_y=True, weight=weights, lambda_dice=0.0)
    expected = monai(logits, target[:, None]).item()
    assert LOSSES["wce"](logits, target, weights).item() == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(LOSSES["ce"](logits, target, None).item(), rel=1e-3)


# --- metrics -----------------------------------------------------------------------------------


def monai_scores(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI's Dice and IoU (N, C) of binarised channels-first masks."""
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)
    return dice(pred, target), iou(pred, target)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_dice_and_iou_match_monai_per_image_and_on_average(threshold):
    logits, target = binary_inputs()
    probs = logits.sigmoid()
    # tunelab's documented binarisation: foreground where prob >= threshold
    pred = (probs >= threshold).float()
    assert pred[5].sum() == 0 and pred[4].sum() > 0  # both empty-target cases are exercised
    dice, iou = monai_scores(pred, target[:, None].float())  # (N, 1) each
    by_class, _ = metrics.image_scores(logits, target, (threshold,), otsu=False)
    assert by_class["dice"].tolist() == pytest.approx(dice[:, 0].tolist(), abs=1e-6)
    assert by_class["iou"].tolist() == pytest.approx(iou[:, 0].tolist(), abs=1e-6)
    result = metrics.score(
        logits, target, torch.zeros(6, dtype=torch.long), ["a"], (threshold,), False
    )
    assert result["dice"] == pytest.approx(dice.mean().item(), abs=1e-6)
    assert result["iou"] == pytest.approx(iou.mean().item(), abs=1e-6)


def test_multiclass_dice_and_iou_match_monai_over_the_classes_present():
    logits, target = multiclass_inputs()
    k = logits.shape[1]
    pred = channels_first_onehot(logits.argmax(1), k)
    truth = channels_first_onehot(target, k)
    dice, iou = monai_scores(pred, truth)  # (N, K)
    present = (pred + truth).flatten(2).sum(-1) > 0  # (N, K): in the prediction or the target
    assert not present[3, k - 1] and dice[3, k - 1] == 1  # MONAI's 1 for a class absent from both
    by_class, set_only = metrics.image_scores(logits, target, (0.5,), otsu=False)
    for name, monai in (("dice", dice), ("iou", iou)):
        mean_present = (monai * present).sum(1) / present.sum(1)
        assert by_class[name].tolist() == pytest.approx(mean_present.tolist(), abs=1e-6)
        for c in range(k):  # per pixel class, NaN where absent from both
            expected = monai[:, c].where(present[:, c], torch.nan)
            assert set_only[f"{name}_c{c}"].tolist() == pytest.approx(
                expected.tolist(), nan_ok=True
            )
