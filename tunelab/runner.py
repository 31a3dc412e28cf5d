"""Build and run the Ray Tune experiment of a validated Study; write results.parquet.

Kept apart from `sweep.py` so the CLI validates a space without importing Ray or torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tunelab.collect import (
    collect_checkpoint_files,
    epochs_frame,
    keep_tested_checkpoints,
    results_frame,
)
from tunelab.config import TrialConfig
from tunelab.data import load
from tunelab.data.cache import Fingerprints
from tunelab.data.dataset import check_test_root
from tunelab.results import (
    EPOCHS_FILE,
    IDENTITY_FILE,
    PREVIEWS_FOLDER,
    RESULTS_FILE,
    TABLE_FILE,
    TEST_IMAGES_FILE,
)
from tunelab.resume import (
    RestoreFailureIsAnError,
    ResumeError,
    move_aside,
    saved_trial_ids,
    start_over_hint,
)
from tunelab.searcher import describe, search_algorithm, total_trials
from tunelab.space import FOLD_KEY, Study
from tunelab.stopper import ConvergenceStopper
from tunelab.summary import default_split, format_markdown, main_table, on_split, split_caption
from tunelab.tracking.callback import SweepTracker
from tunelab.tracking.store import TrackingError, check_reachable, ui_command
from tunelab.tracking.sweep_run import end_sweep
from tunelab.trainable import PROGRESS_METRICS, train_trial


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep: where it is stored, which Ray and MLflow it uses, how it retries."""

    storage: str  # an absolute local path or a URI (s3://, gs://, ...)
    address: str | None
    resume: bool
    gpus_per_trial: float | None
    max_failures: int
    num_cpus: int | None
    verbose: int
    mlflow_uri: str  # sqlite:///... or http://HOST:PORT
    experiment: str | None  # MLflow experiment; None: the space's NAME
    log_model: bool
    # "tested": at the end, each trial keeps one checkpoint with only its tested weights
    keep_checkpoints: str = "all"


class SetupError(RuntimeError):
    """The sweep cannot start (its data or MLflow store is unusable); nothing has run yet."""


class SweepInterrupted(RuntimeError):
    """The sweep was stopped by Ctrl+C before every trial ended; it can be resumed."""


def run_sweep(study: Study, options: SweepOptions) -> str:
    """Run every trial of the study (or resume them) and return the printed summary."""
    # the tracker logs from this process; MLflow's client reads the URI from the environment
    os.environ["MLFLOW_TRACKING_URI"] = options.mlflow_uri
    # the tracker retries itself (it queues what a server did not take, and checks what it kept
    # before logging again); MLflow's own retries would cost minutes and could log twice
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        check_reachable(options.mlflow_uri)
    except TrackingError as error:
        raise SetupError(str(error)) from None
    base = study.trial_config(study.first_params())  # the base alone may be incomplete
    # decode (or generate) the data once, here, rather than in every trial at once, and hash
    # its files once: trials receive the fingerprints and only open the cached arrays
    fingerprints: dict[str, str] = {}
    try:
        data = load(base.data)
        fingerprints[data.root] = data.fingerprint
        if base.data.test_root:  # decoded, filtered and checked as every trial will
            test = check_test_root(base.data)
            fingerprints[test.root] = test.fingerprint
    except (ValueError, OSError) as error:  # before Ray starts: a bad folder costs nothing
        raise SetupError(f"cannot use the dataset: {error}") from None
    sweep_dir = Path(options.storage) / study.name
    sweep_id, experiment = _sweep_identity(sweep_dir, study, options)
    _init_ray(options)
    try:
        if not _cluster_address(options):  # a cluster may grow; this machine will not
            _check_fits(_resources(study, options), ray.cluster_resources())
        tracker = SweepTracker(
            study, sweep_id, experiment, options.log_model, str(sweep_dir), background=True
        )
        tuner = _tuner(study, options, base, tracker, fingerprints)
        with _ctrl_c_saves_state() as interrupted, _restore_failure_is_an_error(options.resume):
            grid = tuner.fit()
    except ResumeError as error:
        hint = start_over_hint(sweep_dir)
        raise SetupError(f"cannot resume {sweep_dir}: {error} {hint}") from None
    finally:
        ray.shutdown()
    if interrupted.is_set():
        end_sweep(sweep_id, experiment, [], "KILLED")
        raise SweepInterrupted(
            f"sweep interrupted; its state is saved in {sweep_dir}. "
            "Continue it with the same command plus --resume"
        )
    results = results_frame(study, grid)
    results.to_parquet(sweep_dir / RESULTS_FILE, index=False)
    epochs_frame(study, grid).to_parquet(sweep_dir / EPOCHS_FILE, index=False)
    test_images = collect_checkpoint_files(study, grid, sweep_dir / PREVIEWS_FOLDER)
    test_images.to_parquet(sweep_dir / TEST_IMAGES_FILE, index=False)
    split = default_split(results)
    main = format_markdown(main_table(on_split(results, split)))
    table = f"{split_caption(results, split)}:\n\n{main}"
    (sweep_dir / TABLE_FILE).write_text(table + "\n")
    # everything analysis reads, so `python -m analysis EXPERIMENT` works from MLflow alone
    layout = (
        RESULTS_FILE,
        EPOCHS_FILE,
        TEST_IMAGES_FILE,
        TABLE_FILE,
        IDENTITY_FILE,
        PREVIEWS_FOLDER,
    )
    files = [sweep_dir / name for name in layout]
    try:
        parent_run = end_sweep(sweep_id, experiment, files, "FINISHED")
        mlflow_line = f"experiment '{experiment}' (sweep run {parent_run}) in {options.mlflow_uri}"
    except Exception as error:  # the results are on disk already; say what MLflow lacks
        mlflow_line = (
            f"could not close the sweep's run in {options.mlflow_uri} ({error}); "
            f"its files are in {sweep_dir}"
        )
    checkpoints_line = ""
    if options.keep_checkpoints == "tested":  # last: everything above read the full ones
        try:
            keep_tested_checkpoints(grid)
            checkpoints_line = "checkpoints: each finished trial keeps its tested weights only\n"
        except OSError as error:  # the sweep's results are written; say what was not shrunk
            checkpoints_line = f"checkpoints: not all reduced to the tested weights ({error})\n"
    return (
        f"\n{table}\n\nresults: {sweep_dir / RESULTS_FILE}\nRay experiment: {sweep_dir}\n"
        f"{checkpoints_line}"
        f"paper tables, comparisons and figures: python -m analysis {sweep_dir}\n"
        f"MLflow: {mlflow_line}\nopen the MLflow UI: {ui_command(options.mlflow_uri)}"
    )


def _sweep_identity(sweep_dir: Path, study: Study, options: SweepOptions) -> tuple[str, str]:
    """(sweep id, MLflow experiment): new for a new sweep, read back for --resume.

    A resume first checks what Ray will restore from (refusing a damaged state rather than
    letting Ray restart every trial); a new start moves an earlier sweep's folders aside.
    """
    path = sweep_dir / IDENTITY_FILE
    if options.resume:
        if not path.is_file():
            raise SetupError(f"nothing to resume at {sweep_dir} (no {IDENTITY_FILE})")
        saved = json.loads(path.read_text())
        searched = saved.get("search")  # none in an ablation, or a sweep from before SEARCH
        if searched and json.loads(json.dumps(describe(study))) != searched:
            raise SetupError(
                f"cannot resume {sweep_dir} with another search: it was started with "
                f"{json.dumps(searched)}; Ray continues its saved sampler as it was, so drop "
                "--search, --num-samples and --search-seed (or edits to SPACE) to resume it"
            )
        try:
            saved_trial_ids(sweep_dir)
        except ResumeError as error:
            raise SetupError(str(error)) from None
        return saved["sweep_id"], saved["experiment"]
    move_aside(sweep_dir)
    identity = {
        "sweep_id": uuid.uuid4().hex[:12],
        "experiment": options.experiment or study.name,
        "baseline": study.baseline or "",  # the arm analysis compares the others against
        "mlflow_uri": options.mlflow_uri,  # where analysis logs its report
    }
    if study.kind == "search":  # the sampled domains, for analysis' importance and slices
        identity["search"] = describe(study)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity) + "\n")
    return identity["sweep_id"], identity["experiment"]


@contextlib.contextmanager
def _restore_failure_is_an_error(resume: bool) -> Iterator[None]:
    """On --resume, Ray's fallback to a fresh start raises instead (see tunelab.resume)."""
    controller_log = logging.getLogger("ray.tune.execution.tune_controller")
    guard = RestoreFailureIsAnError()
    if resume:
        controller_log.addFilter(guard)
    try:
        yield
    finally:
        controller_log.removeFilter(guard)


@contextlib.contextmanager
def _ctrl_c_saves_state() -> Iterator[threading.Event]:
    """Ctrl+C ends the run the way Tune's own handler does (state saved, resumable) and is
    remembered, so an interrupted sweep is not mistaken for a finished one."""
    interrupted = threading.Event()

    def on_interrupt(signum: int, frame: object) -> None:
        interrupted.set()
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune's graceful stop: save state, end the run

    previous = signal.signal(signal.SIGINT, on_interrupt)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours instead, as Tune cannot report it
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _init_ray(options: SweepOptions) -> None:
    # --resume restores each trial from the checkpoint the last saved experiment state names.
    # Saved at every step (not every 10 s or more), that state is at most one checkpoint
    # behind, and CheckpointConfig keeps two: a driver killed at any moment leaves every named
    # checkpoint on disk. Ray warns that such snapshots are frequent; that is the intent.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = _cluster_address(options)
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    ray.init(
        num_cpus=options.num_cpus,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,  # trials exchange metrics only; keep RAM for them
        configure_logging=True,
        logging_level="WARNING",
    )


def _cluster_address(options: SweepOptions) -> str | None:
    # inside `ray job submit`, RAY_ADDRESS names the cluster the job was submitted to
    return options.address or os.environ.get("RAY_ADDRESS")


def _check_fits(resources: dict[str, float], available: dict[str, float]) -> None:
    """A trial asking for more than the local Ray instance has would wait forever: refuse."""
    for key, name, flag in (("cpu", "CPU", "--cpus-per-trial"), ("gpu", "GPU", "--gpus-per-trial")):
        if resources[key] > available.get(name, 0.0):
            raise SetupError(
                f"each trial asks for {resources[key]:g} {name} ({flag} or the space's "
                f"RESOURCES), but this machine's Ray instance has {available.get(name, 0.0):g}; "
                "no trial could ever start"
            )


def _trial_slots(resources: dict[str, float]) -> int:
    """How many trials the Ray instance runs at once, by its CPUs and GPUs (at least 1)."""
    available = ray.cluster_resources()
    slots = [
        available.get(name, 0.0) / resources[key]
        for key, name in (("cpu", "CPU"), ("gpu", "GPU"))
        if resources[key] > 0
    ]
    return max(1, int(min(slots, default=1)))


def _resources(study: Study, options: SweepOptions) -> dict[str, float]:
    """What Ray reserves per trial: --gpus-per-trial, else the space's RESOURCES "gpu" (0 is a
    choice: the study stays on the CPUs); only when neither says, one GPU on a machine or
    cluster with GPUs, so that they are used without being told."""
    gpu = options.gpus_per_trial
    if gpu is None:
        gpu = study.resources.get("gpu")
    if gpu is None:
        gpu = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
    return {"cpu": study.resources["cpu"], "gpu": float(gpu)}


def _tuner(
    study: Study,
    options: SweepOptions,
    base: TrialConfig,
    tracker: SweepTracker,
    fingerprints: Fingerprints,
) -> tune.Tuner:
    """The Tuner of a new sweep, or the restored one with --resume.

    A restored Tuner keeps the callbacks it was pickled with: the tracker of the first run,
    whose sweep id and experiment are the ones `_sweep_identity` reads back.
    """
    trainable = _trainable(study, options, fingerprints)
    storage = options.storage
    if options.resume:
        path = os.path.join(storage, study.name)
        # no param_space: with it, Ray would start every trial anew when its state is unreadable
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    scheduler = _scheduler(study, base)
    # stops a trial at the epoch its own rule fires (a disabled rule never does)
    stopper = ConvergenceStopper()
    return tune.Tuner(
        trainable,
        param_space=study.param_space(),
        tune_config=tune.TuneConfig(
            metric=study.metric,
            mode=study.mode,
            search_alg=search_algorithm(study, _trial_slots(_resources(study, options))),
            scheduler=scheduler,
            num_samples=total_trials(study),
            # a finished trial's worker process runs the next trial: torch, tunelab and MONAI
            # are imported once per worker, not once per trial (BENCHMARKS.md, main job)
            reuse_actors=True,
            trial_name_creator=lambda trial: _trial_name(study, trial.config, trial.trial_id),
            trial_dirname_creator=lambda trial: _trial_name(study, trial.config, trial.trial_id),
        ),
        run_config=tune.RunConfig(
            name=study.name,
            storage_path=storage,
            stop=stopper,
            callbacks=[tracker],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),  # see _init_ray
            verbose=options.verbose,
        ),
    )


def _trainable(
    study: Study, options: SweepOptions, fingerprints: Fingerprints | None = None
) -> Any:
    """The trial function with the study and the datasets' fingerprints bound, and each trial's
    resources (what Ray reserves)."""
    bound = tune.with_parameters(train_trial, study=study, fingerprints=fingerprints or {})
    trainable = tune.with_resources(bound, _resources(study, options))
    trainable._progress_metrics = PROGRESS_METRICS  # Ray's hook for what its live output shows
    return trainable


def _scheduler(study: Study, base: TrialConfig) -> ASHAScheduler | FIFOScheduler:
    if study.scheduler == "none":
        return FIFOScheduler()
    max_epochs = study.largest("train.max_epochs", base.train.max_epochs)
    return ASHAScheduler(
        time_attr="epoch",
        max_t=max_epochs,  # the longest trial's: ASHA must not cut any trial short at max_t
        grace_period=min(study.asha["grace_period"], max_epochs),  # short runs
        reduction_factor=study.asha["reduction_factor"],
    )


def _trial_name(study: Study, params: dict[str, Any], trial_id: str) -> str:
    label = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in study.arm_label(params))
    fold = f"_f{params[FOLD_KEY]}" if FOLD_KEY in params else ""
    return f"{label}_s{params.get('seed')}{fold}_{trial_id}"
