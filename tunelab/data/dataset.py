"""`prepare(cfg)`: everything a trial needs from its data, and a report that lets a user trust it.

load (cached) -> filter -> test set aside (seeded by data.test_seed) -> train / validation split
of the rest (seeded by cfg.seed) -> normalisation stats from the training split -> training
batches + validation and test tensors. An external test set (data.test_root) is loaded and
filtered the same way and normalised with the training split's statistics.
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
from tunelab.data.batches import BatchSource, TrainBatches, default_workers, normalize
from tunelab.data.cache import Fingerprints, LoadedDataset, load
from tunelab.data.filters import apply_filters, foreground_fractions
from tunelab.data.split import hold_out_test, split_indices

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
    # the test set: the internal one's per-class counts, or the external folder's
    test_per_class: dict[str, int]
    # "internal, 0.2 of the cases (data.test_seed = 0)", "external, <root>", or "none: ..."
    test_source: str
    test_skipped: list[tuple[str, str]]  # an external test set's own scan and decode skips
    test_filtered: list[tuple[str, str]]  # an external test set's pairs dropped by the filters
    train_per_class_balanced: dict[str, int]  # with the balancing copies
    cache_path: str
    cache_hit: bool
    load_seconds: float
    # the files' identity, and whether this process listed and hashed them (False: the sweep's
    # driver did, once for all its trials)
    fingerprint: str
    hashed_here: bool
    normalize_mean: list[float]  # per channel, in units of x / 255; applied to train and val
    normalize_std: list[float]
    # augmentation worker processes (0: batches made on a thread, as without augmentation); see
    # `batches.default_workers` for how the trial's CPUs bound them
    loader_workers: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, for MLflow artifacts and results tables."""
        return dataclasses.asdict(self)

    def to_text(self) -> str:
        """A human summary: where the data came from, what was left out, how it was split."""
        source = "cache hit" if self.cache_hit else "decoded and cached"
        source += "" if self.hashed_here else ", files not hashed: identity given by the sweep"
        lines = [
            f"data: {self.root} ({self.layout} layout), {self.load_seconds:.2f} s, {source}",
            f"  cache: {self.cache_path}",
            f"  mean foreground fraction {self.foreground_fraction:.3f}; normalisation mean "
            f"{_fmt(self.normalize_mean)} std {_fmt(self.normalize_std)}",
            f"  test set: {self.test_source}; augmentation workers: {self.loader_workers}",
            f"  {'class':<24}{'images':>8}{'train':>8}{'val':>8}{'train+copies':>14}",
        ]
        for name, count in self.images_per_class.items():
            lines.append(
                f"  {name:<24}{count:>8}{self.train_per_class[name]:>8}"
                f"{self.val_per_class[name]:>8}{self.train_per_class_balanced[name]:>14}"
            )
        lines.append("  test: " + ", ".join(f"{k} {n}" for k, n in self.test_per_class.items()))
        listed = (
            ("skipped", self.skipped),
            ("filtered out", self.filtered),
            ("test set skipped", self.test_skipped),
            ("test set filtered out", self.test_filtered),
        )
        for title, items in listed:
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
    test: TestSet  # empty (no images) when the trial has no test set
    pixel_class_frequencies: Tensor  # (K,) in the training split; binary: [background, fg]
    report: DataReport


@dataclass(frozen=True, eq=False)
class TestSet:
    """Images scored once, at a trial's end, by the chosen checkpoint; no decision sees them."""

    images: Tensor  # (Nt, C, H, W) float32, normalised like the training batches
    masks: Tensor  # (Nt, H, W) int64
    classes: Tensor  # (Nt,) int64 index into class_names
    class_names: tuple[str, ...]  # an external test set's own tumour classes
    files: tuple[str, ...]  # image paths, one per image
    cases: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class _Kept:
    """The pairs of a loaded dataset that passed the filters, as plain arrays."""

    images: np.ndarray  # (N, H, W, C) uint8, copied out of the memory map
    masks: np.ndarray  # (N, H, W)
    classes: np.ndarray  # (N,)
    files: np.ndarray  # (N,) str
    cases: np.ndarray  # (N,) str
    filtered: list[tuple[str, str]]


def _kept(data: LoadedDataset, cfg: DataConfig, what: str) -> _Kept:
    kept, filtered = apply_filters(data, cfg)
    if len(kept) < 2:
        raise ValueError(
            f"only {len(kept)} image(s) of {what} {data.root} left after the filters "
            f"(data.min_foreground = {cfg.min_foreground}, "
            f"data.blank_tissue_filter = {cfg.blank_tissue_filter})"
        )
    files = data.paths(kept)
    masks = np.asarray(data.masks[kept])
    _check_labels(masks, files, cfg)
    return _Kept(
        images=np.asarray(data.images[kept]),
        masks=masks,
        classes=data.classes[kept],
        files=files,
        cases=np.asarray(data.case_names[kept]),
        filtered=filtered,
    )


def load_test_root(cfg: DataConfig, fingerprints: Fingerprints | None = None) -> LoadedDataset:
    """The external test set of data.test_root, decoded like the training data (and cached)."""
    try:
        return load(dataclasses.replace(cfg, root=cfg.test_root), fingerprints)
    except (ValueError, OSError) as error:
        raise type(error)(f"data.test_root (--test-data) {cfg.test_root}: {error}") from None


def check_test_root(cfg: DataConfig) -> LoadedDataset:
    """Raise what a trial would raise on data.test_root: unusable folder, nothing left after
    the filters, labels out of range; else the loaded test set."""
    test = load_test_root(cfg)
    _kept(test, cfg, "the test set")
    return test


def prepare(
    cfg: TrialConfig, cpus: float | None = None, fingerprints: Fingerprints | None = None
) -> PreparedData:
    """The data of one trial; the same config always gives the same split and batches.

    `cpus`: the CPUs the trial may use (Ray's reservation), which bound the augmentation
    workers; None: the machine's. `fingerprints`: the datasets' identities, hashed once by the
    sweep's driver (see `data.cache`); None: hashed here.
    """
    data = load(cfg.data, fingerprints)
    pairs = _kept(data, cfg.data, "the dataset")
    images, masks, classes = pairs.images, pairs.masks, pairs.classes
    fraction = cfg.data.internal_test_fraction
    rest, test = hold_out_test(classes, pairs.cases, fraction, cfg.data.test_seed)
    train, val = split_indices(classes[rest], pairs.cases[rest], cfg.data, cfg.seed)
    train, val = rest[train], rest[val]
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
    batches = TrainBatches(source, default_workers(cpus))
    per_class = functools.partial(_per_class, class_names=data.class_names)
    test_pairs, test_names, test_source, test_skipped = _test_pairs(
        cfg.data, data, pairs, test, fingerprints
    )
    report = DataReport(
        root=data.root,
        layout=data.layout,
        images_per_class=per_class(data.classes),
        skipped=list(data.skipped),
        filtered=pairs.filtered,
        foreground_fraction=float(foreground_fractions(masks).mean()),
        train_per_class=per_class(classes[train]),
        val_per_class=per_class(classes[val]),
        test_per_class=_per_class(test_pairs.classes, test_names),
        test_source=test_source,
        test_skipped=test_skipped,
        test_filtered=test_pairs.filtered,
        train_per_class_balanced=per_class(
            np.concatenate([classes[train], classes[train][copies]])
        ),
        cache_path=data.cache_path,
        cache_hit=data.cache_hit,
        load_seconds=data.load_seconds,
        fingerprint=data.fingerprint,
        hashed_here=data.hashed,
        normalize_mean=mean.tolist(),
        normalize_std=std.tolist(),
        loader_workers=batches.workers,
    )
    return PreparedData(
        train=batches,
        val_images=normalize(images[val].transpose(0, 3, 1, 2), mean, std),  # (Nv, C, H, W)
        val_masks=torch.from_numpy(masks[val]).long(),
        val_classes=torch.from_numpy(classes[val]).long(),
        class_names=data.class_names,
        test=TestSet(
            images=normalize(test_pairs.images.transpose(0, 3, 1, 2), mean, std),
            masks=torch.from_numpy(test_pairs.masks).long(),
            classes=torch.from_numpy(test_pairs.classes).long(),
            class_names=test_names,
            files=tuple(str(f) for f in test_pairs.files),
            cases=tuple(str(c) for c in test_pairs.cases),
        ),
        pixel_class_frequencies=pixel_frequencies(masks[train], max(2, cfg.out_channels)),
        report=report,
    )


def _test_pairs(
    cfg: DataConfig,
    data: LoadedDataset,
    pairs: _Kept,
    test: np.ndarray,
    fingerprints: Fingerprints | None,
) -> tuple[_Kept, tuple[str, ...], str, list[tuple[str, str]]]:
    """(test pairs, their tumour class names, where they come from, the files skipped)."""
    if cfg.test_root:
        external = load_test_root(cfg, fingerprints)
        kept = _kept(external, cfg, "the test set")
        return kept, external.class_names, f"external, {external.root}", list(external.skipped)
    kept = _Kept(
        pairs.images[test],
        pairs.masks[test],
        pairs.classes[test],
        pairs.files[test],
        pairs.cases[test],
        [],
    )
    fraction = cfg.internal_test_fraction
    source = (
        f"internal, {fraction:g} of the cases (data.test_seed = {cfg.test_seed})"
        if fraction
        else "none: the tables score the validation split that also stopped the trials"
    )
    return kept, data.class_names, source, []


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


def _check_labels(masks: np.ndarray, files: np.ndarray, cfg: DataConfig) -> None:
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
