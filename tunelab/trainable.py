"""The Ray Tune function trainable: `train.fit` in, `tune.report` out, a checkpoint per epoch."""

from __future__ import annotations

import json
import logging
import math
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
from ray import tune

from tunelab.space import Study
from tunelab.train import TestScores, Trainer

# what each checkpoint folder holds: the state to resume from, and what the driver's MLflow
# tracker draws and logs when the trial ends (however it ends)
CHECKPOINT_FILE = "trainer.pt"
PREVIEW_FILE = "preview.npz"
DATA_REPORT_FILE = "data_report.json"
TEST_SCORES_FILE = "test_images.csv"  # the last checkpoint of a trial that scored the test set
# what Ray's live table prints per trial: the full result (every class x threshold) is too long
PROGRESS_METRICS = ["epoch", "train_loss", "val_loss", "val_iou", "val_dice", "trend", "status"]


def load_state(folder: Path) -> dict[str, Any]:
    """The trainer state saved in a checkpoint folder.

    weights_only: a checkpoint is data (tensors, numbers, strings), never code to unpickle, so
    a file that holds anything else is refused, not executed.
    """
    path = folder / CHECKPOINT_FILE
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).splitlines()[0]
        raise ValueError(
            f"{path} holds more than weights and plain values; refusing to unpickle it "
            f"({first_line})"
        ) from None


def write_checkpoint(
    folder: Path, trainer: Trainer, data_report: str, test: TestScores | None = None
) -> None:
    """What a checkpoint folder holds: the state to resume from, one prediction preview per
    tumour class, the data report and, at the end of a trial that scored the test set, its
    per-image test scores (the driver draws and logs those when the trial ends)."""
    torch.save(trainer.state_dict(), folder / CHECKPOINT_FILE)
    np.savez_compressed(folder / PREVIEW_FILE, **trainer.preview())
    (folder / DATA_REPORT_FILE).write_text(data_report)
    if test is not None:
        pd.DataFrame(test.images).to_csv(folder / TEST_SCORES_FILE, index=False)


def train_trial(params: dict[str, Any], study: Study) -> None:
    """Run one trial; resumes from the trial's last checkpoint when Ray restores it."""
    # Ray logs every checkpoint at INFO; one line per epoch per trial drowns the live table
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = study.trial_config(params)
    # the trial reports "converged" and Ray's ConvergenceStopper ends it there, so Ray knows
    # why it stopped (the loop would otherwise just return, as a completed trial does)
    trainer = Trainer(cfg, stop_on_convergence=False)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(load_state(Path(folder)))
    identity = {"arm": study.arm_label(params), "node_id": ray.get_runtime_context().get_node_id()}
    data_report = json.dumps(trainer.data.report.to_dict(), indent=1)
    for result in trainer.epochs():
        with tempfile.TemporaryDirectory() as folder:
            write_checkpoint(Path(folder), trainer, data_report, result.test)
            report = {**result.to_flat(), **identity}
            # a diverged epoch has no metrics, but Tune requires the one it optimises
            report.setdefault(study.metric, math.nan)
            tune.report(
                report,
                checkpoint=tune.Checkpoint.from_directory(folder),
            )
