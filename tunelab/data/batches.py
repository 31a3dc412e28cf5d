"""Training batches from in-memory uint8 arrays: no per-sample work unless augmentation needs it.

The whole training split fits in memory as uint8 (1285 x 64 x 64 is 5 MB), so a batch without
augmentation is one gather and one float conversion, in NumPy (torch spreads even a 32 x 64 x 64
gather over its intra-op threads: 20x slower on a busy CPU, 2x slower per epoch on an H100 box),
on a thread that makes the next batch while the GPU trains on this one (NumPy releases the GIL).

With augmentation, albumentations runs per sample on HWC arrays. It holds the GIL for most of its
~0.2 ms per sample, so a thread cannot overlap it with training (measured on an H100: no gain);
worker processes can, so augmented batches come from a persistent DataLoader whose workers each
make whole batches. Every batch is a pure function of (seed, epoch, batch index), so the batches
are identical whatever the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tunelab.config import Augment
from tunelab.data.augment import Pipeline, derive_seed, pipeline

T = TypeVar("T")
MAX_WORKERS = 4  # enough to keep up with a GPU at 64 x 64 (measured); more only costs memory


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Tensor:
    """uint8 (B, C, H, W) -> float32 tensor (x / 255 - mean) / std; mean and std are (C,)."""
    x = np.ascontiguousarray(images, dtype=np.float32)
    x *= (1 / (255 * std)).astype(np.float32)[:, None, None]
    x -= (mean / std).astype(np.float32)[:, None, None]
    return torch.from_numpy(x)


def default_workers(cpus: float | None = None) -> int:
    """Augmentation worker processes: one of `cpus` (the trial's share of the machine, e.g.
    Ray's --cpus-per-trial; None: every CPU this process may use) is left to the training loop."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(MAX_WORKERS, int(cpus or 1) - 1))


class BatchSource(Dataset):
    """Batch `(epoch, index)` of the training split; picklable, so DataLoader workers can use it.

    Items are the split's originals followed by its balancing copies (indices into the same
    arrays); originals get `augment`, copies get flip_rotate_scale on top (see augment.pipeline).
    """

    def __init__(
        self,
        images: np.ndarray,  # (N, H, W, C) uint8
        masks: np.ndarray,  # (N, H, W) uint8
        copies: np.ndarray,  # (M,) indices into images/masks of the balancing copies
        augment: Augment,
        crop_size: int,
        batch_size: int,
        seed: int,
        mean: np.ndarray,  # (C,) in units of x / 255
        std: np.ndarray,  # (C,)
    ) -> None:
        self.images_hwc = np.ascontiguousarray(images)  # albumentations works on HWC
        self.images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # (N, C, H, W)
        self.masks = np.ascontiguousarray(masks)
        self.items = np.concatenate([np.arange(len(images)), copies]).astype(np.int64)  # (N + M,)
        self.originals = len(images)
        self.augment, self.crop_size = augment, crop_size
        self.batch_size, self.seed, self.mean, self.std = batch_size, seed, mean, std
        self._pipelines: tuple[Pipeline | None, Pipeline | None] | None = None  # per process

    @property
    def augmenting(self) -> bool:
        return self.augment != "none" or len(self.items) > self.originals

    def __len__(self) -> int:
        """Batches per epoch; a trailing batch of one is dropped (BatchNorm needs two)."""
        full, rest = divmod(len(self.items), self.batch_size)
        return full + (rest > 1)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        epoch, index = key
        order = np.random.default_rng(derive_seed(self.seed, epoch)).permutation(len(self.items))
        positions = order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.augment == "none" and positions.max() < self.originals:
            return self._plain_batch(self.items[positions])
        return self._augmented_batch(positions, derive_seed(self.seed, epoch, index))

    def _plain_batch(self, items: np.ndarray) -> tuple[Tensor, Tensor]:
        x = self.images.take(items, axis=0)  # (B, C, H, W) uint8
        y = self.masks.take(items, axis=0)  # (B, H, W) uint8
        return normalize(x, self.mean, self.std), torch.from_numpy(y.astype(np.int64))

    def _augmented_batch(self, positions: np.ndarray, seed: int) -> tuple[Tensor, Tensor]:
        if self._pipelines is None:  # built here, not in __init__: each worker builds its own
            self._pipelines = (
                pipeline(self.augment, self.crop_size),
                pipeline(self.augment, self.crop_size, extra_copy=True),
            )
        for stream, transform in enumerate(self._pipelines):
            if transform is not None:
                transform.set_random_seed(derive_seed(seed, stream))
        images, masks = [], []
        for position in positions.tolist():
            item = self.items[position]
            image, mask = self.images_hwc[item], self.masks[item]
            transform = self._pipelines[position >= self.originals]
            if transform is not None:
                out = transform(image=image, mask=mask)
                image, mask = out["image"], out["mask"]
            images.append(image.reshape(*mask.shape, -1))  # cv2 may drop a channel axis of 1
            masks.append(mask)
        x = np.stack(images).transpose(0, 3, 1, 2)  # (B, C, H, W) uint8
        y = np.stack(masks).astype(np.int64)  # (B, H, W)
        return normalize(x, self.mean, self.std), torch.from_numpy(y)


class _EpochKeys:
    """Sampler of the (epoch, index) keys of one epoch; `epoch` is set before each pass."""

    def __init__(self, batches: int) -> None:
        self.batches, self.epoch = batches, 0

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in range(self.batches))


class TrainBatches:
    """The training split as shuffled batches: x float32 (B, C, H, W), y int64 (B, H, W).

    Order and augmentation are seeded by (seed, epoch). Iterate one epoch at a time: with worker
    processes, starting the next epoch ends the one before.
    """

    def __init__(self, source: BatchSource, workers: int | None = None) -> None:
        self.source = source
        # worker processes only pay off for augmentation (see the module's docstring)
        wanted = default_workers() if workers is None else workers
        self.workers = wanted if source.augmenting else 0
        self._keys = _EpochKeys(len(source))
        self._loader: DataLoader | None = None  # made at first use: it starts processes

    def __len__(self) -> int:
        return len(self.source)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of one epoch; the same (seed, epoch) always gives the same batches."""
        if self.workers == 0:
            return _prefetched(self.source[epoch, index] for index in range(len(self)))
        if self._loader is None:
            self._loader = DataLoader(
                self.source,
                batch_size=None,  # the source makes whole batches
                sampler=self._keys,
                num_workers=self.workers,
                persistent_workers=True,
                # pinned batches copy to the GPU asynchronously; measured on an H100, unpinned
                # ones left the training loop waiting 60 ms per epoch instead of 23
                pin_memory=torch.cuda.is_available(),
            )
        self._keys.epoch = epoch
        return iter(self._loader)


def _prefetched(items: Iterator[T]) -> Iterator[T]:
    """The same items, each made on a worker thread while the caller uses the one before.

    One thread makes them strictly in order; leaving early waits for at most one item.
    """
    with ThreadPoolExecutor(1) as worker:
        pending = worker.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = worker.submit(next, items, None)
            yield item
