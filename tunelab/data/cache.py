"""The preprocessed cache: every dataset is decoded once per (content, size, channels, task).

An entry is a folder of plain `.npy` arrays plus `meta.json`: memory-mappable, so concurrent Ray
trials on one machine share the page cache instead of each holding a copy, and readable by anything
that speaks NumPy. The key hashes the files' bytes, not their timestamps, so a changed label gives a
new entry and a copied or moved dataset still hits. Entries are written to a temporary folder and
renamed into place: a trial never sees half an entry, and two trials racing to write one are fine.

Hashing every file grows with the dataset (1.8 s for 10,000 EBHI files on 2 cores), so a sweep's
driver hashes each dataset once and hands the fingerprints to its trials (`fingerprints`: root
-> fingerprint). A trial given its root's fingerprint opens the entry without listing or hashing
a file; only where the entry is missing (another node, a cleared cache) does it scan, hash and
decode as without one. The content hash stays the default because it is always right; a file
changed while a sweep runs is seen by the next sweep, not by that sweep's trials.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tunelab.config import DataConfig
from tunelab.data.decode import DecodeError, decode_pair
from tunelab.data.errors import unwritable_cache
from tunelab.data.publish import publish
from tunelab.data.scan import Pair, ScanResult, scan
from tunelab.data.synthetic import ensure_synthetic

T = TypeVar("T")
R = TypeVar("R")
FORMAT_VERSION = 3  # bump when decoding or meta changes: old entries then stop matching
Fingerprints = Mapping[str, str]  # dataset root -> `fingerprint` of its files
# per image, all memory-mapped: file names and cases too, so that opening an entry reads no
# list that grows with the dataset (meta.json holds what is per dataset, and the few files
# the scan or the decoder skipped)
ARRAY_NAMES = ("images", "masks", "classes", "source_sizes", "file_names", "case_names")


@dataclass(frozen=True, eq=False)
class LoadedDataset:
    root: str
    layout: str
    images: np.ndarray  # (N, H, W, C) uint8
    masks: np.ndarray  # (N, H, W) uint8: 0/1 (binary) or class labels (multiclass)
    classes: np.ndarray  # (N,) int64 index into class_names
    source_sizes: np.ndarray  # (N, 2) int32 (height, width) before resizing
    file_names: np.ndarray  # (N,) str: image paths relative to root
    case_names: np.ndarray  # (N,) str: the case (patient) of each image
    class_names: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (path, reason) from the scan and from decoding
    cache_path: str
    cache_hit: bool
    load_seconds: float
    fingerprint: str  # of the files' paths and bytes: the entry's identity
    hashed: bool  # the files were listed and hashed here (False: the fingerprint was given)

    def paths(self, indices: np.ndarray | None = None) -> np.ndarray:
        """(n,) str: absolute image paths of `indices` (all images when None)."""
        names = self.file_names if indices is None else self.file_names[indices]
        return np.char.add(f"{self.root}/", np.asarray(names))


def cache_dir(cfg: DataConfig) -> Path:
    """data.cache_dir, else $TUNELAB_CACHE, else ~/.cache/tunelab."""
    chosen = cfg.cache_dir or os.environ.get("TUNELAB_CACHE") or "~/.cache/tunelab"
    return Path(chosen).expanduser()


def load(cfg: DataConfig, fingerprints: Fingerprints | None = None) -> LoadedDataset:
    """Arrays of every usable pair at cfg.input_size and cfg.channels, from the cache if there.

    With the root's fingerprint in `fingerprints` and its entry in the cache, nothing is listed
    or hashed: the entry is opened as is.
    """
    start = time.perf_counter()
    cache = cache_dir(cfg)
    root = _dataset_root(cfg, cache)
    known = (fingerprints or {}).get(str(root))
    if known is not None:
        entry = cache / "arrays" / _entry_name(known, cfg)
        if entry.is_dir():
            arrays, meta = _read_entry(entry)
            scan_skips = [(f"{root}/{path}", why) for path, why in meta["scan_skipped"]]
            return _loaded(root, arrays, meta, scan_skips, entry, True, start, known, hashed=False)
    scanned = scan(root)
    digest = fingerprint(scanned)
    entry = cache / "arrays" / _entry_name(digest, cfg)
    hit = entry.is_dir()
    if not hit:
        _write_entry(entry, *_decode_all(scanned, cfg))
    arrays, meta = _read_entry(entry)
    return _loaded(
        root, arrays, meta, list(scanned.skipped), entry, hit, start, digest, hashed=True
    )


def _loaded(
    root: Path,
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    scan_skips: list[tuple[str, str]],
    entry: Path,
    hit: bool,
    start: float,
    digest: str,
    hashed: bool,
) -> LoadedDataset:
    """An entry's arrays and meta as a LoadedDataset, paths made absolute under `root`."""
    skipped = scan_skips + [(f"{root}/{path}", reason) for path, reason in meta["skipped"]]
    return LoadedDataset(
        root=str(root),
        layout=str(meta["layout"]),
        **arrays,
        class_names=tuple(meta["class_names"]),
        skipped=tuple(skipped),
        cache_path=str(entry),
        cache_hit=hit,
        load_seconds=time.perf_counter() - start,
        fingerprint=digest,
        hashed=hashed,
    )


def fingerprint(scanned: ScanResult) -> str:
    """Hash of every paired file's path (relative to the root) and bytes."""
    files = sorted({path for pair in scanned.pairs for path in (pair.image, pair.label)})
    # sha256: hardware-accelerated on current x86 and ARM CPUs, 2-3x faster here than blake2b
    digests = _parallel_map(_file_digest, files)
    total = hashlib.sha256()
    for path, digest in zip(files, digests, strict=True):
        total.update(path.relative_to(scanned.root).as_posix().encode() + b"\0" + digest)
    return total.hexdigest()


def _file_digest(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return hashlib.file_digest(file, "sha256").digest()
    except OSError:
        return b""  # unreadable: decoding reports it with its reason


def _parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """[fn(x) for x in items], on a few threads (PIL and hashlib release the GIL).

    One chunk per thread: a task per file costs more in thread hand-offs than hashing the file.
    """
    workers = min(len(items), os.cpu_count() or 1) or 1
    chunks = [items[i::workers] for i in range(workers)]  # interleaved: even share of big files
    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(lambda chunk: [fn(x) for x in chunk], chunks))
    results: list[R] = [None] * len(items)  # type: ignore[list-item]
    for i, chunk in enumerate(done):
        results[i::workers] = chunk
    return results


def _dataset_root(cfg: DataConfig, cache: Path) -> Path:
    if cfg.root:
        return Path(cfg.root).expanduser()
    # seed 0 always: the synthetic dataset is fixed, the trial seed varies the split
    return ensure_synthetic(cache, n_images=cfg.synthetic_images, seed=0, size=128, task=cfg.task)


def _entry_name(digest: str, cfg: DataConfig) -> str:
    key = f"{FORMAT_VERSION}|{digest}|{cfg.input_size}|{cfg.channels}|{cfg.task}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{cfg.input_size}px-{cfg.channels}ch-{cfg.task}-{digest}"


def _decode_all(
    scanned: ScanResult, cfg: DataConfig
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decode every pair in parallel (PIL releases the GIL); broken pairs are skipped."""

    def decode(pair: Pair) -> tuple | DecodeError:
        try:
            return decode_pair(pair, cfg.input_size, cfg.channels, cfg.task)
        except DecodeError as error:
            return error

    results = _parallel_map(decode, scanned.pairs)
    good = [(p, r) for p, r in zip(scanned.pairs, results, strict=True) if isinstance(r, tuple)]
    broken = [r for r in results if isinstance(r, DecodeError)]
    if not good:
        raise ValueError(
            f"no readable image/label pair in {scanned.root}: "
            + "; ".join(str(error) for error in broken[:5])
        )
    class_names = sorted({pair.class_name for pair, _ in good})
    arrays = {
        "images": np.stack([r[0] for _, r in good]),  # (N, H, W, C)
        "masks": np.stack([r[1] for _, r in good]),  # (N, H, W)
        "classes": np.array([class_names.index(p.class_name) for p, _ in good], np.int64),
        "source_sizes": np.array([r[2] for _, r in good], np.int32),  # (N, 2)
        # paths relative to the root, so a moved dataset hitting this entry reports its own paths
        "file_names": np.array(
            [pair.image.relative_to(scanned.root).as_posix() for pair, _ in good]
        ),
        "case_names": np.array([pair.case for pair, _ in good]),
    }
    meta = {
        "format": FORMAT_VERSION,
        "input_size": cfg.input_size,
        "channels": cfg.channels,
        "task": cfg.task,
        "class_names": class_names,
        "skipped": [(e.path.relative_to(scanned.root).as_posix(), e.reason) for e in broken],
        # what the scan saw, so that a trial given the fingerprint reports it without scanning
        "layout": scanned.layout,
        "scan_skipped": [_relative(scanned.root, path, why) for path, why in scanned.skipped],
    }
    return arrays, meta


def _relative(root: Path, path: str, reason: str) -> tuple[str, str]:
    try:
        return Path(path).relative_to(root).as_posix(), reason
    except ValueError:  # outside the root: kept as it is
        return path, reason


def _write_entry(entry: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    def write(folder: Path) -> None:
        for name in ARRAY_NAMES:
            np.save(folder / f"{name}.npy", arrays[name])
        (folder / "meta.json").write_text(json.dumps(meta))

    try:
        publish(entry, write)  # a trial racing another for the same entry uses the winner's
    except OSError as error:
        raise unwritable_cache(entry.parent, error) from error


def _read_entry(entry: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in ARRAY_NAMES}
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cache entry {entry} is damaged ({error}): delete that folder to rebuild it"
        ) from error
    return arrays, meta
