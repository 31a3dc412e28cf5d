"""Data for one trial: scan a dataset folder, decode it once into the cache, filter, split,
augment and batch it. `prepare(cfg)` is the entry point; `load(cfg.data)` gives the cached arrays.
"""

from tunelab.data.batches import TrainBatches
from tunelab.data.cache import LoadedDataset, load
from tunelab.data.dataset import DataReport, PreparedData, prepare
from tunelab.data.scan import ScanResult, scan
from tunelab.data.split import split_indices

__all__ = [
    "DataReport",
    "LoadedDataset",
    "PreparedData",
    "ScanResult",
    "TrainBatches",
    "load",
    "prepare",
    "scan",
    "split_indices",
]
