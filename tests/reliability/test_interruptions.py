"""A driver killed outright (SIGKILL: no handler runs) and resumed: every trial ends once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def reported_epochs(sweep_dir: Path) -> int:
    return sum(len(result.read_text().splitlines()) for result in sweep_dir.glob("*/result.json"))


def test_sigkilled_driver_resumes_with_one_run_per_trial(env, write_space):
    space = write_space("ARMS = {'a': {}, 'b': {'model.dropout': 0.1}}\nSEEDS = [0, 1]\n", epochs=4)
    command = [sys.executable, "-m", "tunelab.sweep", str(space), "--storage", str(env / "runs")]
    command += ["--num-cpus", "2", "--quiet"]
    sweep_dir = env / "runs" / "tiny"
    # its own session, so the kill takes the driver's local Ray with it, as a lost node would
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while reported_epochs(sweep_dir) < 5:
        assert driver.poll() is None and time.monotonic() < deadline, "no progress to kill"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    assert not (sweep_dir / "results.parquet").exists()

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    results = pd.read_parquet(sweep_dir / "results.parquet")
    primary = results[results["primary"]]
    assert len(primary) == 4 and set(primary["status"]) == {"completed"}
    assert primary["trial_id"].is_unique
    for result in sweep_dir.glob("*/result.json"):  # at most the epoch in flight ran twice
        epochs = [json.loads(line)["epoch"] for line in result.read_text().splitlines()]
        assert set(epochs) == {1, 2, 3, 4} and len(epochs) - len(set(epochs)) <= 1
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment])
    trials = [run for run in runs if run.data.tags["tunelab.role"] == "trial"]
    finished = [run for run in trials if run.info.status == "FINISHED"]
    assert sorted(run.data.tags["tunelab.trial_id"] for run in finished) == sorted(
        primary["trial_id"]
    )  # one finished run per trial
    for run in trials:  # nothing left open: a trial Tune had to start anew closed its first run
        if run not in finished:
            assert run.info.status == "KILLED" and run.data.tags["tunelab.status"] == "replaced"
    for run in finished:
        steps = [p.step for p in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [1, 2, 3, 4]
