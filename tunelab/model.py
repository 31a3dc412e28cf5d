"""U-Net with every ablation axis of the two studies as a config field.

Padded 3x3 convs keep the spatial size, so output size = input size (study B); `depth` counts
levels including the bottleneck (study A: 5 levels, 64 .. 1024 channels). An input whose sides
are not multiples of 2**depth is reflect-padded to the next multiple and the output cropped back
(study B tests whole 500x500 images mirror-padded to 512). The network outputs
logits: the sigmoid/softmax belongs to the loss and the metrics, which keeps `bce` (sigmoid + BCE)
and `bce_logits` comparable on the same architecture.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.config import ModelConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}
NORMS: dict[str, type[nn.Module]] = {"none": nn.Identity, "batch": nn.BatchNorm2d}


def _smoothed_skip() -> nn.Module:
    """Study A's smoothed skip: a 5x5 average pool with stride 1 and size-keeping padding."""
    return nn.AvgPool2d(kernel_size=5, stride=1, padding=2)


# None: the skip connection is removed and the decoder sees only the upsampled path.
SKIP_MODES: dict[str, Callable[[], nn.Module] | None] = {
    "concat": nn.Identity,
    "avgpool": _smoothed_skip,
    "none": None,
}


class ConvBlock(nn.Sequential):
    """Two (conv 3x3 -> norm -> activation -> dropout) layers."""

    def __init__(self, in_ch: int, out_ch: int, cfg: ModelConfig, dropout: float) -> None:
        layers: list[nn.Module] = []
        for conv_in in (in_ch, out_ch):
            layers += [
                nn.Conv2d(conv_in, out_ch, 3, padding=1, bias=cfg.norm == "none"),
                NORMS[cfg.norm](out_ch),
                ACTIVATIONS[cfg.activation](inplace=True),
            ]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """Encoder of `depth` levels (max-pool between), transposed-conv decoder, 1x1 head."""

    def __init__(self, cfg: ModelConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        widths = [cfg.base_channels * 2**level for level in range(cfg.depth)]
        encoder_dropout = cfg.dropout if cfg.dropout_placement == "all" else 0.0
        self.skip_mode = cfg.skip_mode
        self.encoder = nn.ModuleList()
        for level, width in enumerate(widths):
            in_ch = in_channels if level == 0 else widths[level - 1]
            self.encoder.append(ConvBlock(in_ch, width, cfg, encoder_dropout))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.skips = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(cfg.depth - 1)):
            width = widths[level]
            self.up.append(nn.ConvTranspose2d(widths[level + 1], width, 2, stride=2))
            skip = SKIP_MODES[cfg.skip_mode]
            self.skips.append(skip() if skip is not None else nn.Identity())
            in_ch = 2 * width if skip is not None else width
            self.decoder.append(ConvBlock(in_ch, width, cfg, cfg.dropout))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.multiple = 2**cfg.depth

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W) -> (N, C_out, H, W) logits
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if not pad_h and not pad_w:
            return self._forward(x)
        top, left = pad_h // 2, pad_w // 2
        padded = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="reflect")
        return self._forward(padded)[..., top : top + height, left : left + width]

    def _forward(self, x: Tensor) -> Tensor:
        features: list[Tensor] = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            features.append(x)
        features.pop()  # the bottleneck has no skip
        for up, skip, block in zip(self.up, self.skips, self.decoder, strict=True):
            x = up(x)  # (N, C, 2H, 2W)
            if self.skip_mode != "none":
                x = torch.cat([skip(features.pop()), x], dim=1)
            else:
                features.pop()
            x = block(x)
        return self.head(x)
