"""Build and run the Ray Tune experiment of a validated Study; write results.parquet.

Kept apart from `sweep.py` so the CLI validates a space without importing Ray or torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from analysis.tables import format_markdown, main_table
from tunelab.config import TrialConfig
from tunelab.data import load
from tunelab.results import class_names_in, final_status, trial_rows
from tunelab.space import Study
from tunelab.stopper import ConvergenceStopper
from tunelab.sweep import RESULTS_FILE, SweepOptions
from tunelab.trainable import PROGRESS_METRICS, train_trial


class SweepInterrupted(RuntimeError):
    """The sweep was stopped by Ctrl+C before every trial ended; it can be resumed."""


def run_sweep(study: Study, options: SweepOptions) -> str:
    """Run every trial of the study (or resume them) and return the printed summary."""
    _init_ray(options)
    try:
        base = study.trial_config({"seed": study.seeds[0]})
        load(base.data)  # decode (or generate) the data once here, not in every trial at once
        tuner = _tuner(study, options, base)
        with _ctrl_c_saves_state() as interrupted:
            grid = tuner.fit()
    finally:
        ray.shutdown()
    sweep_dir = Path(grid.experiment_path)
    if interrupted.is_set():
        raise SweepInterrupted(
            f"sweep interrupted; its state is saved in {sweep_dir}. "
            "Continue it with the same command plus --resume"
        )
    results = results_frame(study, grid)
    results.to_parquet(sweep_dir / RESULTS_FILE, index=False)
    table = format_markdown(main_table(results))
    return f"\n{table}\n\nresults: {sweep_dir / RESULTS_FILE}\nRay experiment: {sweep_dir}"


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
    # Every epoch checkpoints and, with num_to_keep, forces a snapshot of the experiment state
    # (what makes --resume exact); Ray warns about that on every trial. The snapshot stays.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if options.address:
        ray.init(address=options.address, log_to_driver=True)
        return
    ray.init(
        num_cpus=options.num_cpus,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,  # trials exchange metrics only; keep RAM for them
        configure_logging=True,
        logging_level="WARNING",
    )


def _resources(study: Study, options: SweepOptions) -> dict[str, float]:
    gpu = study.resources["gpu"]
    if options.gpus_per_trial is None and gpu == 0 and torch.cuda.is_available():
        gpu = 1.0  # a GPU machine uses its GPU without being told
    return {"cpu": study.resources["cpu"], "gpu": gpu}


def _tuner(study: Study, options: SweepOptions, base: TrialConfig) -> tune.Tuner:
    """The Tuner of a new sweep, or the restored one with --resume."""
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, study=study), _resources(study, options)
    )
    trainable._progress_metrics = PROGRESS_METRICS  # Ray's hook for what its live output shows
    storage = options.storage
    if options.resume:
        path = os.path.join(storage, study.name)
        if not tune.Tuner.can_restore(path):
            raise SystemExit(f"error: nothing to resume at {path}")
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    scheduler = (
        ASHAScheduler(
            time_attr="epoch",
            max_t=base.train.max_epochs,
            grace_period=min(study.asha["grace_period"], base.train.max_epochs),  # short runs
            reduction_factor=study.asha["reduction_factor"],
        )
        if study.scheduler == "asha"
        else FIFOScheduler()
    )
    stopper = ConvergenceStopper.from_config(base.stop) if base.stop.enabled else None
    return tune.Tuner(
        trainable,
        param_space=study.param_space(),
        tune_config=tune.TuneConfig(
            metric=study.metric,
            mode=study.mode,
            scheduler=scheduler,
            num_samples=study.num_samples,
            trial_name_creator=lambda trial: _trial_name(study, trial.config, trial.trial_id),
            trial_dirname_creator=lambda trial: _trial_name(study, trial.config, trial.trial_id),
        ),
        run_config=tune.RunConfig(
            name=study.name,
            storage_path=storage,
            stop=stopper,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=options.verbose,
        ),
    )


def _trial_name(study: Study, params: dict[str, Any], trial_id: str) -> str:
    label = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in study.arm_label(params))
    return f"{label}_s{params.get('seed')}_{trial_id}"


def results_frame(study: Study, grid: tune.ResultGrid) -> pd.DataFrame:
    """One row per trial x threshold; every trial appears, whatever its status."""
    rows: list[dict[str, Any]] = []
    for result in grid:
        params = result.config or {}
        last = result.metrics or {}
        cfg = study.trial_config(params)
        identity = {
            "sweep": study.name,
            "arm": study.arm_label(params),
            "seed": cfg.seed,
            "trial_id": last.get("trial_id", Path(result.path).name),
            "status": final_status(last, errored=result.error is not None),
            "epochs": int(last.get("epoch", 0)),
            "time_s": float(last.get("time_total_s", float("nan"))),
            "error": _last_line(result.error),
        }
        rows += trial_rows(cfg, identity, last, class_names_in(last))
    return pd.DataFrame(rows)


def _last_line(error: BaseException | None) -> str:
    """The exception's own message: Ray wraps it under lines about the actor that ran it."""
    lines = [line for line in str(error or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
