"""Seeded test / train / validation splits, stratified by image class and grouped by case.

`hold_out_test` first sets the test set aside: always grouped by case, seeded by its own seed
(data.test_seed), so it is the same images whatever the trial's seed or fold. `split_indices`
then splits what is left into train and validation (or k folds), seeded by the trial's seed and
grouped by case or, with data.split = "image", by image.

One algorithm serves every mode: groups (cases, or single images for `split="image"`) are dealt
into bins with target fractions (hold-out: [1 - val_fraction, val_fraction]; k-fold: k equal bins).
First every bin receives one group of each class that has groups to spare, so small classes appear
on both sides; then the remaining groups go, in seeded random order, to the bin where they bring
the per-class counts closest to the targets; last, no bin is left empty if groups allow. A case
may hold images of several classes (EBHI has such cases); it still moves as one unit.
"""

from __future__ import annotations

import numpy as np

from tunelab.config import DataConfig


def hold_out_test(
    classes: np.ndarray, cases: np.ndarray | tuple[str, ...], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices left for training and validation, test indices), each sorted.

    About `fraction` of each class's images, in whole cases; fraction 0 gives no test set.
    """
    classes = np.asarray(classes)
    everything = np.arange(len(classes))
    if fraction == 0:
        return everything, everything[:0]
    _, groups = np.unique(np.asarray(cases), return_inverse=True)
    counts = _group_counts(groups, classes)
    targets = np.array([1.0 - fraction, fraction])
    bins = assign_groups(counts, targets, np.random.default_rng(seed))[groups]  # (N,)
    rest, test = np.flatnonzero(bins == 0), np.flatnonzero(bins == 1)
    if len(rest) == 0 or len(test) == 0:
        raise ValueError(
            f"the test split left the {'test' if len(test) == 0 else 'training'} side empty: "
            f"{len(classes)} images in {len(counts)} cases cannot be split with "
            f"data.test_fraction = {fraction}; use more data or data.test_fraction = 0"
        )
    return rest, test


def split_indices(
    classes: np.ndarray, cases: np.ndarray | tuple[str, ...], cfg: DataConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), each sorted; the same inputs give the same split."""
    classes = np.asarray(classes)
    if cfg.split == "case":
        _, groups = np.unique(np.asarray(cases), return_inverse=True)
    else:
        groups = np.arange(len(classes))
    counts = _group_counts(groups, classes)
    if cfg.folds >= 2:
        targets, val_bin = np.full(cfg.folds, 1.0 / cfg.folds), cfg.fold
    else:
        targets, val_bin = np.array([1.0 - cfg.val_fraction, cfg.val_fraction]), 1
    bins = assign_groups(counts, targets, np.random.default_rng(seed))[groups]  # (N,)
    train, val = np.flatnonzero(bins != val_bin), np.flatnonzero(bins == val_bin)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"the split left the {'validation' if len(val) == 0 else 'training'} side empty: "
            f"{len(classes)} images in {len(counts)} {cfg.split} groups cannot be split with "
            f"data.val_fraction = {cfg.val_fraction}, data.folds = {cfg.folds}; "
            "use more data or data.split = 'image'"
        )
    return train, val


def assign_groups(counts: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bin of each group, from its per-class item counts (G, K) and the bins' fractions (B,)."""
    n_groups, n_classes = counts.shape
    order = rng.permutation(n_groups)
    bins = np.full(n_groups, -1)
    fill = np.zeros((len(targets), n_classes), np.int64)  # (B, K) items placed so far
    groups_per_class = (counts > 0).sum(axis=0)

    def place(group: int, b: int) -> None:
        bins[group] = b
        fill[b] += counts[group]

    # seeding: smallest bins first, so a class with two cases gives its smaller one to validation
    for b in np.argsort(targets, kind="stable"):
        for k in rng.permutation(n_classes):
            if fill[b, k] == 0 and groups_per_class[k] >= 2:
                free = [g for g in order if bins[g] < 0 and counts[g, k] > 0]
                if free:
                    place(_seed_group(free, counts, k, targets[b]), b)

    totals = np.maximum(counts.sum(axis=0), 1)  # (K,)
    for group in order[bins[order] < 0]:
        # squared distance of each class's count from its target, per class in units of its
        # size so rare classes count as much as common ones; place where it grows least
        deficit = fill - targets[:, None] * totals  # (B, K), negative = room left
        growth = ((2 * deficit + counts[group]) * counts[group] / totals**2).sum(axis=1)
        place(group, int(np.argmin(growth)))

    # a bin left empty (a few one-case classes) takes the smallest group of the fullest bin
    for b in np.flatnonzero(np.bincount(bins, minlength=len(targets)) == 0):
        groups_per_bin = np.bincount(bins, minlength=len(targets))
        if groups_per_bin.max() < 2:
            break
        donor = groups_per_bin.argmax()
        bins[min(order[bins[order] == donor], key=lambda g: counts[g].sum())] = b
    return bins


def _seed_group(free: list[int], counts: np.ndarray, k: int, fraction: float) -> int:
    """A random group (free is in random order) that fits the bin's share of class k."""
    share = max(1.0, fraction * counts[:, k].sum())
    fitting = [g for g in free if counts[g].sum() <= share]
    return fitting[0] if fitting else min(free, key=lambda g: counts[g].sum())


def _group_counts(groups: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(G, K) images of each class in each group."""
    counts = np.zeros((groups.max() + 1, classes.max() + 1), np.int64)
    np.add.at(counts, (groups, classes), 1)
    return counts
