"""MLflow faults: a server that is down at the start, and one lost in the middle of a sweep."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from held_trials import Hold, driver
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def sweep_options(env, *options: str) -> list[str]:
    return ["--storage", str(env / "runs"), "--num-cpus", "2", "--quiet", *options]


def test_unreachable_server_stops_the_sweep_before_anything_starts(env, write_space, closed_port):
    space = write_space("ARMS = {'a': {}}\nSEEDS = [0]\n")
    uri = f"http://127.0.0.1:{closed_port}"
    command = [sys.executable, "-m", "tunelab.sweep", str(space)]
    out = subprocess.run(
        [*command, *sweep_options(env, "--mlflow-uri", uri)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert f"MLflow tracking server {uri} does not answer" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (env / "runs").exists()  # no Ray, no sweep folder, no trial


def test_server_lost_mid_sweep_loses_nothing_once_it_is_back(
    env, write_space, mlflow_service, gates
):
    store = ["--backend-store-uri", f"sqlite:///{env / 'server.db'}", "--workers", "1"]
    store += ["--artifacts-destination", str(env / "artifacts")]
    uri = mlflow_service("server", *store)
    port = int(uri.rpartition(":")[2])
    space = write_space("ARMS = {'a': {}}\nSEEDS = [0, 1]\n", epochs=6)  # 2 trials at once
    # the trials wait before epoch 3 until the server is down, and before their last epoch
    # until it is back: the outage falls mid-sweep, and the sweep cannot end before the server
    # answers again, however fast the trials or slow the server's restart
    down, back = Hold("server down", epoch=3), Hold("server back", epoch=6)
    command = gates.command(space, *sweep_options(env, "--mlflow-uri", uri), rules=(down, back))
    client = MlflowClient(uri)
    with driver(command, env / "driver.log", gates) as sweep:
        sweep.wait_until(
            lambda: len(gates.held(down.name)) == 2 and _epochs(client), "2 trials held, 1 logged"
        )
        mlflow_service.stop()  # the server dies while trials train
        gates.release(down.name)
        sweep.wait_until(lambda: "does not answer" in sweep.log.read_text(), "the outage seen")
        mlflow_service("server", *store, port=port)  # and comes back on the same address
        gates.release(back.name)
        assert sweep.end() == 0, sweep.tail()
    output = sweep.log.read_text()
    assert "does not answer" in output and "answers again" in output
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


def _epochs(client: MlflowClient) -> list[float]:
    return [run.data.metrics["epoch"] for run in _runs(client) if "epoch" in run.data.metrics]


def _runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("tiny")
    return client.search_runs([experiment.experiment_id]) if experiment else []
