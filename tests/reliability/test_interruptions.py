"""A driver killed outright (SIGKILL: no handler runs) and resumed: every trial ends once, under
the same id. A damaged saved state is refused, never restarted silently; a new start moves the
earlier sweep aside."""

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
from held_trials import Hold
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def reported_epochs(sweep_dir: Path, records) -> int:
    return sum(len(records(result)) for result in sweep_dir.glob("*/result.json"))


def intact_state(sweep_dir: Path) -> list[str] | None:
    """The trial ids in the newest saved Ray state, or None while any of its files is missing
    or half written (Ray rewrites them in place)."""
    states = sorted(sweep_dir.glob("experiment_state-*.json"))
    searches = sorted(sweep_dir.glob("basic-variant-state-*.json"))
    if not states or not searches or not searches[-1].read_bytes().endswith(b"."):
        return None  # a whole pickle ends in its STOP opcode, "."
    try:
        trials = json.loads(states[-1].read_text())["trial_data"]
    except (ValueError, KeyError):
        return None
    return sorted(json.loads(trial)["trial_id"] for trial, _ in trials) or None


def trial_folder(sweep_dir: Path, trial_id: str) -> Path:
    (folder,) = sweep_dir.glob(f"*_{trial_id}")
    return folder


def checkpoint_indices(folder: Path) -> list[int]:
    names = [path.name for path in folder.glob("checkpoint_*")]
    return sorted(int(name.removeprefix("checkpoint_")) for name in names)


# every epoch: at most the epoch in flight runs again; an interval longer than the trial: only
# its last epoch is saved, and a killed trial starts over, losing at most that one interval
@pytest.mark.parametrize("every_s", [0, 1e9], ids=["checkpoint-every-epoch", "checkpoint-at-end"])
def test_sigkilled_driver_resumes_the_same_trials(env, write_space, records, every_s, gates):
    space = write_space(
        f"BASE['train.checkpoint_every_s'] = {every_s}\n"
        "ARMS = {'a': {}, 'b': {'model.dropout': 0.1}}\nSEEDS = [0, 1]\n",
        epochs=4,
    )
    options = [str(space), "--storage", str(env / "runs"), "--num-cpus", "2", "--quiet"]
    command = [sys.executable, "-m", "tunelab.sweep", *options]
    sweep_dir = env / "runs" / "tiny"
    # no trial reports its last epoch before the kill: the driver is still there to be killed,
    # however fast the trials (the resumed sweep runs them to their end)
    gated = gates.command(space, *options[1:], rules=(Hold("no end", epoch=4),))
    # its own session, so the kill takes the driver's local Ray with it, as a lost node would
    driver = subprocess.Popen(gated, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while True:  # freeze everything, and kill only once the saved state is whole
        assert driver.poll() is None and time.monotonic() < deadline, "no progress to kill"
        if reported_epochs(sweep_dir, records) >= 5:
            os.killpg(driver.pid, signal.SIGSTOP)
            killed_with = intact_state(sweep_dir)
            if killed_with is not None and len(killed_with) == 4:
                break
            os.killpg(driver.pid, signal.SIGCONT)  # caught mid-copy: let it finish
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    assert not (sweep_dir / "results.parquet").exists()
    before = {
        trial: records(trial_folder(sweep_dir, trial) / "result.json") for trial in killed_with
    }

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "Failed to restore" not in resumed.stdout + resumed.stderr
    results = pd.read_parquet(sweep_dir / "results.parquet")
    primary = results[results["primary"]]
    assert len(primary) == 4 and set(primary["status"]) == {"completed"}
    assert sorted(primary["trial_id"]) == killed_with  # resumed, not started again
    live = {path.parent.name for path in sweep_dir.glob("*/result.json")}
    assert live == {trial_folder(sweep_dir, trial).name for trial in killed_with}
    for trial in killed_with:
        lines = records(trial_folder(sweep_dir, trial) / "result.json")
        assert {line["epoch"] for line in lines} == {1, 2, 3, 4}
        first = before[trial]
        # what the resumed sweep ran: its Ray instance is another node
        killed_node = first[0]["node_id"] if first else None  # None: it had not started
        again = [line for line in lines if line["node_id"] != killed_node]
        if every_s == 0:  # it went on from its last checkpoint: at most the epoch in flight
            # (the last reported, if its checkpoint was not yet registered) ran twice
            went_on_from = again[0]["epoch"] if again else 5
            assert [line["epoch"] for line in again] == list(range(went_on_from, 5))
            assert went_on_from >= len(first)
        elif len(first) < 4 or again:  # killed before its one checkpoint was saved (or
            # registered): it ran again from epoch 1 (one interval, the whole trial), to the
            # same numbers
            assert [line["epoch"] for line in again] == [1, 2, 3, 4]
            assert [r["val_loss"] for r in again[: len(first)]] == [r["val_loss"] for r in first]
        if every_s != 0:  # one checkpoint per trial, at its last epoch
            assert checkpoint_indices(trial_folder(sweep_dir, trial)) == [0]
        # the tested model is the lowest validation loss of the whole history, before the kill
        # included: the best epoch and its weights travelled in the checkpoint
        val_loss: dict[int, float] = {}
        for line in lines:
            val_loss.setdefault(line["epoch"], line["val_loss"])
        tested = primary.loc[primary["trial_id"] == trial, "checkpoint_epoch"].item()
        assert tested == min(val_loss, key=val_loss.__getitem__)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("tiny").experiment_id
    trials = [
        run for run in client.search_runs([experiment]) if run.data.tags["tunelab.role"] == "trial"
    ]
    assert sorted(run.data.tags["tunelab.trial_id"] for run in trials) == killed_with
    for run in trials:  # one run per trial, reopened and finished, each epoch logged once
        assert run.info.status == "FINISHED"
        steps = [p.step for p in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [1, 2, 3, 4]


def folder_listing(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*")}


def test_a_damaged_state_is_refused_and_a_new_start_moves_the_old_sweep_aside(
    env, write_space, sweep, capsys
):
    space = write_space("ARMS = {'a': {}}\nSEEDS = [0]\n")
    assert sweep(space) == 0
    sweep_dir = env / "runs" / "tiny"
    first = pd.read_parquet(sweep_dir / "results.parquet")
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("tiny").experiment_id
    runs_before = len(client.search_runs([experiment]))
    (state,) = sweep_dir.glob("experiment_state-*.json")
    capsys.readouterr()

    state.write_text("")  # what a SIGKILL during Ray's copy of the file leaves
    listing = folder_listing(sweep_dir)
    assert sweep(space, "--resume") == 2
    err = capsys.readouterr().err
    assert f"{state} is empty" in err and "without --resume" in err
    assert folder_listing(sweep_dir) == listing  # nothing run, moved or written
    assert len(client.search_runs([experiment])) == runs_before

    # a state that parses but that Ray cannot restore: Ray's own fallback is refused too
    state.write_text(json.dumps({"trial_data": [[json.dumps({"trial_id": "x"}), "{}"]]}))
    listing = folder_listing(sweep_dir)
    assert sweep(space, "--resume") == 2
    assert "Ray could not restore the sweep's saved state" in capsys.readouterr().err
    assert {path for path in folder_listing(sweep_dir) if "/" not in path} == {
        path for path in listing if "/" not in path
    }  # no trial folder was added

    assert sweep(space) == 0  # starting again, on purpose
    (moved,) = (sweep_dir / "superseded").iterdir()
    assert folder_listing(moved) == listing
    second = pd.read_parquet(sweep_dir / "results.parquet")
    assert set(second["status"]) == {"completed"}
    assert not set(second["trial_id"]) & set(first["trial_id"])
    live = {path.parent.name for path in sweep_dir.glob("*/result.json")}
    assert live == {trial_folder(sweep_dir, trial).name for trial in set(second["trial_id"])}
