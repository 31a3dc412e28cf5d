"""The files of a trial's checkpoint folder: their names, how they are written and read back.

The worker (the Ray trainable) writes a folder per epoch; the driver (the sweep's tracker and
the results collector) reads the last one when the trial ends, however it ends. Both import
this module, and neither imports the other. No Ray: a folder is plain files.
"""

from __future__ import annotations

import pickle
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

STATE_FILE = "trainer.pt"  # the trainer's state_dict, to resume from
PREVIEW_FILE = "preview.npz"  # one prediction preview per tumour class, drawn by the driver
DATA_REPORT_FILE = "data_report.json"  # what the trial trained and was scored on
TEST_SCORES_FILE = "test_images.csv"  # the last checkpoint of a trial that scored the test set
# per-image test score columns that are names, not numbers
TEST_NAME_COLUMNS = ("image", "case", "class")


def due(
    status: str,
    epoch: int,
    seconds_since_saved: float,
    every_s: float,
    prune_epochs: Collection[int] = (),
) -> bool:
    """Whether this epoch's report carries a checkpoint: at a trial's last epoch (any status but
    "running": the stopper, the last epoch or divergence ends it), at an epoch where the scheduler
    may prune it (so a pruned trial keeps its last model), else once `every_s` seconds have
    passed since the last one (0: every epoch)."""
    return status != "running" or epoch in prune_epochs or seconds_since_saved >= every_s


def write(
    folder: Path,
    state: Mapping[str, Any],
    preview: Mapping[str, np.ndarray],
    data_report: str,
    test_images: Mapping[str, list[Any]] | None = None,
) -> None:
    """Fill a checkpoint folder: the state to resume from, the preview, the data report and,
    at the end of a trial that scored the test set, one row per test image."""
    torch.save(dict(state), folder / STATE_FILE)
    np.savez_compressed(folder / PREVIEW_FILE, **preview)
    (folder / DATA_REPORT_FILE).write_text(data_report)
    if test_images is not None:
        pd.DataFrame(test_images).to_csv(folder / TEST_SCORES_FILE, index=False)


def load_state(folder: Path) -> dict[str, Any]:
    """The trainer state saved in a checkpoint folder.

    weights_only: a checkpoint is data (tensors, numbers, strings), never code to unpickle, so
    a file that holds anything else is refused, not executed.
    """
    path = folder / STATE_FILE
    try:
        # on the CPU: a GPU trial's checkpoint also opens on a driver without a GPU
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        first_line = str(error).splitlines()[0]
        raise ValueError(
            f"{path} holds more than weights and plain values; refusing to unpickle it "
            f"({first_line})"
        ) from None


def tested_weights(state: Mapping[str, Any]) -> dict[str, Any]:
    """The weights the test set scored: the best-validation epoch's where they were kept
    (eval.checkpoint = best), else the last epoch's."""
    best = state.get("best") or {}
    return best.get("weights") or state["model"]


def tested_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """What a finished trial's checkpoint needs to keep for prediction: the tested weights
    alone (a quarter of the full state with Adam and the best weights), no optimizer."""
    return {"model": tested_weights(state)}


def read_test_scores(folder: Path) -> pd.DataFrame | None:
    """The per-image test scores of a checkpoint folder, or None where it has none (no test
    set, or a trial that ended without a trained model)."""
    path = folder / TEST_SCORES_FILE
    if not path.is_file():
        return None
    # names stay text: a case "0012" or a class "NA" must not become a number or NaN
    text = dict.fromkeys(TEST_NAME_COLUMNS, str)
    return pd.read_csv(path, dtype=text, keep_default_na=False)
