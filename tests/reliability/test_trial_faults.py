"""Trials that raise, diverge, or whose checkpoint is not plain data: recorded, never averaged."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from tunelab.checkpoint import STATE_FILE, load_state
from tunelab.summary import main_table

FAULTS = Path(__file__).parent / "faults"
NAN_LR, OSERROR_LR = 0.00123, 0.00456  # see faults/sitecustomize.py


@pytest.fixture
def faulty(env, monkeypatch):
    """Trials started from here on (Ray workers) load faults/sitecustomize.py."""
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))
    return env


def trial_runs(env: Path) -> dict[str, object]:
    client = MlflowClient(f"sqlite:///{env / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment], "tags.`tunelab.role` = 'trial'")
    return {run.data.tags["tunelab.arm"] + str(run.data.tags["tunelab.seed"]): run for run in runs}


@pytest.mark.e2e
def test_a_trial_that_raises_or_diverges_is_recorded_and_never_averaged(faulty, write_space, sweep):
    # one sweep, three fates: an arm that trains, one whose trial raises on every attempt, and
    # one whose loss becomes NaN at epoch 2
    arms = {"ok": {}, "disk": {"train.lr": OSERROR_LR}, "nan": {"train.lr": NAN_LR}}
    space = write_space(f"ARMS = {arms!r}\nSEEDS = [0]\n", epochs=4)
    assert sweep(space, "--max-failures", "2") == 0
    results = pd.read_parquet(faulty / "runs" / "tiny" / "results.parquet")
    primary = results[results["primary"]]
    status = dict(zip(primary["arm"], primary["status"], strict=True))
    assert status == {"ok": "completed", "disk": "failed", "nan": "diverged"}
    table = main_table(results).set_index("arm")
    runs = trial_runs(faulty)

    # raised: retried twice (three attempts in all), then failed with the trial's own error
    disk = primary[primary["arm"] == "disk"].iloc[0]
    assert disk["error"] == "OSError: simulated I/O error: the dataset disk is gone"
    assert "1 failed" in table.loc["disk", "statuses"]
    run = runs["disk0"]
    assert run.info.status == "FAILED" and run.data.tags["tunelab.status"] == "failed"
    assert run.data.tags["tunelab.retries"] == "2"
    assert "the dataset disk is gone" in run.data.tags["tunelab.reason"]

    # diverged: stopped at the epoch the loss became NaN, no scores, not in the means
    nan = results[results["arm"] == "nan"]
    assert set(nan["status"]) == {"diverged"} and set(nan["epochs"]) == {2}
    assert nan["iou"].isna().all() and nan["test_iou"].isna().all()
    assert table.loc["nan", "n"] == 0 and table.loc["nan", "statuses"] == "1 diverged"
    assert math.isnan(table.loc["nan", "iou_mean"]) and table.loc["ok", "n"] == 1
    run = runs["nan0"]
    assert run.info.status == "FAILED" and run.data.tags["tunelab.status"] == "diverged"
    assert run.data.tags["tunelab.reason"] == "loss became nan at epoch 2"


class Payload:
    """What a tampered checkpoint could smuggle in: code that runs on unpickling."""

    def __reduce__(self):
        return (print, ("this ran while loading a checkpoint",))


def test_a_checkpoint_holding_code_is_refused(tmp_path, capsys):
    torch.save({"model": {}, "extra": Payload()}, tmp_path / STATE_FILE)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_state(tmp_path)
    assert "this ran" not in capsys.readouterr().out
