"""The images to predict and, optionally, their labels: found in a dataset folder of either
layout or a flat folder of PNG, JPEG or TIFF files, decoded as training decodes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tunelab.config import Task
from tunelab.data.decode import BINARY_THRESHOLD
from tunelab.data.scan import IMAGE_SUFFIXES, LABEL_SUFFIXES
from tunelab.predict.models import PredictError


@dataclass(frozen=True)
class Found:
    path: Path
    name: str  # the path relative to the images folder: what outputs are named after


def find_images(folder: Path) -> list[Found]:
    """The images of a dataset folder of either layout (`images/[<class>/]*`, or
    `<class>/image/*`; labels are not needed), else every image file directly in `folder`."""
    if not folder.is_dir():
        raise PredictError(f"images folder {folder} does not exist or is not a folder")
    if (folder / "images").is_dir():
        roots = [folder / "images"]
    else:
        roots = sorted(p for p in folder.glob("*/image") if p.is_dir())
    if roots:
        paths = [p for root in roots for p in root.rglob("*") if _is_image(p)]
    else:
        paths = [p for p in folder.iterdir() if _is_image(p)]
    if not paths:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        raise PredictError(f"{folder}: no images ({suffixes}) in it or in a dataset layout")
    return [Found(p, p.relative_to(folder).as_posix()) for p in sorted(paths)]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def read_image(path: Path, channels: int) -> tuple[np.ndarray, str]:
    """(H, W, C) uint8 at the file's own size, and the mode it was converted from ("" when it
    already had the model's channels). Raises OSError for a file PIL cannot read."""
    with Image.open(path) as image:
        image.load()
        wanted = "L" if channels == 1 else "RGB"
        converted = "" if image.mode == wanted else image.mode
        pixels = np.asarray(image.convert(wanted))
    return pixels.reshape(*pixels.shape[:2], channels), converted


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C): PIL bilinear, as `data.decode` resizes for training."""
    channels = pixels.shape[2]
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    resized = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    return resized.reshape(size, size, channels)


def label_index(folder: Path) -> dict[str, Path]:
    """File stem -> label file, for every label PNG under `folder` (any depth)."""
    if not folder.is_dir():
        raise PredictError(f"--labels {folder} does not exist or is not a folder")
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in LABEL_SUFFIXES and path.is_file():
            index.setdefault(path.stem, path)
    return index


def read_label(path: Path, task: Task) -> np.ndarray:
    """(H, W) integer classes at the label's own size, binarised as training binarises."""
    with Image.open(path) as label:
        label.load()
        if task == "binary":
            return (np.asarray(label.convert("L")) > BINARY_THRESHOLD).astype(np.int64)
        return np.asarray(label).astype(np.int64)
