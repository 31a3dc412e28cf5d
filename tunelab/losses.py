"""Segmentation losses of studies A and B: pure tensor functions, in a plain-dict registry of
`Loss`.

Every loss is called as `loss(logits, target, class_weights)` and returns a scalar (a `Loss`
also gives the sums a large set's loss is built from, a batch at a time):
- logits (N, K, H, W), raw outputs: K = 1 for binary tasks, K = num_classes for multiclass;
- target (N, H, W), integer class indices (binary: 0 background, 1 foreground);
- class_weights (K',) or None, used by `wce` only: K' = 2 for binary ([background, foreground]),
  K' = K for multiclass.
Everything is computed in float32, so bf16/fp16 logits straight out of autocast are fine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tunelab.config import BINARY_ONLY_LOSSES

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


# mean's name -> (sum, count) over one batch; adding them over batches gives the set's means
Sums = dict[str, tuple[Tensor, Tensor | float]]


@dataclass(frozen=True)
class Loss:
    """A loss as a function of a few means over its set: over pixels, images or weights.

    `sums(logits, target, class_weights)` gives each mean of one batch as (sum, count); summed
    over batches they give the whole set's, so a set too large for the device is scored a batch
    at a time to the same loss (validation and test streaming, `add_sums`). `of_means` turns
    the means into the loss. Called like a function, it is the loss of one batch.
    """

    sums: Callable[[Tensor, Tensor, Tensor | None], Sums]
    of_means: Callable[[dict[str, Tensor]], Tensor]

    def __call__(
        self, logits: Tensor, target: Tensor, class_weights: Tensor | None = None
    ) -> Tensor:
        return self.of_sums(self.sums(logits, target, class_weights))

    def of_sums(self, sums: Sums) -> Tensor:
        return self.of_means({name: total / count for name, (total, count) in sums.items()})


def add_sums(totals: Sums, batch: Sums) -> Sums:
    """Running totals plus one batch's sums, in float64: a float32 sum over millions of pixels
    would lose the digits a validation loss is compared on."""
    return {
        name: (
            totals[name][0] + total.double() if name in totals else total.double(),
            totals[name][1] + _double(count) if name in totals else _double(count),
        )
        for name, (total, count) in batch.items()
    }


def _double(count: Tensor | float) -> Tensor | float:
    return count.double() if isinstance(count, Tensor) else count


def _bce_sums(logits: Tensor, target: Tensor, class_weights: Tensor | None) -> Sums:
    """Study A's baseline: a network ending in a sigmoid trained with plain BCE (nn.BCELoss)."""
    x, t = _binary("bce", logits, target)
    # CUDA autocast refuses binary_cross_entropy; it runs in float32 here, so that is moot
    with torch.autocast(x.device.type, enabled=False):
        total = F.binary_cross_entropy(torch.sigmoid(x), t, reduction="sum")
    return {"bce": (total, x.numel())}


def _bce_logits_sums(logits: Tensor, target: Tensor, class_weights: Tensor | None) -> Sums:
    """BCE fused with the sigmoid (BCEWithLogits): study A's arm without a final sigmoid."""
    x, t = _binary("bce_logits", logits, target)
    return {"bce_logits": (F.binary_cross_entropy_with_logits(x, t, reduction="sum"), x.numel())}


def _smooth_l1_sums(logits: Tensor, target: Tensor, class_weights: Tensor | None) -> Sums:
    """SmoothL1 (beta 1) between sigmoid probabilities and the 0/1 target, as in study A.

    Since |p - t| <= 1 = beta, this always equals half the mean squared error.
    """
    x, t = _binary("smooth_l1", logits, target)
    return {"smooth_l1": (F.smooth_l1_loss(torch.sigmoid(x), t, reduction="sum"), x.numel())}


def _ce_sums(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Sums:
    """Pixel-wise cross entropy over pixels and batch; for K = 1, BCE with logits."""
    _check_shapes(logits, target)
    if logits.shape[1] == 1:
        total, count = _bce_logits_sums(logits, target, None)["bce_logits"]
    else:
        total = F.cross_entropy(logits.float(), target.long(), reduction="sum")
        count = target.numel()
    return {"ce": (total, count)}


def _wce_sums(logits: Tensor, target: Tensor, class_weights: Tensor | None) -> Sums:
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
    pixel_weights = weights[target.long()]  # (N, H, W)
    if k > 1:
        total = F.cross_entropy(logits.float(), target.long(), weight=weights, reduction="sum")
    else:
        per_pixel = F.binary_cross_entropy_with_logits(
            logits[:, 0].float(), target.float(), reduction="none"
        )
        total = (pixel_weights * per_pixel).sum()
    return {"wce": (total, pixel_weights.sum())}


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


def _dice_sums(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Sums:
    """Soft Dice averaged over classes and images (every image has K' classes)."""
    scores = soft_dice_score(logits, target)  # (N, K')
    return {"dice": (scores.sum(), scores.numel())}


def _ce_and_dice_sums(logits: Tensor, target: Tensor, class_weights: Tensor | None) -> Sums:
    return _ce_sums(logits, target) | _dice_sums(logits, target)


def _logdice_ce(means: dict[str, Tensor]) -> Tensor:
    """CE - log(mean soft Dice): study B's proposal (eq. 12) to put both terms on a log scale.

    The paper writes log(-DICE) + CE with DICE = -score, whose minimum would be Dice 0; the
    intended term is -log(score), which is 0 for a perfect overlap. DICE_EPS keeps score > 0.
    """
    return means["ce"] - torch.log(means["dice"])


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


LOSSES: dict[str, Loss] = {
    "bce": Loss(_bce_sums, lambda means: means["bce"]),
    "bce_logits": Loss(_bce_logits_sums, lambda means: means["bce_logits"]),
    "smooth_l1": Loss(_smooth_l1_sums, lambda means: means["smooth_l1"]),
    "dice": Loss(_dice_sums, lambda means: 1 - means["dice"]),  # study B, eq. 6
    "ce": Loss(_ce_sums, lambda means: means["ce"]),
    "wce": Loss(_wce_sums, lambda means: means["wce"]),
    "dice_ce": Loss(_ce_and_dice_sums, lambda means: means["ce"] + 1 - means["dice"]),  # eq. 7
    "logdice_ce": Loss(_ce_and_dice_sums, _logdice_ce),
}


def get_loss(name: str) -> Loss:
    """The loss registered under `name`; unknown names list the valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        valid = ", ".join(repr(n) for n in LOSSES)
        raise ValueError(f"unknown loss {name!r}: choose one of {valid}") from None
