"""Segmentation losses of studies A and B: pure tensor functions in a plain-dict registry.

Every loss is called as `loss(logits, target, class_weights)` and returns a scalar:
- logits (N, K, H, W), raw outputs: K = 1 for binary tasks, K = num_classes for multiclass;
- target (N, H, W), integer class indices (binary: 0 background, 1 foreground);
- class_weights (K',) or None, used by `wce` only: K' = 2 for binary ([background, foreground]),
  K' = K for multiclass.
Everything is computed in float32, so bf16/fp16 logits straight out of autocast are fine.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tunelab.config import BINARY_ONLY_LOSSES

LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]

# Added to the numerator and denominator of every per-image, per-class soft Dice. The sums are
# pixel counts, so 1.0 is one pixel: negligible for classes of tens of pixels or more, yet it keeps
# the gradient bounded (<= 1 / DICE_EPS) when a class is absent and predicted absent (p + t ~ 0,
# where study B saw Dice training blow up) and scores that case as a match (Dice 1) instead of 0.
DICE_EPS = 1.0

# Floor on class frequencies: an absent class (frequency 0) would make 1 / r infinite.
MIN_FREQUENCY = 1e-6


def _check_shapes(logits: Tensor, target: Tensor) -> None:
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits (N, K, H, W) and target (N, H, W), got logits "
            f"{tuple(logits.shape)} and target {tuple(target.shape)}"
        )


def _binary(name: str, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Float32 foreground logits and 0/1 target, both (N, H, W); rejects K > 1."""
    _check_shapes(logits, target)
    if logits.shape[1] != 1:
        multiclass = ", ".join(repr(n) for n in LOSSES if n not in BINARY_ONLY_LOSSES)
        raise ValueError(
            f"loss {name!r} is binary-only: expected logits with 1 channel, got "
            f"{logits.shape[1]}; for multiclass use one of {multiclass}"
        )
    return logits[:, 0].float(), target.float()  # (N, H, W)


def bce(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Study A's baseline: a network ending in a sigmoid trained with plain BCE (nn.BCELoss)."""
    x, t = _binary("bce", logits, target)
    # CUDA autocast refuses binary_cross_entropy; it runs in float32 here, so that is moot
    with torch.autocast(x.device.type, enabled=False):
        return F.binary_cross_entropy(torch.sigmoid(x), t)


def bce_logits(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """BCE fused with the sigmoid (BCEWithLogits): study A's arm without a final sigmoid."""
    x, t = _binary("bce_logits", logits, target)
    return F.binary_cross_entropy_with_logits(x, t)


def smooth_l1(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """SmoothL1 (beta 1) between sigmoid probabilities and the 0/1 target, as in study A.

    Since |p - t| <= 1 = beta, this always equals half the mean squared error.
    """
    x, t = _binary("smooth_l1", logits, target)
    return F.smooth_l1_loss(torch.sigmoid(x), t)


def ce(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Pixel-wise cross entropy averaged over pixels and batch; for K = 1, BCE with logits."""
    _check_shapes(logits, target)
    if logits.shape[1] == 1:
        return bce_logits(logits, target)
    return F.cross_entropy(logits.float(), target.long())


def wce(logits: Tensor, target: Tensor, class_weights: Tensor | None) -> Tensor:
    """Class-weighted cross entropy (study B), e.g. with `class_weights_from_frequencies`.

    Normalised like nn.CrossEntropyLoss(weight=w): divided by the summed weights of the target
    pixels, so any uniform weights give exactly `ce` and only the weights' ratios matter.
    """
    if class_weights is None:
        raise ValueError(
            "loss 'wce' needs class_weights (K' = 2 for binary, K for multiclass), "
            "e.g. class_weights_from_frequencies(pixel class frequencies)"
        )
    _check_shapes(logits, target)
    k = logits.shape[1]
    expected = 2 if k == 1 else k
    if class_weights.shape != (expected,):
        raise ValueError(
            f"loss 'wce' with {k} logit channel(s) needs {expected} class weights, got shape "
            f"{tuple(class_weights.shape)}"
        )
    weights = class_weights.to(logits.device, torch.float32)
    if k > 1:
        return F.cross_entropy(logits.float(), target.long(), weight=weights)
    pixel_weights = weights[target.long()]  # (N, H, W)
    per_pixel = F.binary_cross_entropy_with_logits(
        logits[:, 0].float(), target.float(), reduction="none"
    )
    return (pixel_weights * per_pixel).sum() / pixel_weights.sum()


def soft_dice_score(logits: Tensor, target: Tensor) -> Tensor:
    """Soft Dice per image and class, (N, K'), smoothed by DICE_EPS.

    Binary (K = 1): sigmoid, foreground class only (K' = 1). Multiclass: softmax against the
    one-hot target, every class including background (K' = K).
    """
    _check_shapes(logits, target)
    k = logits.shape[1]
    if k == 1:
        probs = torch.sigmoid(logits.float())  # (N, 1, H, W)
        onehot = target.unsqueeze(1).float()  # (N, 1, H, W)
    else:
        probs = logits.float().softmax(dim=1)  # (N, K, H, W)
        onehot = F.one_hot(target.long(), k).permute(0, 3, 1, 2).float()  # (N, K, H, W)
    overlap = (probs * onehot).sum(dim=(2, 3))  # (N, K')
    total = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))  # (N, K')
    return (2 * overlap + DICE_EPS) / (total + DICE_EPS)


def dice(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Soft Dice loss: 1 - Dice averaged over classes and images (study B, eq. 6)."""
    return 1 - soft_dice_score(logits, target).mean()


def dice_ce(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """CE + Dice loss (study B, eq. 7)."""
    return ce(logits, target) + dice(logits, target)


def logdice_ce(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """CE - log(mean soft Dice): study B's proposal (eq. 12) to put both terms on a log scale.

    The paper writes log(-DICE) + CE with DICE = -score, whose minimum would be Dice 0; the
    intended term is -log(score), which is 0 for a perfect overlap. DICE_EPS keeps score > 0.
    """
    return ce(logits, target) - torch.log(soft_dice_score(logits, target).mean())


def class_weights_from_frequencies(freqs: Tensor) -> Tensor:
    """Study B's weights w_c = (1/r_c) / sum_i(1/r_i), summing to 1, from class frequencies r_c.

    freqs: fraction of pixels per class, (K,) ((2,) [background, foreground] for binary).
    Paper: 0.525/0.275/0.2 -> 0.181/0.345/0.474. Frequencies are clamped to >= MIN_FREQUENCY,
    so an absent class gets a large finite weight instead of inf/NaN; since `wce` normalises by
    the target pixels' weights, the other classes keep their exact ratios, and the absent class's
    weight only counts where that class does appear.
    """
    if freqs.ndim != 1 or len(freqs) < 2:
        raise ValueError(f"expected one frequency per class (K >= 2,), got {tuple(freqs.shape)}")
    freqs = freqs.float()
    if not torch.isfinite(freqs).all() or (freqs < 0).any():
        raise ValueError(f"class frequencies must be finite and >= 0, got {freqs.tolist()}")
    inverse = 1.0 / freqs.clamp_min(MIN_FREQUENCY)
    return inverse / inverse.sum()


LOSSES: dict[str, LossFn] = {
    "bce": bce,
    "bce_logits": bce_logits,
    "smooth_l1": smooth_l1,
    "dice": dice,
    "ce": ce,
    "wce": wce,
    "dice_ce": dice_ce,
    "logdice_ce": logdice_ce,
}


def get_loss(name: str) -> LossFn:
    """The loss registered under `name`; unknown names list the valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        valid = ", ".join(repr(n) for n in LOSSES)
        raise ValueError(f"unknown loss {name!r}: choose one of {valid}") from None
