"""`prepare(cfg)`: everything a trial needs from its data, and a report that lets a user trust it.

load (cached) -> filter -> split (seeded by cfg.seed) -> normalisation stats from the training
split -> training batches + validation tensors.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tunelab.config import DataConfig, TrialConfig
from tunelab.data.augment import balance_copies
from tunelab.data.batches import BatchSource, TrainBatches, normalize
from tunelab.data.cache import load
from tunelab.data.filters import apply_filters, foreground_fractions
from tunelab.data.split import split_indices

MAX_LISTED = 20  # to_text lists at most this many skipped or filtered files


@dataclass(frozen=True)
class DataReport:
    root: str
    layout: str
    images_per_class: dict[str, int]  # usable pairs per class, before the filters
    skipped: list[tuple[str, str]]  # (path, reason): files the scan or the decoder left out
    filtered: list[tuple[str, str]]  # (file, reason): pairs dropped by the filters
    foreground_fraction: float  # mean fraction of non-background pixels after the filters
    train_per_class: dict[str, int]
    val_per_class: dict[str, int]
    train_per_class_balanced: dict[str, int]  # with the balancing copies
    cache_path: str
    cache_hit: bool
    load_seconds: float
    normalize_mean: list[float]  # per channel, in units of x / 255; applied to train and val
    normalize_std: list[float]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, for MLflow artifacts and results tables."""
        return dataclasses.asdict(self)

    def to_text(self) -> str:
        """A human summary: where the data came from, what was left out, how it was split."""
        source = "cache hit" if self.cache_hit else "decoded and cached"
        lines = [
            f"data: {self.root} ({self.layout} layout), {self.load_seconds:.2f} s, {source}",
            f"  cache: {self.cache_path}",
            f"  mean foreground fraction {self.foreground_fraction:.3f}; normalisation mean "
            f"{_fmt(self.normalize_mean)} std {_fmt(self.normalize_std)}",
            f"  {'class':<24}{'images':>8}{'train':>8}{'val':>8}{'train+copies':>14}",
        ]
        for name, count in self.images_per_class.items():
            lines.append(
                f"  {name:<24}{count:>8}{self.train_per_class[name]:>8}"
                f"{self.val_per_class[name]:>8}{self.train_per_class_balanced[name]:>14}"
            )
        for title, items in (("skipped", self.skipped), ("filtered out", self.filtered)):
            lines.append(f"  {title}: {len(items)} file(s)")
            lines += [f"    {path}: {reason}" for path, reason in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                lines.append(f"    ... and {len(items) - MAX_LISTED} more (see to_dict())")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class PreparedData:
    train: TrainBatches
    val_images: Tensor  # (Nv, C, H, W) float32, normalised like the training batches
    val_masks: Tensor  # (Nv, H, W) int64
    val_classes: Tensor  # (Nv,) int64 index into class_names
    class_names: tuple[str, ...]
    pixel_class_frequencies: Tensor  # (K,) in the training split; binary: [background, fg]
    report: DataReport


def prepare(cfg: TrialConfig) -> PreparedData:
    """The data of one trial; the same config always gives the same split and batches."""
    data = load(cfg.data)
    kept, filtered = apply_filters(data, cfg.data)
    if len(kept) < 2:
        raise ValueError(
            f"only {len(kept)} image(s) of {data.root} left after the filters "
            f"(data.min_foreground = {cfg.data.min_foreground}, "
            f"data.blank_tissue_filter = {cfg.data.blank_tissue_filter})"
        )
    images = np.asarray(data.images[kept])  # (N, H, W, C), copied out of the memory map
    masks = np.asarray(data.masks[kept])  # (N, H, W)
    classes = data.classes[kept]  # (N,)
    _check_labels(masks, [data.files[i] for i in kept], cfg.data)
    train, val = split_indices(classes, np.asarray(data.cases)[kept], cfg.data, cfg.seed)
    copies = (
        balance_copies(classes[train], cfg.data.balance_target)
        if cfg.data.balance
        else np.zeros(0, np.int64)
    )
    mean, std = normalization_stats(images[train], cfg.data)
    crop_size = cfg.data.crop_size or cfg.data.input_size // 2
    source = BatchSource(
        images[train],
        masks[train],
        copies,
        cfg.data.augment,
        crop_size,
        cfg.train.batch_size,
        cfg.seed,
        mean,
        std,
    )
    per_class = functools.partial(_per_class, class_names=data.class_names)
    report = DataReport(
        root=data.root,
        layout=data.layout,
        images_per_class=per_class(data.classes),
        skipped=list(data.skipped),
        filtered=filtered,
        foreground_fraction=float(foreground_fractions(masks).mean()),
        train_per_class=per_class(classes[train]),
        val_per_class=per_class(classes[val]),
        train_per_class_balanced=per_class(
            np.concatenate([classes[train], classes[train][copies]])
        ),
        cache_path=data.cache_path,
        cache_hit=data.cache_hit,
        load_seconds=data.load_seconds,
        normalize_mean=mean.tolist(),
        normalize_std=std.tolist(),
    )
    return PreparedData(
        train=TrainBatches(source),
        val_images=normalize(images[val].transpose(0, 3, 1, 2), mean, std),  # (Nv, C, H, W)
        val_masks=torch.from_numpy(masks[val]).long(),
        val_classes=torch.from_numpy(classes[val]).long(),
        class_names=data.class_names,
        pixel_class_frequencies=pixel_frequencies(masks[train], max(2, cfg.out_channels)),
        report=report,
    )


def normalization_stats(images: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) in units of x / 255: fixed (0, 1), or those of `images` (N, H, W, C).

    Computed from a 256-bin histogram per channel: exact, and no float copy of the dataset.
    """
    if cfg.normalize == "fixed":
        return np.zeros(cfg.channels), np.ones(cfg.channels)
    levels = np.arange(256) / 255
    hist = np.stack(
        [np.bincount(images[..., c].ravel(), minlength=256) for c in range(images.shape[3])]
    )  # (C, 256)
    p = hist / hist.sum(axis=1, keepdims=True)
    mean = p @ levels
    std = np.sqrt(np.maximum(p @ levels**2 - mean**2, 0.0))
    # a constant channel would divide by zero; one grey level is the smallest meaningful spread
    return mean, np.maximum(std, 1 / 255)


def pixel_frequencies(masks: np.ndarray, num_classes: int) -> Tensor:
    """(K,) share of the pixels of masks (N, H, W) in each class."""
    counts = np.bincount(masks.ravel(), minlength=num_classes)
    return torch.tensor(counts / counts.sum(), dtype=torch.float32)


def _check_labels(masks: np.ndarray, files: list[str], cfg: DataConfig) -> None:
    """Multiclass labels must be < data.num_classes, or the loss would index out of range."""
    if cfg.task != "multiclass":
        return
    too_big = np.flatnonzero(masks.reshape(len(masks), -1).max(axis=1) >= cfg.num_classes)
    if len(too_big):
        first = too_big[0]
        raise ValueError(
            f"label of {files[first]} holds class {int(masks[first].max())} but "
            f"data.num_classes = {cfg.num_classes} ({len(too_big)} label(s) affected): "
            "raise data.num_classes or fix the labels"
        )


def _per_class(classes: np.ndarray, class_names: tuple[str, ...]) -> dict[str, int]:
    """{class name: count} of class indices (n,), every class listed, even at zero."""
    counts = np.bincount(classes, minlength=len(class_names))
    return {name: int(n) for name, n in zip(class_names, counts, strict=True)}


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
