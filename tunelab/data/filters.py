"""Study B's data cleaning: drop near-empty masks and masks that label blank glass as tissue.

Both run on the cached arrays after loading, so changing a threshold never re-decodes anything.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from tunelab.config import DataConfig
from tunelab.data.cache import LoadedDataset

BLANK_SIGMA = 10.0  # Gaussian blur at the source resolution; scaled to the cached size
BLANK_INTENSITY = 40  # inverted, blurred grey value below which a pixel is blank glass
BLANK_MAX_FRACTION = 0.075  # drop when more of the tissue pixels than this are blank


def foreground_fractions(masks: np.ndarray) -> np.ndarray:
    """(N,) fraction of non-background pixels of each mask (N, H, W)."""
    return (masks > 0).mean(axis=(1, 2))


def blank_tissue_fractions(
    images: np.ndarray, masks: np.ndarray, source_sizes: np.ndarray, chunk: int = 256
) -> np.ndarray:
    """(N,) fraction of each mask's tissue (non-background) pixels that look blank in the image.

    The paper counts classes 1 and 2 (tissue and tumour) as tissue, i.e. all non-background.
    Chunked, so the float copies stay small whatever the dataset size.
    """
    parts = [
        _blank_fractions(images[s : s + chunk], masks[s : s + chunk], source_sizes[s : s + chunk])
        for s in range(0, len(images), chunk)
    ]
    return np.concatenate(parts)


def _blank_fractions(images: np.ndarray, masks: np.ndarray, source_sizes: np.ndarray) -> np.ndarray:
    # greyscale, inverted so glass is dark, blurred so pale gaps inside tissue are not counted
    weights = np.array([0.299, 0.587, 0.114] if images.shape[3] == 3 else [1.0], np.float32)
    inverted = 255.0 - images.astype(np.float32) @ weights  # (n, H, W)
    sigmas = BLANK_SIGMA * images.shape[2] / source_sizes[:, 1]  # (n,) sigma at the cached size
    blurred = np.empty_like(inverted)
    for sigma in np.unique(sigmas):  # one call per source size, usually one in all
        same = sigmas == sigma
        blurred[same] = gaussian_filter(inverted[same], sigma=(0, sigma, sigma))
    tissue = masks > 0
    blank = (blurred < BLANK_INTENSITY) & tissue
    return blank.sum(axis=(1, 2)) / np.maximum(tissue.sum(axis=(1, 2)), 1)


def apply_filters(data: LoadedDataset, cfg: DataConfig) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(indices kept, [(file, reason)] dropped) by data.min_foreground and blank_tissue_filter."""
    reasons: dict[int, list[str]] = {}  # only the dropped: a list per image costs 3 ms per 1,000
    if cfg.min_foreground > 0:
        fractions = foreground_fractions(data.masks)
        for i in np.flatnonzero(fractions < cfg.min_foreground):
            reasons.setdefault(int(i), []).append(
                f"foreground {fractions[i]:.2%} < data.min_foreground {cfg.min_foreground:.2%}"
            )
    if cfg.blank_tissue_filter:
        blank = blank_tissue_fractions(data.images, data.masks, data.source_sizes)
        for i in np.flatnonzero(blank > BLANK_MAX_FRACTION):
            reasons.setdefault(int(i), []).append(
                f"{blank[i]:.1%} of tissue pixels blank (> {BLANK_MAX_FRACTION:.1%}, "
                "data.blank_tissue_filter)"
            )
    dropped_at = np.array(sorted(reasons), np.int64)
    kept = np.setdiff1d(np.arange(len(data.images)), dropped_at)
    paths = data.paths(dropped_at).tolist()
    dropped = [(path, "; ".join(reasons[i])) for path, i in zip(paths, dropped_at, strict=True)]
    return kept, dropped
