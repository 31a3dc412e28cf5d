"""End-to-end sweeps on Ray with tiny synthetic data: results, statuses, stopper, resume."""

import os
import pickle
import signal
import subprocess
import sys
import typing
from pathlib import Path

import pandas as pd
import pytest
from held_trials import Hold, driver
from mlflow.tracking import MlflowClient

from tunelab.epoch_report import Status
from tunelab.stopper import ConvergenceStopper
from tunelab.tracking.layout import TAG_ROLE, TAG_STATUS, TAG_TRIAL_ID


@pytest.mark.e2e
def test_ablation_sweep_writes_every_trial_and_threshold(env, write_space, sweep, capsys):
    space = write_space(
        "ARMS = {'baseline': {}, 'dropout': {'model.dropout': 0.2}}\n"
        "SEEDS = [5]\nTHRESHOLDS = [0.5, 0.3]\n",
        epochs=3,
    )
    code = sweep(space, "--seeds", "0,1", "--max-epochs", "2")  # the command line wins
    assert code == 0
    results = pd.read_parquet(env / "runs" / "tiny" / "results.parquet")
    # 2 arms x 2 seeds x (2 thresholds + Otsu)
    assert len(results) == 12
    assert set(results["arm"]) == {"baseline", "dropout"}
    assert set(results["threshold"]) == {"0.5", "0.3", "otsu"}
    assert (results["status"] == "completed").all() and (results["epochs"] == 2).all()
    primary = results[results["primary"]]
    assert sorted(primary["seed"]) == [0, 0, 1, 1] and (primary["threshold"] == "0.5").all()
    assert primary["iou"].between(0, 1).all() and "iou/Adenocarcinoma" in results
    assert set(primary.loc[primary["arm"] == "dropout", "model.dropout"]) == {0.2}
    # arms are paired by seed: the same seed gives the same split, hence the same reference
    for _, pair in primary.groupby("seed"):
        assert pair["foreground_iou_all"].nunique() == 1
    out = capsys.readouterr().out
    assert "| baseline |" in out and "| dropout |" in out and "all foreground" in out
    assert "results.parquet" in out
    # the held-out test set: scored once per trial, by its best-validation epoch's model
    assert "Test set (held-out cases, data.test_seed = 0)" in out
    assert primary["test_iou"].between(0, 1).all() and primary["test_hd95"].ge(0).all()
    assert set(primary["checkpoint_epoch"]) <= {1, 2}
    images = pd.read_parquet(env / "runs" / "tiny" / "test_images.parquet")
    per_trial = images.groupby("trial_id")
    assert per_trial.ngroups == 4 and {"arm", "seed", "fold", "case", "class"} <= set(images)
    files = [tuple(group["image"]) for _, group in per_trial]
    assert len(set(files)) == 1  # every arm and seed is tested on the same images
    means = per_trial["iou"].mean()
    assert means.to_dict() == pytest.approx(primary.set_index("trial_id")["test_iou"].to_dict())


@pytest.mark.e2e
def test_search_with_asha_prunes_and_labels_arms(env, write_space, sweep):
    # ASHA's cutoffs depend on the order trials reach a rung, so the trials run one at a time
    # (2 CPUs each), in grid order, on validation loss (IoU ties on the all-foreground plateau).
    # The last lr barely trains: it is worse than the median before it and must be pruned.
    # (Those validation losses are the ones of the whole tiny dataset split in two: without a
    # test set, as the trajectories this test was built on. With one, lr 1e-6 starts best.)
    space = write_space(
        "from ray import tune\n"
        "BASE['data.test_fraction'] = 0\n"
        "SPACE = {'train.lr': tune.grid_search([1e-2, 3e-3, 1e-3, 1e-6])}\n"
        "SEEDS = [0]\nASHA = {'grace_period': 1, 'reduction_factor': 2}\n"
        "METRIC = 'val_loss'\nMODE = 'min'\n",
        epochs=4,
    )
    code = sweep(space, "--cpus-per-trial", "2")
    assert code == 0
    results = pd.read_parquet(env / "runs" / "tiny" / "results.parquet")
    primary = results[results["primary"]].set_index("arm")
    assert set(primary.index) == {"lr=0.01", "lr=0.003", "lr=0.001", "lr=1e-06"}
    assert set(primary["status"]) <= {"completed", "pruned"}
    assert primary.loc["lr=1e-06", "status"] == "pruned"
    assert (primary.loc[primary["status"] == "pruned", "epochs"] < 4).all()
    # in MLflow a pruned trial is a normal end: FINISHED, its status in a tag
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("tiny").experiment_id
    (run,) = client.search_runs(
        [experiment], f"tags.`{TAG_TRIAL_ID}` = '{primary.loc['lr=1e-06', 'trial_id']}'"
    )
    assert run.info.status == "FINISHED" and run.data.tags[TAG_STATUS] == "pruned"


@pytest.mark.parametrize("status", typing.get_args(Status))
def test_stopper_ends_a_trial_where_its_own_rule_fired(status):
    """The rule runs in the trial: Ray stops a trial at the epoch that reports "converged", and
    only there, whatever the numbers beside it (a streak far past any patience included). A
    completed or diverged trial ends by itself. Stateless: what it decided for other trials,
    or before a resume (a pickled copy), changes nothing."""
    report = {"epoch": 15, "streak": 60, "trend": 0.5, "status": status}
    stopper = ConvergenceStopper()
    for other in ("converged", "running"):
        stopper("other", {**report, "status": other})
    restored = pickle.loads(pickle.dumps(stopper))
    for decides in (stopper, restored, ConvergenceStopper()):
        assert decides("t", report) is (status == "converged")
        assert decides("t", {"epoch": 3}) is False  # a report without a status goes on
        assert decides.stop_all() is False  # one trial's convergence ends no other


@pytest.mark.e2e
def test_convergence_stopper_ends_trials_as_converged(env, write_space, sweep):
    # the rule's settings of one arm (not the base) decide, and the converged epoch is the one
    # that scores the test set; the other arm's rule is off and runs to max epochs
    space = write_space(
        "ARMS = {'fast': {'stop.window': 3, 'stop.patience': 0, 'stop.min_epochs': 0,"
        " 'stop.threshold': 100.0}, 'off': {'stop.enabled': False}}\nSEEDS = [0]\n",
        epochs=5,
    )
    assert sweep(space) == 0
    results = pd.read_parquet(env / "runs" / "tiny" / "results.parquet")
    primary = results[results["primary"]].set_index("arm")
    assert primary.loc["fast", "status"] == "converged" and primary.loc["fast", "epochs"] == 3
    assert primary.loc["off", "status"] == "completed" and primary.loc["off", "epochs"] == 5
    assert primary["test_iou"].notna().all()


def _finished_trials(sweep_dir: Path, records) -> dict[str, list[dict]]:
    done = {}
    for result in sweep_dir.glob("*/result.json"):
        lines = records(result)
        if lines and lines[-1].get("status") == "completed":
            done[result.parent.name] = lines
    return done


@pytest.mark.e2e
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(
    env, write_space, records, gates
):
    space = write_space(  # a checkpoint every epoch: at most the epoch in flight runs again
        "BASE['train.checkpoint_every_s'] = 0\n"
        "ARMS = {'a': {}, 'b': {'model.dropout': 0.1}, 'c': {}}\nSEEDS = [0, 1]\n",
        epochs=3,
    )
    options = [str(space), "--storage", str(env / "runs"), "--num-cpus", "2", "--quiet"]
    command = [sys.executable, "-m", "tunelab.sweep", *options]
    sweep_dir = env / "runs" / "tiny"
    # the first two trials to reach epoch 2 finish; the next two (the 2 CPUs' worth) wait there,
    # their epoch 1 saved: Ctrl+C comes with exactly 2 trials finished, 2 mid-way, 2 not started
    hold = Hold("ctrl+c", epoch=2, free=2)

    def two_finished_two_held() -> bool:
        return len(_finished_trials(sweep_dir, records)) == 2 and len(gates.held(hold.name)) == 2

    gated = gates.command(space, *options[1:], rules=(hold,))
    with driver(gated, env / "driver.log", gates) as first:
        first.wait_until(two_finished_two_held, "2 trials finished and 2 held")
        first.process.send_signal(signal.SIGINT)  # Ctrl+C: Tune saves its state and stops
        assert first.end(timeout_s=120) == 130, first.tail()
    finished = _finished_trials(sweep_dir, records)
    held = {line["trial_id"] for line in gates.held(hold.name)}
    assert len(finished) == 2 and not held & {lines[0]["trial_id"] for lines in finished.values()}
    assert not (sweep_dir / "results.parquet").exists()

    resumed = subprocess.run([*command, "--resume"], env=os.environ.copy(), timeout=600)
    assert resumed.returncode == 0
    results = pd.read_parquet(sweep_dir / "results.parquet")
    primary = results[results["primary"]]
    assert len(primary) == 6 and (primary["status"] == "completed").all()
    for trial, before in finished.items():  # finished trials were not run again: at most the
        # last epoch, if Tune had not yet recorded the trial's end when Ctrl+C came
        after = records(sweep_dir / trial / "result.json")
        assert after[: len(before)] == before and len(after) - len(before) <= 1
    for result in sweep_dir.glob("*/result.json"):  # at most the epoch in flight ran twice
        epochs = [line["epoch"] for line in records(result)]
        assert set(epochs) == {1, 2, 3} and len(epochs) - len(set(epochs)) <= 1
        if records(result)[0]["trial_id"] in held:  # went on from its epoch 1's checkpoint
            assert epochs == [1, 2, 3]
    # MLflow: one run per trial (resumed, not duplicated), all closed, each epoch logged once
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment])
    trials = [run for run in runs if run.data.tags[TAG_ROLE] == "trial"]
    assert sorted(run.data.tags[TAG_TRIAL_ID] for run in trials) == sorted(primary["trial_id"])
    assert {run.info.status for run in runs} == {"FINISHED"}
    for run in trials:
        steps = [point.step for point in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [1, 2, 3]
