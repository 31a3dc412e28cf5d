"""When a trial saves a checkpoint (`train.checkpoint_every_s`), and what `--keep-checkpoints
tested` leaves of a finished trial's checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from tunelab import checkpoint
from tunelab.collect import keep_tested_checkpoints
from tunelab.config import TrialConfig
from tunelab.space import load_study


@pytest.mark.parametrize(
    ("status", "epoch", "since_saved", "every_s", "due"),
    [
        ("running", 5, 59.9, 60.0, False),  # inside the interval: no checkpoint
        ("running", 5, 60.0, 60.0, True),  # the interval has passed
        ("running", 5, 0.001, 0.0, True),  # 0: every epoch
        ("running", 6, 0.0, 60.0, True),  # an epoch where ASHA may prune it
        ("completed", 7, 0.0, 60.0, True),  # a trial's last epoch is always saved ...
        ("converged", 7, 0.0, 60.0, True),
        ("diverged", 7, 0.0, 60.0, True),  # ... however it ends
    ],
)
def test_a_checkpoint_is_due_per_interval_at_prune_epochs_and_at_the_last_epoch(
    status, epoch, since_saved, every_s, due
):
    assert checkpoint.due(status, epoch, since_saved, every_s, prune_epochs={3, 6, 12}) is due


@pytest.mark.parametrize(("grace", "factor", "max_epochs"), [(3, 2, 20), (1, 3, 40), (5, 2, 5)])
def test_prune_epochs_are_the_asha_scheduler_s_own_rungs(tmp_path, grace, factor, max_epochs):
    path = tmp_path / "space.py"
    path.write_text(
        "from ray import tune\nSPACE = {'train.lr': tune.grid_search([1e-3])}\n"
        f"ASHA = {{'grace_period': {grace}, 'reduction_factor': {factor}}}\n"
    )
    study = load_study(path)
    scheduler = ASHAScheduler(
        time_attr="epoch", max_t=max_epochs, grace_period=grace, reduction_factor=factor
    )
    rungs = {milestone for milestone, _ in scheduler._brackets[0]._rungs}
    assert study.prune_epochs(max_epochs) == rungs
    assert dataclasses.replace(study, scheduler="none").prune_epochs(max_epochs) == frozenset()


def test_checkpoint_interval_defaults_to_a_minute_and_cannot_be_negative():
    assert TrialConfig().train.checkpoint_every_s == 60.0
    with pytest.raises(ValueError, match="checkpoint_every_s"):
        TrialConfig.from_dict({"train.checkpoint_every_s": -1})


def saved(folder: Path, state: dict) -> tune.Checkpoint:
    folder.mkdir()
    checkpoint.write(folder, state, {"preview": torch.zeros(2).numpy()}, "{}", {"image": ["a"]})
    return tune.Checkpoint.from_directory(str(folder))


def test_keeping_only_tested_checkpoints_leaves_the_tested_weights_alone(tmp_path):
    last_weights, best_weights = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 4.0])}
    full = {
        "epoch": 5,
        "model": last_weights,
        "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}},
        "best": {"epoch": 3, "val_loss": 0.1, "weights": best_weights},
    }
    older = saved(tmp_path / "checkpoint_000003", {**full, "epoch": 4})
    last = saved(tmp_path / "checkpoint_000004", full)
    without_best = saved(tmp_path / "checkpoint_000009", {**full, "best": None})
    failed = saved(tmp_path / "checkpoint_000001", full)
    grid = [
        SimpleNamespace(checkpoint=last, best_checkpoints=[(older, {}), (last, {})], error=None),
        SimpleNamespace(checkpoint=without_best, best_checkpoints=[], error=None),
        SimpleNamespace(checkpoint=None, best_checkpoints=None, error=RuntimeError("early")),
        # a failed trial keeps its whole state: --resume may retry it from there
        SimpleNamespace(checkpoint=failed, best_checkpoints=[], error=RuntimeError("oom")),
    ]
    keep_tested_checkpoints(grid)
    assert set(checkpoint.load_state(Path(failed.path))) == set(full)
    assert not Path(older.path).exists()  # the earlier checkpoint is gone
    state = checkpoint.load_state(Path(last.path))
    assert list(state) == ["model"] and torch.equal(state["model"]["w"], best_weights["w"])
    # the trial's preview and per-image test scores stay for analysis and predict
    assert {p.name for p in Path(last.path).iterdir()} == {
        checkpoint.STATE_FILE,
        checkpoint.PREVIEW_FILE,
        checkpoint.DATA_REPORT_FILE,
        checkpoint.TEST_SCORES_FILE,
    }
    # last weights where no best ones were kept (eval.checkpoint = last)
    state = checkpoint.load_state(Path(without_best.path))
    assert torch.equal(state["model"]["w"], last_weights["w"])
