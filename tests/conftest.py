"""Shared fixtures: `make_png_dataset` writes tiny PNG datasets, so data tests read no real data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_pair(image_path: Path, label_path: Path, rng: np.random.Generator, size: int) -> None:
    """An RGB image and its 0/255 label: a random rectangle, drawn dark on pale background."""
    label = np.zeros((size, size), np.uint8)
    y0, x0 = rng.integers(0, size // 2, 2)
    label[y0 : y0 + size // 2, x0 : x0 + size // 2] = 255
    grey = np.where(label > 0, 60, 220) + rng.integers(0, 20, (size, size))
    rgb = np.stack([grey, grey * 0.8, grey * 0.9], axis=-1).astype(np.uint8)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(image_path)
    Image.fromarray(label, "L").save(label_path)


@pytest.fixture
def make_png_dataset(tmp_path: Path) -> Callable[..., Path]:
    """make(layout, classes, cases, per_case, size, name) -> root of a fresh PNG dataset.

    layout: "ebhi" (<class>/image + <class>/label), "generic" (images/ + masks/, flat, one class)
    or "generic-classes" (images/<class>/ + masks/<class>/). File names are
    `<CLASS LETTER><case>-1-400-<k>.png`, so case ids are e.g. "A03".
    """

    def make(
        layout: str = "ebhi",
        classes: dict[str, int] | None = None,  # class name -> number of cases
        per_case: int = 3,
        size: int = 40,
        name: str = "data",
        seed: int = 0,
    ) -> Path:
        root = tmp_path / name
        rng = np.random.default_rng(seed)
        for class_name, cases in (classes or {"Alpha": 4, "Beta": 3}).items():
            for case in range(cases):
                for k in range(per_case):
                    stem = f"{class_name[0].upper()}{case:02d}-1-400-{k:03d}"
                    image, label = _pair_paths(root, layout, class_name, stem)
                    write_pair(image, label, rng, size)
        return root

    return make


def _pair_paths(root: Path, layout: str, class_name: str, stem: str) -> tuple[Path, Path]:
    folders = {
        "ebhi": (root / class_name / "image", root / class_name / "label"),
        "generic": (root / "images", root / "masks"),
        "generic-classes": (root / "images" / class_name, root / "masks" / class_name),
    }
    image_dir, label_dir = folders[layout]
    return image_dir / f"{stem}.png", label_dir / f"{stem}.png"


@pytest.fixture(scope="session")
def tiny_trial() -> dict[str, object]:
    """Overrides for a trial that trains in about a second: 40 synthetic images, 32 px, 4 ch."""
    return {
        "data.synthetic_images": 40,
        "data.input_size": 32,
        "model.depth": 3,
        "model.base_channels": 4,
        "train.lr": 1e-3,
        "train.batch_size": 8,
        "train.max_epochs": 2,
    }
