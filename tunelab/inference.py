"""Logits of a model for a stack of images, in batches: whole images (the U-Net reflect-pads a
size that is not a multiple of 2**depth), or overlapping tiles blended by MONAI's sliding
window for images too large for memory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """Autocast to `dtype` on the device, or nothing for plain fp32 (dtype None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def logit_batches(
    model: nn.Module,
    images: Tensor,
    *,
    device: torch.device,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    tile_size: int = 0,
    tile_overlap: float = 0.25,
) -> Iterator[Tensor]:
    """Logits (n, K, H, W) in float32 on `device` of `batch_size` images (N, C, H, W) at a
    time, from images on any device; a caller that scores each batch keeps only the scores.

    `tile_size` 0 predicts whole images; otherwise tiles of that size overlap by `tile_overlap`
    and are blended with Gaussian weights (MONAI's `sliding_window_inference`).
    """
    model.eval()
    for start in range(0, len(images), batch_size):
        # non_blocking: from pinned host memory the copy overlaps the previous batch's work
        batch = images[start : start + batch_size].to(
            device, memory_format=memory_format, non_blocking=True
        )
        with autocast(device, autocast_dtype):
            logits = _predict(model, batch, batch_size, tile_size, tile_overlap)
        yield logits.float()


def _predict(
    model: nn.Module, batch: Tensor, batch_size: int, tile_size: int, tile_overlap: float
) -> Tensor:
    if not tile_size:
        return model(batch)
    from monai.inferers import sliding_window_inference  # heavy import, only when tiling

    return sliding_window_inference(
        batch,
        roi_size=tile_size,
        sw_batch_size=batch_size,
        predictor=model,
        overlap=tile_overlap,
        mode="gaussian",
    )
