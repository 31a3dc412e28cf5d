"""MLflow tracking of a sweep: an experiment per sweep, a parent run, a nested run per trial.

Every MLflow call is made by the driver, from a Tune callback that sees each trial's results,
checkpoints and end. Why one process: MLflow 3's default store is a SQLite file, and several
processes writing one SQLite file fail with "database is locked"; a single writer cannot lock
itself out. It also means trials on other nodes of a cluster need no route to the tracking
server, and a trial the scheduler killed still gets its figures, drawn here from its last
checkpoint.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from analysis.figures import learning_curve, prediction_grid, save_png
from tunelab.mlflow_store import (
    TAG_ARM,
    TAG_FOLD,
    TAG_NODE,
    TAG_REASON,
    TAG_RETRIES,
    TAG_ROLE,
    TAG_SEED,
    TAG_STATUS,
    TAG_SWEEP_ID,
    TAG_TRIAL_ID,
    experiment_id,
    find_runs,
)
from tunelab.model import UNet
from tunelab.results import (
    METRICS,
    TEST_PREFIX,
    class_names_in,
    error_message,
    final_status,
    trial_rows,
)
from tunelab.space import Study
from tunelab.trainable import DATA_REPORT_FILE, PREVIEW_FILE, TEST_SCORES_FILE, load_state

logger = logging.getLogger(__name__)

# statuses whose MLflow run ends FAILED; the others end FINISHED (pruned is a normal end)
FAILED_STATUSES = ("diverged", "failed")
# per-epoch values of EpochResult.to_flat() that are not validation metrics (`val_*`)
EPOCH_METRICS = (
    "epoch",
    "train_loss",
    "val_loss",
    "lr",
    "epoch_seconds",
    "data_seconds",
    "startup_seconds",
)
CONVERGENCE_METRICS = ("trend", "streak")
# what the last report of a trial that scored the test set adds (TestScores.to_flat)
TEST_VALUES = ("checkpoint_epoch", "test_seconds")
MAX_PARAMS, MAX_METRICS = 100, 1000  # MLflow's limits per log_batch call


class TrackingError(RuntimeError):
    """MLflow cannot be used as asked (e.g. the tracking server does not answer)."""


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}  (then open http://127.0.0.1:5000)"


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail before any trial starts if the store cannot be written: name the URI and the fix."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                return
        except (urllib.error.URLError, OSError) as error:
            raise TrackingError(
                f"MLflow tracking server {uri} does not answer ({error}); start it, e.g. "
                "`mlflow server --host 127.0.0.1 --port 5000`, or drop --mlflow-uri to log to "
                "./mlflow.db"
            ) from error
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"cannot write the MLflow store {uri}: {folder} is not writable")


def git_commit() -> dict[str, str]:
    """The commit of the code that runs (and whether it has uncommitted changes), as tags."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
    except OSError:  # no git on this machine
        return {}
    if commit.returncode != 0:  # installed from a wheel, not a checkout
        return {}
    return {
        "mlflow.source.git.commit": commit.stdout.strip(),
        "tunelab.git_dirty": str(bool(dirty.stdout.strip())),
    }


def is_epoch_value(key: str) -> bool:
    """Whether a reported key is one of the trial's own per-epoch values, not Ray's bookkeeping."""
    return key in EPOCH_METRICS + CONVERGENCE_METRICS or key.startswith("val_")


def is_test_value(key: str) -> bool:
    """Whether a reported key is one of the test set's scores, reported once at a trial's end."""
    return key in TEST_VALUES or key.startswith(TEST_PREFIX)


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The values of one epoch's report that MLflow logs (the test scores, at the last one)."""
    return {
        key: float(value)
        for key, value in result.items()
        if (is_epoch_value(key) or is_test_value(key))
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }


def class_table(study: Study, params: dict[str, Any], last: dict[str, Any]) -> pd.DataFrame:
    """Per tumour class x threshold: IoU, Dice, pixel error and accuracy of the last epoch."""
    cfg = study.trial_config(params)
    rows = []
    for row in trial_rows(cfg, {}, last, class_names_in(last)):
        for name in class_names_in(last):
            rows.append(
                {"class": name, "threshold": row["threshold"]}
                | {metric: row[f"{metric}/{name}"] for metric in METRICS}
            )
    return pd.DataFrame(rows, columns=["class", "threshold", *METRICS])


def end_sweep(
    sweep_id: str,
    experiment: str,
    files: Iterable[Path],
    status: str,
) -> str:
    """Close the sweep's parent run with `status`, after logging `files` (or folders) to it.

    Trial runs still open (after a Ctrl+C) are closed KILLED and tagged `interrupted`;
    `--resume` reopens them. Returns the parent run's id.
    """
    client = MlflowClient()
    exp_id = experiment_id(client, experiment)
    for run in find_runs(client, exp_id, sweep_id, "trial"):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, TAG_STATUS, "interrupted")
            client.set_terminated(run.info.run_id, "KILLED")
    parent = next(find_runs(client, exp_id, sweep_id, "sweep"))
    for path in files:
        if path.is_dir():
            client.log_artifacts(parent.info.run_id, str(path), artifact_path=path.name)
        else:
            client.log_artifact(parent.info.run_id, str(path))
    client.set_terminated(parent.info.run_id, status)
    return parent.info.run_id


def _never_fails(hook: Callable[..., None]) -> Callable[..., None]:
    """MLflow trouble must not stop training: while the server is unreachable the call waits in
    a queue, replayed in order once it answers; any other failure is reported and skipped."""

    @functools.wraps(hook)
    def guarded(self: SweepTracker, *args: Any, **kwargs: Any) -> None:
        self._attempt(hook.__name__, functools.partial(hook, self, *args, **kwargs))

    return guarded


def _unreachable(error: BaseException) -> bool:
    """A server that does not answer (refused, reset, timed out), not a refused request."""
    text = str(error)
    return isinstance(error, (ConnectionError, TimeoutError)) or any(
        marker in text for marker in ("Max retries exceeded", "Connection refused", "timed out")
    )


class SweepTracker(tune.Callback):
    """Logs a sweep to MLflow from the driver: params, every epoch, status, figures, tables.

    Tune pickles its callbacks with the sweep and restores them on `--resume`; only the
    constructor's values travel, and runs are found again by their `tunelab.*` tags, so a
    resumed trial goes on logging into its own run instead of a duplicate.
    """

    RETRY_S = 5.0  # how often an unreachable server is asked again
    FINAL_WAIT_S = 60.0  # how long the sweep's end waits for it before giving up

    def __init__(self, study: Study, sweep_id: str, experiment: str, log_model: bool) -> None:
        self.study = study
        self.sweep_id = sweep_id
        self.experiment = experiment
        self.log_model = log_model
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        self._parent_id = ""
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._last_epoch: dict[str, int] = {}  # run id -> last epoch logged
        self.unlogged: list[str] = []  # what MLflow refused, reported at the end
        self._queue: deque[tuple[str, Callable[[], None]]] = deque()  # waiting for the server
        self._last_probe = 0.0
        self._busy = False  # inside a hook or a replay
        self._code_version = git_commit()
        self._server_was_lost = False
        self._recheck: set[str] = set()  # runs whose last logged epoch must be asked again

    def __getstate__(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ("study", "sweep_id", "experiment", "log_model")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient()  # the driver's tracking URI, set by the runner
        return self._client

    def _attempt(self, name: str, call: Callable[[], None]) -> None:
        if self._busy:  # called by another hook: an unreachable server queues the outer one
            try:
                call()
            except Exception as error:
                if _unreachable(error):
                    raise
                self._skip(name, error)
            return
        if self._queue and not self._flush():
            self._queue.append((name, call))  # keep the order: runs exist before their epochs
            return
        self._busy = True
        try:
            call()
        except Exception as error:
            if not _unreachable(error):
                self._skip(name, error)
                return
            logger.warning(
                "MLflow: %s does not answer (%s); trials go on, and what they report is kept "
                "until it answers again",
                os.environ.get("MLFLOW_TRACKING_URI"),
                error,
            )
            self._queue.append((name, call))
            self._last_probe = time.monotonic()
            # a call cut off mid-way may have been written before the answer was lost
            self._server_was_lost = True
            self._recheck.update(self._runs.values())
        finally:
            self._busy = False

    def _skip(self, name: str, error: Exception) -> None:
        self.unlogged.append(f"{name}: {type(error).__name__}: {error}")
        logger.warning("MLflow: %s not logged (%s); training goes on", name, error)

    def _flush(self, force: bool = False) -> bool:
        """Replay the queue if the server answers again (asked at most every RETRY_S)."""
        if not force and time.monotonic() - self._last_probe < self.RETRY_S:
            return False
        self._last_probe = time.monotonic()
        self._busy = True
        try:
            while self._queue:
                name, call = self._queue[0]
                try:
                    call()
                except Exception as error:
                    if _unreachable(error):
                        return False
                    self._skip(name, error)
                self._queue.popleft()
        finally:
            self._busy = False
        logger.warning("MLflow: the server answers again; everything kept has been logged")
        return True

    @_never_fails
    def setup(self, **info: Any) -> None:
        self._experiment_id = experiment_id(self.client, self.experiment)
        parents = list(find_runs(self.client, self._experiment_id, self.sweep_id, "sweep"))
        if parents:  # a resumed sweep
            self._parent_id = parents[0].info.run_id
            self.client.update_run(self._parent_id, status="RUNNING")
        else:
            self._parent_id = self._create_parent()
        for run in find_runs(self.client, self._experiment_id, self.sweep_id, "trial"):
            self._runs[run.data.tags[TAG_TRIAL_ID]] = run.info.run_id
            self._last_epoch[run.info.run_id] = int(run.data.metrics.get("epoch", 0))

    def _new_run(self, name: str, role: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(
            self._experiment_id,
            run_name=name,
            tags={
                TAG_ROLE: role,
                TAG_SWEEP_ID: self.sweep_id,
                "mlflow.source.name": str(self.study.path),
                **self._code_version,
                **tags,
            },
        )
        return run.info.run_id

    def _create_parent(self) -> str:
        study = self.study
        run_id = self._new_run(f"{study.name} sweep", "sweep", {})
        settings = {
            "space": str(study.path),
            "kind": study.kind,
            "seeds": ",".join(map(str, study.seeds)),
            "scheduler": study.scheduler,
            "metric": study.metric,
            "mode": study.mode,
            "num_samples": study.num_samples,
            "resources": json.dumps(study.resources),
            "baseline": study.baseline or "",
        }
        _log_params(self.client, run_id, settings)
        if study.path.is_file():  # the space itself, to rerun it exactly
            self.client.log_artifact(run_id, str(study.path))
        return run_id

    @_never_fails
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
            TAG_TRIAL_ID: trial.trial_id,
            TAG_ARM: arm,
            TAG_SEED: str(cfg.seed),
            TAG_FOLD: str(cfg.data.fold),
            TAG_STATUS: "running",
            "mlflow.parentRunId": self._parent_id,
        }
        fold = f" fold {cfg.data.fold}" if self.study.folds else ""
        run_id = self._new_run(f"{arm} seed {cfg.seed}{fold}", "trial", tags)
        self._runs[trial.trial_id] = run_id  # before anything else can fail
        _log_params(self.client, run_id, cfg.to_flat())

    @_never_fails
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
        values = [Metric(k, v, now, epoch) for k, v in epoch_metrics(result).items()]
        for start in range(0, len(values), MAX_METRICS):
            self.client.log_batch(run_id, metrics=values[start : start + MAX_METRICS])
        if run_id not in self._last_epoch:
            self.client.set_tag(run_id, TAG_NODE, str(result.get("node_id", "")))
        self._last_epoch[run_id] = epoch

    @_never_fails
    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._runs[trial.trial_id]
        self.client.set_tag(run_id, TAG_RETRIES, str(trial.num_failures))
        self.client.set_tag(run_id, TAG_REASON, error_message(_error_text(trial)))

    @_never_fails
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end_trial(trial, final_status(trial.last_result, errored=False))

    @_never_fails
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end_trial(trial, "failed")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._queue:
            logger.warning(
                "MLflow: waiting up to %.0f s for the server to log what trials reported",
                self.FINAL_WAIT_S,
            )
        deadline = time.monotonic() + self.FINAL_WAIT_S
        while self._queue and not self._flush(force=True) and time.monotonic() < deadline:
            time.sleep(self.RETRY_S)
        if self._queue:
            waiting = Counter(name for name, _ in self._queue)
            self.unlogged += [f"{n} x {name}: server unreachable" for name, n in waiting.items()]
        if self.unlogged:
            logger.warning(
                "MLflow: %d calls failed, their values are missing from MLflow (results.parquet "
                "has every trial):\n  %s",
                len(self.unlogged),
                "\n  ".join(self.unlogged),
            )

    def _end_trial(self, trial: Any, status: str) -> None:
        run_id = self._runs[trial.trial_id]
        last = trial.last_result or {}
        reason = ""
        if status == "failed":
            reason = error_message(_error_text(trial))
        elif status == "diverged":
            reason = f"loss became {last.get('train_loss')} at epoch {last.get('epoch')}"
        self._log_artifacts(trial, run_id, status)
        tags = [RunTag(TAG_STATUS, status), RunTag(TAG_REASON, reason[:5000])]
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, "FAILED" if status in FAILED_STATUSES else "FINISHED")

    @_never_fails  # a missing figure must not leave the run open
    def _log_artifacts(self, trial: Any, run_id: str, status: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            self._write_artifacts(Path(folder), trial, run_id, status)
            self.client.log_artifacts(run_id, folder)
        if self.log_model and status not in FAILED_STATUSES and trial.checkpoint is not None:
            self._log_model(run_id, trial)

    def _write_artifacts(self, folder: Path, trial: Any, run_id: str, status: str) -> None:
        title = f"{self.study.arm_label(trial.config)}, seed {trial.config.get('seed')}: {status}"
        history = self._history(run_id)
        if len(history):
            save_png(learning_curve(history, title), folder / "learning_curve.png")
        last = trial.last_result or {}
        if class_names_in(last):
            class_table(self.study, trial.config, last).to_csv(
                folder / "per_class.csv", index=False
            )
        if status == "failed":
            (folder / "error.txt").write_text(_error_text(trial))
        checkpoint = trial.checkpoint
        if checkpoint is None:  # it failed before its first epoch ended
            return
        with checkpoint.as_directory() as saved:
            shutil.copy(Path(saved) / DATA_REPORT_FILE, folder / DATA_REPORT_FILE)
            if (Path(saved) / TEST_SCORES_FILE).is_file():
                shutil.copy(Path(saved) / TEST_SCORES_FILE, folder / TEST_SCORES_FILE)
            with np.load(Path(saved) / PREVIEW_FILE, allow_pickle=False) as preview:
                save_png(prediction_grid(preview, title), folder / "prediction_grid.png")

    def _history(self, run_id: str) -> pd.DataFrame:
        """The run's loss curves and trend, by epoch, as MLflow holds them (resumes included)."""
        columns = {}
        for key in ("train_loss", "val_loss", "trend"):
            points = self.client.get_metric_history(run_id, key)
            columns[key] = pd.Series({p.step: p.value for p in points}, dtype=float)
        frame = pd.DataFrame(columns).rename_axis("epoch").reset_index()
        return frame.sort_values("epoch").reset_index(drop=True)

    @_never_fails
    def _log_model(self, run_id: str, trial: Any) -> None:
        """The tested weights (best-validation or last, as eval.checkpoint says) as an MLflow
        PyTorch model, exported (pt2): a graph, not a pickle."""
        cfg = self.study.trial_config(trial.config)
        model = UNet(cfg.model, cfg.data.channels, cfg.out_channels)
        with trial.checkpoint.as_directory() as saved:
            state = load_state(Path(saved))
        model.load_state_dict(state["best"]["weights"] or state["model"])
        size = cfg.data.input_size
        # two images: with one, torch.export fixes the batch size to 1 (0/1 specialisation)
        example = np.zeros((2, cfg.data.channels, size, size), np.float32)
        with mlflow.start_run(run_id=run_id):
            mlflow.pytorch.log_model(model.eval(), name="model", input_example=example)


def _log_params(client: MlflowClient, run_id: str, values: dict[str, Any]) -> None:
    params = [
        Param(key, ",".join(map(str, value)) if isinstance(value, tuple) else str(value))
        for key, value in values.items()
    ]
    for start in range(0, len(params), MAX_PARAMS):
        client.log_batch(run_id, params=params[start : start + MAX_PARAMS])


def _error_text(trial: Any) -> str:
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text()
    return "the trial raised an error; Ray kept no error file"
