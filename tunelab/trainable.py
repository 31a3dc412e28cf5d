"""The Ray Tune function trainable: `train.fit` in, `tune.report` out, a checkpoint per epoch."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from tunelab.space import Study
from tunelab.train import Trainer

CHECKPOINT_FILE = "trainer.pt"
# what Ray's live table prints per trial: the full result (every class x threshold) is too long
PROGRESS_METRICS = ["epoch", "train_loss", "val_loss", "val_iou", "val_dice", "trend", "status"]


def train_trial(params: dict[str, Any], study: Study) -> None:
    """Run one trial; resumes from the trial's last checkpoint when Ray restores it."""
    # Ray logs every checkpoint at INFO; one line per epoch per trial drowns the live table
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = study.trial_config(params)
    # Ray's ConvergenceStopper makes the stopping decision, so the sweep can switch it off
    trainer = Trainer(cfg, stop_on_convergence=False)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            # weights_only: a checkpoint is data, never code to unpickle
            state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True)
        trainer.load_state_dict(state)
    arm = study.arm_label(params)
    for result in trainer.epochs():
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), Path(folder) / CHECKPOINT_FILE)
            tune.report(
                {**result.to_flat(), "arm": arm},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )
