"""MLflow tracking: sweeps logged to the default SQLite store and to a real `mlflow server`,
read back through the MLflow client."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
import torch
from held_trials import Barrier
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from ray.tune import Checkpoint

from tunelab import checkpoint
from tunelab.epoch_report import logged_values
from tunelab.metric_names import COUNT_METRICS
from tunelab.space import load_study
from tunelab.tracking.artifacts import class_table
from tunelab.tracking.callback import SweepTracker
from tunelab.tracking.layout import (
    TAG_ARM,
    TAG_REASON,
    TAG_ROLE,
    TAG_SEED,
    TAG_STATUS,
    TAG_TRIAL_ID,
)
from tunelab.tracking.store import TrackingError, check_reachable
from tunelab.train import Trainer

TRIAL_ARTIFACTS = {"learning_curve.png", "prediction_grid.png", "per_class.csv", "data_report.json"}


@pytest.fixture
def mlflow_server(env, mlflow_service) -> str:
    """A real tracking server, as a team would run one, with its own store and artifacts."""
    store = f"sqlite:///{env / 'server.db'}"
    return mlflow_service(
        "server",
        "--backend-store-uri",
        store,
        "--workers",
        "1",
        "--artifacts-destination",
        str(env / "artifacts"),
    )


def sweep_runs(uri: str, experiment: str) -> tuple[Run, dict[str, Run]]:
    """(the sweep's parent run, {trial id: trial run}) of the only sweep in `experiment`."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {uri}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [run for run in runs if run.data.tags.get(TAG_ROLE) == "sweep"]
    trials = [run for run in runs if run.data.tags.get(TAG_ROLE) == "trial"]
    assert len(parents) == 1
    by_trial = {run.data.tags[TAG_TRIAL_ID]: run for run in trials}
    assert len(by_trial) == len(trials), "a trial has more than one run"
    return parents[0], by_trial


def checked_out_commit() -> str:
    """HEAD's commit, read from the repository's files rather than through `git`."""
    git = Path(__file__).resolve().parents[1] / ".git"
    if not git.is_dir():
        pytest.skip("not a git checkout: no commit to tag")
    head = (git / "HEAD").read_text().strip()
    if not head.startswith("ref: "):
        return head  # a detached HEAD holds the commit itself
    ref = head.removeprefix("ref: ")
    if (git / ref).is_file():
        return (git / ref).read_text().strip()
    packed = (git / "packed-refs").read_text().splitlines()
    return next(line.split()[0] for line in packed if line.endswith(f" {ref}"))


def artifacts(client: MlflowClient, run: Run) -> set[str]:
    return {item.path for item in client.list_artifacts(run.info.run_id)}


def epochs_logged(client: MlflowClient, run: Run, key: str = "val_iou") -> list[int]:
    return [point.step for point in client.get_metric_history(run.info.run_id, key)]


@pytest.mark.e2e
def test_default_store_is_a_sqlite_file_that_mlflow_ui_opens(env, write_space, monkeypatch):
    monkeypatch.chdir(env)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = write_space("ARMS = {'baseline': {}, 'dropout': {'model.dropout': 0.2}}\nSEEDS = [0]\n")
    command = [sys.executable, "-m", "tunelab.sweep", str(space), "--num-cpus", "2", "--quiet"]
    out = subprocess.run(
        [*command, "--experiment", "paper-a"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    uri = f"sqlite:///{env / 'mlflow.db'}"
    assert f"mlflow ui --backend-store-uri {uri}" in out.stdout
    assert "database is locked" not in out.stdout + out.stderr
    assert MlflowClient(uri).get_experiment_by_name("tiny") is None  # not the space's NAME
    parent, trials = sweep_runs(uri, "paper-a")
    client = MlflowClient(uri)
    assert parent.info.status == "FINISHED"
    assert {"results.parquet", "epochs.parquet", "results.md", "tiny.py"} <= artifacts(
        client, parent
    )
    assert len(trials) == 2
    for run in trials.values():
        assert run.info.status == "FINISHED" and run.data.tags[TAG_STATUS] == "completed"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert artifacts(client, run) >= TRIAL_ARTIFACTS
        assert epochs_logged(client, run) == [1, 2]
    # the artifacts live beside the store, where `mlflow ui` run in this folder finds them
    assert (env / "mlruns").is_dir()


@pytest.mark.e2e
def test_sweep_against_a_tracking_server_logs_every_trial(env, write_space, sweep, mlflow_server):
    space = write_space(
        "ARMS = {'baseline': {}, 'dropout': {'model.dropout': 0.2},"
        " 'broken': {'data.root': '/nonexistent/tunelab-data'}}\n"
        "SEEDS = [0, 1]\nTHRESHOLDS = [0.5, 0.3]\n",
    )
    code = sweep(space, "--mlflow-uri", mlflow_server, "--max-failures", "0")
    assert code == 0
    results = pd.read_parquet(env / "runs" / "tiny" / "results.parquet")
    # a failing arm is recorded while the others finish
    primary = results[results["primary"]]
    assert dict(primary.groupby("arm")["status"].agg(set)) == {
        "baseline": {"completed"},
        "dropout": {"completed"},
        "broken": {"failed"},
    }
    for _, broken in primary[primary["arm"] == "broken"].iterrows():
        assert "/nonexistent/tunelab-data" in broken["error"] and math.isnan(broken["iou"])
    parent, trials = sweep_runs(mlflow_server, "tiny")
    client = MlflowClient(mlflow_server)
    assert set(trials) == set(results["trial_id"])
    assert parent.data.params["seeds"] == "0,1" and parent.data.params["kind"] == "ablation"
    commit = checked_out_commit()
    for trial_id, run in trials.items():
        row = results[(results["trial_id"] == trial_id) & results["primary"]].iloc[0]
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags[TAG_ARM] == row["arm"] and tags[TAG_SEED] == str(row["seed"])
        assert tags[TAG_STATUS] == row["status"]
        assert tags["mlflow.source.git.commit"] == commit
        assert params["model.dropout"] == str(row["model.dropout"])
        assert params["eval.thresholds"] == "0.5,0.3" and params["seed"] == str(row["seed"])
        if row["arm"] == "broken":
            assert run.info.status == "FAILED"
            assert "/nonexistent/tunelab-data" in tags[TAG_REASON]
            assert "error.txt" in artifacts(client, run)
            continue
        assert run.info.status == "FINISHED"
        assert metrics["val_iou"] == pytest.approx(row["iou"])
        assert metrics["val_iou_t0.3"] == pytest.approx(
            results.loc[
                (results["trial_id"] == trial_id) & (results["threshold"] == "0.3"), "iou"
            ].iloc[0]
        )
        for key in ("train_loss", "val_loss", "lr", "epoch_seconds", "val_dice", "val_iou_otsu"):
            assert epochs_logged(client, run, key) == [1, 2], key
        assert any(key.startswith("val_iou/") for key in metrics)  # per tumour class
        # the test set's scores, once, at the last epoch, with the epoch of the tested model
        for key in ("test_iou", "test_iou_t0.3", "test_hd95", "test_nsd", "checkpoint_epoch"):
            assert epochs_logged(client, run, key) == [2], key
        assert metrics["test_iou"] == pytest.approx(row["test_iou"])
        assert metrics["checkpoint_epoch"] == row["checkpoint_epoch"]
        assert artifacts(client, run) >= {*TRIAL_ARTIFACTS, "test_images.csv"}
        per_image = client.download_artifacts(run.info.run_id, "test_images.csv", str(env))
        assert pd.read_csv(per_image)["iou"].mean() == pytest.approx(row["test_iou"])
        table = pd.read_csv(client.download_artifacts(run.info.run_id, "per_class.csv", str(env)))
        assert list(table.columns) == ["class", "threshold", *COUNT_METRICS]
        assert set(table["threshold"].astype(str)) == {"0.5", "0.3", "otsu"}


@pytest.mark.e2e
def test_four_concurrent_trials_lose_nothing(env, write_space, sweep, gates, capfd):
    # ASHA's first rung after epoch 2: every trial goes on past epoch 1, where the barrier waits
    space = write_space(
        "from ray import tune\n"
        "BASE['data.augment'] = 'flip_rotate_scale'\n"  # so the loader would use workers
        "SPACE = {'train.lr': tune.grid_search([1e-3, 3e-3, 1e-2, 3e-2])}\n"
        "SEEDS = [0]\nASHA = {'grace_period': 2, 'reduction_factor': 2}\n",
        epochs=4,
    )
    # 4 trials of half a CPU each fit a 2-CPU Ray instance at once; each waits after its first
    # epoch until all 4 have reported theirs, so they overlap whatever the machine's speed (and
    # the sweep fails, rather than passes, if they could not run at once)
    with gates.installed(Barrier("all four", epoch=1, count=4)):
        code = sweep(space, "--cpus-per-trial", "0.5")
    assert code == 0
    uri = f"sqlite:///{env / 'mlflow.db'}"
    _, trials = sweep_runs(uri, "tiny")
    client = MlflowClient(uri)
    assert len(trials) == 4
    # the overlap, from the times MLflow recorded (in ms, in the order the driver logged): every
    # trial's first epoch came before any trial's second, so at that moment all four had started
    # and none had ended. Trials run one after another would log a second epoch before the last
    # trial's first.
    logged_at = {
        trial: {p.step: p.timestamp for p in client.get_metric_history(run.info.run_id, "val_iou")}
        for trial, run in trials.items()
    }
    assert max(at[1] for at in logged_at.values()) <= min(at[2] for at in logged_at.values())
    results = pd.read_parquet(env / "runs" / "tiny" / "results.parquet")
    epochs = pd.read_parquet(env / "runs" / "tiny" / "epochs.parquet")
    for trial_id, run in trials.items():
        row = results[(results["trial_id"] == trial_id) & results["primary"]].iloc[0]
        assert row["epochs"] >= 2  # alive past the moment above
        # all its epochs and nothing else: each once, in order, none from another trial
        assert epochs_logged(client, run) == list(range(1, row["epochs"] + 1))
        history = client.get_metric_history(run.info.run_id, "val_loss")
        mine = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
        assert [p.value for p in history] == pytest.approx(list(mine["val_loss"]))
        assert run.data.tags[TAG_STATUS] == row["status"]
        assert run.info.status == "FINISHED"  # pruned is a normal end, not a failure
        # --cpus-per-trial reaches the data loader: half a CPU leaves none for augmentation
        # workers (the machine's 2 CPUs would give one)
        report = json.loads(
            Path(
                client.download_artifacts(run.info.run_id, "data_report.json", str(env))
            ).read_text()
        )
        assert report["loader_workers"] == 0
        # the driver hashed the dataset once; the trial only opened the cached arrays
        assert report["hashed_here"] is False
    captured = capfd.readouterr()
    assert "database is locked" not in captured.out + captured.err


def test_unreachable_server_fails_naming_the_uri(closed_port):
    uri = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(TrackingError, match=uri):
        check_reachable(uri, timeout_s=2)


def test_logged_values_keep_the_trial_values_only():
    result = {
        "epoch": 3,
        "train_loss": 0.5,
        "val_iou/Normal": 0.8,
        "status": "running",
        "arm": "a",
        "trend": -0.01,
        "time_total_s": 12.0,  # Ray's bookkeeping
        "done": False,
        "node_id": "abc",
    }
    assert logged_values(result) == {
        "epoch": 3.0,
        "train_loss": 0.5,
        "val_iou/Normal": 0.8,
        "trend": -0.01,
    }


def test_class_table_has_a_row_per_class_and_threshold(tmp_path):
    space = tmp_path / "s.py"
    space.write_text("ARMS = {'a': {}}\nTHRESHOLDS = [0.5, 0.3]\n")
    study = load_study(space)
    # as reported: the primary threshold under its plain name and with its suffix
    last = {"val_iou/Normal": 0.9, "val_iou_t0.5/Normal": 0.9, "val_iou_t0.3/Normal": 0.7}
    last |= {"val_iou/Polyp": 0.5, "val_dice_otsu/Polyp": 0.6}
    table = class_table(study, {"arm": "a", "seed": 0}, last)
    assert len(table) == 6  # 2 classes x (0.5, 0.3, otsu)
    normal = table[table["class"] == "Normal"].set_index("threshold")
    assert normal.loc["0.5", "iou"] == 0.9 and normal.loc["0.3", "iou"] == 0.7
    assert math.isnan(normal.loc["otsu", "iou"])


def test_a_diverged_trial_ends_failed_with_its_reason(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    space = tmp_path / "s.py"
    space.write_text("ARMS = {'a': {}}\nSEEDS = [0]\n")
    tracker = SweepTracker(load_study(space), "sweep1", "unit", log_model=False)
    tracker.setup()
    trial = SimpleNamespace(
        trial_id="t1", config={"arm": "a", "seed": 0}, checkpoint=None, error_file=None
    )
    tracker.on_trial_start(0, [], trial)
    first = {"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "val_iou": 0.5, "status": "running"}
    second = {"epoch": 2, "train_loss": math.nan, "val_loss": math.nan, "status": "diverged"}
    for result in (first, second):
        tracker.on_trial_result(0, [], trial, result)
    trial.last_result = second
    tracker.on_trial_complete(0, [], trial)
    _, trials = sweep_runs(uri, "unit")
    run = trials["t1"]
    assert run.info.status == "FAILED" and run.data.tags[TAG_STATUS] == "diverged"
    assert run.data.tags[TAG_REASON] == "loss became nan at epoch 2"
    client = MlflowClient(uri)
    assert epochs_logged(client, run, "train_loss") == [1, 2]
    assert "learning_curve.png" in artifacts(client, run)

    # a resumed driver finds the same run again and skips epochs it already has
    resumed = SweepTracker(load_study(space), "sweep1", "unit", log_model=False)
    resumed.setup()
    resumed.on_trial_start(0, [], trial)
    resumed.on_trial_result(0, [], trial, {**first, "val_iou": 0.1})
    _, again = sweep_runs(uri, "unit")
    assert list(again) == ["t1"] and again["t1"].data.metrics["val_iou"] == 0.5


def test_interleaved_trials_are_logged_each_to_its_own_run(tmp_path, monkeypatch):
    """Four trials started together, their epochs reported in turn and their ends interleaved,
    as Tune's callbacks deliver them when trials run at once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    space = tmp_path / "s.py"
    space.write_text("ARMS = {'a': {}, 'b': {'model.dropout': 0.1}}\nSEEDS = [0, 1]\n")
    study = load_study(space)
    tracker = SweepTracker(study, "sweep1", "unit", log_model=False)
    tracker.setup()
    trials = [
        SimpleNamespace(trial_id=f"t{k}", config=params, checkpoint=None, error_file=None)
        for k, params in enumerate(
            [{"arm": arm, "seed": seed} for arm in ("a", "b") for seed in (0, 1)]
        )
    ]
    for trial in trials:
        tracker.on_trial_start(0, [], trial)
    epochs = {"t0": 3, "t1": 1, "t2": 3, "t3": 2}  # t1 and t3 are stopped early
    for epoch in (1, 2, 3):
        for trial in trials:
            if epoch <= epochs[trial.trial_id]:
                # each trial's own value, so a mix-up between runs shows
                loss = int(trial.trial_id[1]) + epoch / 10
                result = {"epoch": epoch, "val_loss": loss, "status": "running"}
                tracker.on_trial_result(0, [], trial, result)
                trial.last_result = result
            if epoch == epochs[trial.trial_id]:
                tracker.on_trial_complete(0, [], trial)
    _, runs = sweep_runs(uri, "unit")
    client = MlflowClient(uri)
    assert sorted(runs) == ["t0", "t1", "t2", "t3"]
    for trial in trials:
        run = runs[trial.trial_id]
        history = client.get_metric_history(run.info.run_id, "val_loss")
        expected = [int(trial.trial_id[1]) + e / 10 for e in range(1, epochs[trial.trial_id] + 1)]
        assert [point.value for point in history] == pytest.approx(expected)
        assert [point.step for point in history] == list(range(1, epochs[trial.trial_id] + 1))
        assert run.info.status == "FINISHED" and run.data.tags[TAG_ARM] == study.arm_label(
            trial.config
        )


def test_log_model_logs_weights_that_predict_as_the_trial_did(tmp_path, monkeypatch, tiny_trial):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    base = {**tiny_trial, "data.cache_dir": str(tmp_path / "cache")}
    space = tmp_path / "s.py"
    space.write_text(f"BASE = {base!r}\nARMS = {{'a': {{}}}}\nSEEDS = [0]\n")
    study = load_study(space)
    params = {"arm": "a", "seed": 0}
    trainer = Trainer(study.trial_config(params))
    result = next(trainer.epochs()).to_flat()
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    checkpoint.write(folder, trainer.state_dict(), trainer.preview(), "{}")
    trial = SimpleNamespace(
        trial_id="t1",
        config=params,
        checkpoint=Checkpoint.from_directory(str(folder)),
        error_file=None,
        last_result=result,
    )
    tracker = SweepTracker(study, "sweep1", "unit", log_model=True)
    tracker.setup()
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, result)
    tracker.on_trial_complete(0, [], trial)
    assert tracker.unlogged == []
    _, runs = sweep_runs(uri, "unit")
    experiment = MlflowClient(uri).get_experiment_by_name("unit").experiment_id
    (model,) = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert model.source_run_id == runs["t1"].info.run_id
    loaded = mlflow.pytorch.load_model(model.model_uri)
    # a batch size other than the example's: the exported graph takes any
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trainer.model.eval()(images)
        assert torch.allclose(loaded(images), expected, atol=1e-5)


def test_background_writes_run_in_order_off_the_caller_s_thread():
    from tunelab.tracking.outage import WriteQueue

    writes = WriteQueue(on_outage=lambda: None, background=True)
    release, ran, threads = threading.Event(), [], set()

    def first() -> None:
        release.wait(timeout=60)  # held until the caller has gone on
        threads.add(threading.current_thread().name)
        writes.attempt("nested", lambda: ran.append("nested"))  # inside a write: runs inline
        ran.append("first")

    def fails() -> None:
        raise ValueError("refused")  # a refused write is reported and skipped, in order

    writes.attempt("first", first)
    writes.attempt("fails", fails)
    writes.attempt("second", lambda: ran.append("second"))
    assert ran == []  # the caller did not wait for MLflow
    release.set()
    writes.wait()
    assert ran == ["nested", "first", "second"]
    assert threads == {"mlflow"} and writes.unlogged == ["fails: ValueError: refused"]
