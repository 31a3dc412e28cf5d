"""Receptive fields of a U-Net (study B, section 6.4): the theoretical one, from the
architecture, and the effective one, from the gradient of one central output pixel.

Theoretical: the input pixels that can influence one output pixel, found by walking the network
backwards from that pixel with the interval of indices each layer reads: a padded 3x3
convolution widens it by one on each side, a 2x2 stride-2 pool maps [a, b] to [2a, 2b + 1], a
2x2 stride-2 transposed convolution maps [a, b] to [a // 2, b // 2], and a skip joins the
encoder's interval (widened by 2 for study A's 5x5 average) with the up-sampled one. Pooling and
up-sampling make the size depend on where the pixel sits in the 2**(depth - 1) grid; the field
is the largest over those positions (`field_at` gives one position's).

Effective: how much each input pixel actually moves the central output (Luo et al. 2016), the
mean absolute gradient over some inputs; its extent is the smallest centred square that holds
95% of that mass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from tunelab.config import ModelConfig

CONVS_PER_LEVEL = 2  # tunelab.model.ConvBlock
MASS = 0.95  # the effective field's extent holds this share of the gradient mass


def field_at(cfg: ModelConfig, position: int) -> tuple[int, int]:
    """The input interval [first, last] (one axis) that output pixel `position` can see."""
    top = cfg.depth - 1

    def encoded(level: int, a: int, b: int) -> tuple[int, int]:  # encoder block `level`
        a, b = a - CONVS_PER_LEVEL, b + CONVS_PER_LEVEL
        return (a, b) if level == 0 else encoded(level - 1, 2 * a, 2 * b + 1)

    def decoded(level: int, a: int, b: int) -> tuple[int, int]:  # decoder block `level`
        if level == top:  # the bottleneck: the deepest encoder block
            return encoded(top, a, b)
        a, b = a - CONVS_PER_LEVEL, b + CONVS_PER_LEVEL
        deep = decoded(level + 1, a // 2, b // 2)
        if cfg.skip_mode == "none":
            return deep
        widen = 2 if cfg.skip_mode == "avgpool" else 0  # a 5x5 stride-1 average
        skip = encoded(level, a - widen, b + widen)
        return min(deep[0], skip[0]), max(deep[1], skip[1])

    return decoded(0, position, position)  # the 1x1 head reads one pixel


def theoretical(cfg: ModelConfig) -> int:
    """The side, in input pixels, of the largest square one output pixel can see."""
    period = 2 ** (cfg.depth - 1)
    return max(support_of(field_at(cfg, p)) for p in range(period))


def gradient_map(
    model: nn.Module, inputs: Tensor, pixel: tuple[int, int] | None = None
) -> np.ndarray:
    """Mean |d output(pixel) / d input| over `inputs` (N, C, H, W), summed over channels and
    output classes: an (H, W) map. `pixel` defaults to the centre."""
    model.eval()
    x = inputs.detach().clone().requires_grad_(True)
    output = model(x)
    h, w = output.shape[-2:]
    row, col = pixel if pixel is not None else (h // 2, w // 2)
    output[:, :, row, col].sum().backward()
    return x.grad.abs().sum(1).mean(0).numpy()


def extent(gradients: np.ndarray, mass: float = MASS) -> int:
    """The side of the smallest square centred on the map's centre that holds `mass` of it."""
    total = gradients.sum()
    if total == 0:
        return 0
    h, w = gradients.shape
    cy, cx = h // 2, w // 2
    for half in range(max(h, w)):
        window = gradients[max(cy - half, 0) : cy + half + 1, max(cx - half, 0) : cx + half + 1]
        if window.sum() >= mass * total:
            return 2 * half + 1
    return max(h, w)


def support_of(interval: tuple[int, int]) -> int:
    """The size of an interval of `field_at`."""
    return interval[1] - interval[0] + 1


def support(gradients: np.ndarray) -> int:
    """The side of the bounding square of the non-zero gradients."""
    rows, cols = np.nonzero(gradients)
    if not len(rows):
        return 0
    return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


def probe_size(cfg: ModelConfig) -> int:
    """An input side large enough to hold the whole theoretical field around the centre, a
    multiple of 2**depth so the model adds no padding."""
    multiple = 2**cfg.depth
    return -(-(2 * theoretical(cfg) + multiple) // multiple) * multiple


def zeros(cfg: ModelConfig, channels: int) -> Tensor:
    """Study B's probe: a zero input."""
    side = probe_size(cfg)
    return torch.zeros(1, channels, side, side)
