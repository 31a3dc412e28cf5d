"""Decode one image/label pair into arrays at the training size.

The label is binarised (binary task) at its original resolution, before the nearest-neighbour
resize, so resizing never invents label values. Decoding is where broken files show up: a file
PIL cannot read becomes a `DecodeError` naming the file, which the caller reports and skips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tunelab.config import Task
from tunelab.data.scan import Pair

BINARY_THRESHOLD = 127  # label > 127 is foreground: 0.5 of the normalised 8-bit value


class DecodeError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def decode_pair(
    pair: Pair, size: int, channels: int, task: Task
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(image (S, S, C) uint8, mask (S, S) uint8, original (height, width)) of one pair."""
    image = _open(pair.image, "L" if channels == 1 else "RGB")
    label = _open(pair.label, None)
    if label.size != image.size:
        raise DecodeError(
            pair.label,
            f"label size {label.size[0]}x{label.size[1]} differs from image size "
            f"{image.size[0]}x{image.size[1]} ({pair.image.name})",
        )
    pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    mask = _mask(label, pair.label, size, task)
    return pixels.reshape(size, size, channels), mask, (image.height, image.width)


def _open(path: Path, mode: str | None) -> Image.Image:
    """Fully decoded image; truncated or corrupt files raise DecodeError here, not later."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode) if mode and image.mode != mode else image.copy()
    except (OSError, SyntaxError, ValueError) as error:  # PIL's ways of saying "corrupt"
        raise DecodeError(path, f"unreadable or corrupt ({error})") from None


def _mask(label: Image.Image, path: Path, size: int, task: Task) -> np.ndarray:
    if task == "binary":
        values = (np.asarray(label.convert("L")) > BINARY_THRESHOLD).astype(np.uint8)
    elif label.mode in ("L", "P"):
        values = np.asarray(label)  # the integer class of each pixel, kept as is
    else:
        raise DecodeError(
            path, f"multiclass label must be 8-bit single-channel (L or P), got mode {label.mode}"
        )
    resized = Image.fromarray(values).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized)
