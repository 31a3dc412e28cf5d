"""The Tune callback that logs a sweep to MLflow from the driver: a nested run per trial, found
again by its tags, with its params, every epoch, its status and, at its end, its files."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from tunelab.epoch_report import logged_values
from tunelab.results import error_message, final_status
from tunelab.space import Study
from tunelab.tracking.artifacts import error_text, write_trial_artifacts
from tunelab.tracking.layout import (
    TAG_ARM,
    TAG_FOLD,
    TAG_NODE,
    TAG_REASON,
    TAG_RETRIES,
    TAG_SEED,
    TAG_STATUS,
    TAG_SWEEP_DIR,
    TAG_TRIAL_ID,
    experiment_id,
    find_runs,
)
from tunelab.tracking.model_export import log_tested_model
from tunelab.tracking.outage import WriteQueue, never_fails
from tunelab.tracking.sweep_run import git_commit, log_params, new_run, open_sweep_run

# statuses whose MLflow run ends FAILED; the others end FINISHED (pruned is a normal end)
FAILED_STATUSES = ("diverged", "failed")
MAX_METRICS = 1000  # MLflow's limit per log_batch call


class SweepTracker(tune.Callback):
    """Logs a sweep to MLflow from the driver: params, every epoch, status, figures, tables.

    Tune pickles its callbacks with the sweep and restores them on `--resume`; only the
    constructor's values travel, and runs are found again by their `tunelab.*` tags, so a
    resumed trial goes on logging into its own run instead of a duplicate.
    """

    FINAL_WAIT_S = 60.0  # how long the sweep's end waits for an unreachable server

    def __init__(
        self,
        study: Study,
        sweep_id: str,
        experiment: str,
        log_model: bool,
        sweep_dir: str = "",
        background: bool = False,
    ) -> None:
        self.study = study
        self.sweep_id = sweep_id
        self.experiment = experiment
        self.log_model = log_model
        self.sweep_dir = sweep_dir  # tagged on the parent run, so an experiment finds its files
        # True in a sweep: MLflow writes run on their own thread, off Tune's loop (BENCHMARKS,
        # "Scale: the driver's cost per result"); False writes before returning (unit tests)
        self.background = background
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        self._parent_id = ""
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._last_epoch: dict[str, int] = {}  # run id -> last epoch logged
        self.writes = WriteQueue(on_outage=self._after_outage, background=self.background)
        self._code_version = git_commit()
        self._server_was_lost = False
        self._recheck: set[str] = set()  # runs whose last logged epoch must be asked again

    def __getstate__(self) -> dict[str, Any]:
        kept = ("study", "sweep_id", "experiment", "log_model", "sweep_dir", "background")
        return {key: getattr(self, key, "") for key in kept}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # sweeps pickled before sweep_dir and background
        self.__dict__.update({"sweep_dir": "", "background": False, **state})
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient()  # the driver's tracking URI, set by the runner
        return self._client

    @property
    def unlogged(self) -> list[str]:
        """What MLflow did not take (reported at the sweep's end)."""
        return self.writes.unlogged

    def _after_outage(self) -> None:
        # a call cut off mid-way may have been written before the answer was lost
        self._server_was_lost = True
        self._recheck.update(self._runs.values())

    @never_fails
    def setup(self, **info: Any) -> None:
        self._experiment_id = experiment_id(self.client, self.experiment)
        parents = list(find_runs(self.client, self._experiment_id, self.sweep_id, "sweep"))
        if parents:  # a resumed sweep
            self._parent_id = parents[0].info.run_id
            self.client.update_run(self._parent_id, status="RUNNING")
        else:
            tags = {**self._code_version, TAG_SWEEP_DIR: self.sweep_dir}
            self._parent_id = open_sweep_run(
                self.client, self._experiment_id, self.study, self.sweep_id, tags
            )
        for run in find_runs(self.client, self._experiment_id, self.sweep_id, "trial"):
            self._runs[run.data.tags[TAG_TRIAL_ID]] = run.info.run_id
            self._last_epoch[run.info.run_id] = int(run.data.metrics.get("epoch", 0))

    @never_fails
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None and self._server_was_lost:  # its creation may have gone through
            query = f"tags.`{TAG_TRIAL_ID}` = '{trial.trial_id}'"
            found = find_runs(self.client, self._experiment_id, self.sweep_id, "trial", query)
            run_id = next((run.info.run_id for run in found), None)
            if run_id is not None:
                self._runs[trial.trial_id] = run_id
        if run_id is None:
            self._create_trial_run(trial)
        else:  # resumed or retried: continue the same run
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, TAG_STATUS, "running")

    def _create_trial_run(self, trial: Any) -> None:
        params = trial.config
        cfg = self.study.trial_config(params)
        arm = self.study.arm_label(params)
        tags = {
            **self._code_version,
            TAG_TRIAL_ID: trial.trial_id,
            TAG_ARM: arm,
            TAG_SEED: str(cfg.seed),
            TAG_FOLD: str(cfg.data.fold),
            TAG_STATUS: "running",
            "mlflow.parentRunId": self._parent_id,
        }
        fold = f" fold {cfg.data.fold}" if self.study.folds else ""
        name = f"{arm} seed {cfg.seed}{fold}"
        run_id = new_run(
            self.client, self._experiment_id, self.study, self.sweep_id, name, "trial", tags
        )
        self._runs[trial.trial_id] = run_id  # before anything else can fail
        log_params(self.client, run_id, cfg.to_flat())

    @never_fails
    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run_id = self._runs[trial.trial_id]
        epoch = int(result["epoch"])
        if run_id in self._recheck:  # after an outage: what did the server actually keep?
            logged = int(self.client.get_run(run_id).data.metrics.get("epoch", 0))
            self._last_epoch[run_id] = max(self._last_epoch.get(run_id, 0), logged)
            self._recheck.discard(run_id)
        # a resumed trial repeats the epochs after its last checkpoint: the first values stay
        if epoch <= self._last_epoch.get(run_id, 0):
            return
        now = int(time.time() * 1000)
        values = [Metric(k, v, now, epoch) for k, v in logged_values(result).items()]
        for start in range(0, len(values), MAX_METRICS):
            self.client.log_batch(run_id, metrics=values[start : start + MAX_METRICS])
        if run_id not in self._last_epoch:
            self.client.set_tag(run_id, TAG_NODE, str(result.get("node_id", "")))
        self._last_epoch[run_id] = epoch

    @never_fails
    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._runs[trial.trial_id]
        self.client.set_tag(run_id, TAG_RETRIES, str(trial.num_failures))
        self.client.set_tag(run_id, TAG_REASON, error_message(error_text(trial)))

    @never_fails
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end_trial(trial, final_status(trial.last_result, errored=False))

    @never_fails
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end_trial(trial, "failed")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writes.drain(self.FINAL_WAIT_S)

    def _end_trial(self, trial: Any, status: str) -> None:
        run_id = self._runs[trial.trial_id]
        last = trial.last_result or {}
        reason = ""
        if status == "failed":
            reason = error_message(error_text(trial))
        elif status == "diverged":
            reason = f"loss became {last.get('train_loss')} at epoch {last.get('epoch')}"
        self._log_artifacts(trial, run_id, status)
        tags = [RunTag(TAG_STATUS, status), RunTag(TAG_REASON, reason[:5000])]
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, "FAILED" if status in FAILED_STATUSES else "FINISHED")

    @never_fails  # a missing figure must not leave the run open
    def _log_artifacts(self, trial: Any, run_id: str, status: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            history = self._history(run_id)
            write_trial_artifacts(Path(folder), self.study, trial, history, status)
            self.client.log_artifacts(run_id, folder)
        if self.log_model and status not in FAILED_STATUSES and trial.checkpoint is not None:
            self._log_model(run_id, trial)

    def _history(self, run_id: str) -> pd.DataFrame:
        """The run's loss curves and trend, by epoch, as MLflow holds them (resumes included)."""
        columns = {}
        for key in ("train_loss", "val_loss", "trend"):
            points = self.client.get_metric_history(run_id, key)
            columns[key] = pd.Series({p.step: p.value for p in points}, dtype=float)
        frame = pd.DataFrame(columns).rename_axis("epoch").reset_index()
        return frame.sort_values("epoch").reset_index(drop=True)

    @never_fails
    def _log_model(self, run_id: str, trial: Any) -> None:
        cfg = self.study.trial_config(trial.config)
        with trial.checkpoint.as_directory() as saved:
            log_tested_model(run_id, cfg, Path(saved))
