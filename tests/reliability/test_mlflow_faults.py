"""MLflow faults: a server that is down at the start, and one lost in the middle of a sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def sweep_command(space, env, *options: str) -> list[str]:
    command = [sys.executable, "-m", "tunelab.sweep", str(space), "--storage", str(env / "runs")]
    return [*command, "--num-cpus", "2", "--quiet", *options]


def test_unreachable_server_stops_the_sweep_before_anything_starts(env, write_space, closed_port):
    space = write_space("ARMS = {'a': {}}\nSEEDS = [0]\n")
    uri = f"http://127.0.0.1:{closed_port}"
    out = subprocess.run(
        sweep_command(space, env, "--mlflow-uri", uri), capture_output=True, text=True
    )
    assert out.returncode == 2
    assert f"MLflow tracking server {uri} does not answer" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (env / "runs").exists()  # no Ray, no sweep folder, no trial


def test_server_lost_mid_sweep_loses_nothing_once_it_is_back(env, write_space, mlflow_service):
    store = ["--backend-store-uri", f"sqlite:///{env / 'server.db'}", "--workers", "1"]
    store += ["--artifacts-destination", str(env / "artifacts")]
    uri = mlflow_service("server", *store)
    port = int(uri.rpartition(":")[2])
    space = write_space("ARMS = {'a': {}}\nSEEDS = [0, 1]\n", epochs=6)  # 2 trials at once
    log = env / "driver.log"  # a file, not a pipe nobody reads while the sweep runs
    driver = subprocess.Popen(
        sweep_command(space, env, "--mlflow-uri", uri),
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    client = MlflowClient(uri)
    deadline = time.monotonic() + 300
    while not any(run.data.metrics.get("epoch", 0) >= 1 for run in _runs(client)):
        assert driver.poll() is None and time.monotonic() < deadline, "no epoch was logged"
        time.sleep(0.3)
    mlflow_service.stop()  # the server dies while trials train
    while "does not answer" not in log.read_text():  # the driver has noticed
        assert driver.poll() is None and time.monotonic() < deadline, "the outage went unseen"
        time.sleep(0.3)
    mlflow_service("server", *store, port=port)  # and comes back on the same address
    assert driver.wait(timeout=600) == 0, log.read_text()
    err = log.read_text()
    assert "does not answer" in err and "answers again" in err
    results = pd.read_parquet(env / "runs" / "tiny" / "results.parquet")
    assert set(results["status"]) == {"completed"}
    trials = [run for run in _runs(client) if run.data.tags["tunelab.role"] == "trial"]
    assert sorted(run.data.tags["tunelab.trial_id"] for run in trials) == sorted(
        set(results["trial_id"])
    )
    for run in trials:  # every epoch reached MLflow, once, and every run was closed
        steps = [p.step for p in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [1, 2, 3, 4, 5, 6]
        assert run.info.status == "FINISHED" and run.data.tags["tunelab.status"] == "completed"


def _runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("tiny")
    return client.search_runs([experiment.experiment_id]) if experiment else []
