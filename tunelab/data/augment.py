"""Training-time augmentation (albumentations 2) and study A's class balancing.

Pipelines act on one uint8 HWC image and its HW mask at a time, with identical geometry for both
(masks always resampled nearest, so labels stay labels). Callers reseed a pipeline for every batch
from (trial seed, epoch, batch), so any batch is reproducible on its own, in any process.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else every Ray worker asks PyPI on import

import albumentations as A
import cv2
import numpy as np

from tunelab.config import Augment

Pipeline = A.Compose  # called as pipeline(image=HWC uint8, mask=HW) -> {"image", "mask"}


def flip_rotate_scale() -> list[A.BasicTransform]:
    """Study A: random flips, rotation and scaling; borders reflected so no black wedges appear."""
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(
            rotate=(-45, 45),
            scale=(0.8, 1.2),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_REFLECT_101,
            p=0.75,
        ),
    ]


def crop_flip(crop_size: int) -> list[A.BasicTransform]:
    """Study B: a random crop_size x crop_size crop, then horizontal and vertical flips."""
    return [A.RandomCrop(crop_size, crop_size), A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]


def pipeline(augment: Augment, crop_size: int, extra_copy: bool = False) -> Pipeline | None:
    """The augmentation of an original (`extra_copy=False`) or of a balancing copy; None = as is.

    Balancing copies always get flip_rotate_scale, and under crop_flip they are cropped as well,
    so every training batch has one size.
    """
    steps = flip_rotate_scale() if extra_copy or augment == "flip_rotate_scale" else []
    if augment == "crop_flip":
        steps += crop_flip(crop_size)
    return A.Compose(steps) if steps else None


def derive_seed(*keys: int) -> int:
    """A 32-bit seed for a tuple of keys, e.g. (trial seed, epoch, batch): neighbouring tuples
    give unrelated seeds, unlike seed + epoch."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def balance_copies(classes: np.ndarray, target: int = 0) -> np.ndarray:
    """Indices into `classes` to add as augmented copies so each class reaches the target count.

    target 0 = the majority count. Copies cycle through a class's members in order, so each
    member is copied equally often (give or take one); classes at or above the target are kept
    as they are, never undersampled.
    """
    counts = np.bincount(classes)
    goal = target or counts.max()
    copies = [
        np.resize(np.flatnonzero(classes == k), goal - n)
        for k, n in enumerate(counts)
        if 0 < n < goal
    ]
    return np.concatenate(copies) if copies else np.zeros(0, np.int64)
