"""The Ray Tune function trainable: `Trainer` in, `tune.report` per epoch and a checkpoint at
the cadence of `train.checkpoint_every_s` out."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from tunelab import checkpoint
from tunelab.data.cache import Fingerprints
from tunelab.space import Study
from tunelab.train import EpochResult, Trainer

# what Ray's live table prints per trial: the full result (every class x threshold) is too long
PROGRESS_METRICS = ["epoch", "train_loss", "val_loss", "val_iou", "val_dice", "trend", "status"]


def trial_cpus() -> float | None:
    """The CPUs Ray reserved for this trial (--cpus-per-trial or the space's RESOURCES), which
    bound its data loader's worker processes; None outside a Ray worker."""
    if not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_assigned_resources().get("CPU")


def write_checkpoint(folder: Path, trainer: Trainer, data_report: str, result: EpochResult) -> None:
    """The epoch's checkpoint folder (see `tunelab.checkpoint`)."""
    test_images = result.test.images if result.test is not None else None
    checkpoint.write(folder, trainer.state_dict(), trainer.preview(), data_report, test_images)


def train_trial(
    params: dict[str, Any], study: Study, fingerprints: Fingerprints | None = None
) -> None:
    """Run one trial; resumes from the trial's last checkpoint when Ray restores it.
    `fingerprints`: the datasets' identities, hashed once by the driver (see `data.cache`)."""
    # Ray logs every checkpoint at INFO; one line per epoch per trial drowns the live table
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = study.trial_config(params)
    # the trial reports "converged" and Ray's ConvergenceStopper ends it there, so Ray knows
    # why it stopped (the loop would otherwise just return, as a completed trial does)
    trainer = Trainer(cfg, stop_on_convergence=False, cpus=trial_cpus(), fingerprints=fingerprints)
    saved = tune.get_checkpoint()
    if saved is not None:
        with saved.as_directory() as folder:
            trainer.load_state_dict(checkpoint.load_state(Path(folder)))
    identity = {"arm": study.arm_label(params), "node_id": ray.get_runtime_context().get_node_id()}
    data_report = json.dumps(trainer.data.report.to_dict(), indent=1)
    every_s = cfg.train.checkpoint_every_s
    # Ray stops a pruned trial without telling a function trainable, but ASHA prunes only at its
    # rungs: saving there leaves a pruned trial its last model (preview, data report, weights)
    prune_epochs = study.prune_epochs(cfg.train.max_epochs)
    saved_at = time.monotonic()
    for result in trainer.epochs():
        report = {**result.to_flat(), **identity}
        # a diverged epoch has no metrics, but Tune requires the one it optimises
        report.setdefault(study.metric, math.nan)
        since = time.monotonic() - saved_at
        if not checkpoint.due(result.status, result.epoch, since, every_s, prune_epochs):
            tune.report(report)
            continue
        with tempfile.TemporaryDirectory() as folder:
            write_checkpoint(Path(folder), trainer, data_report, result)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))
        saved_at = time.monotonic()
