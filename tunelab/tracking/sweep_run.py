"""The sweep's parent run: opened with the study's settings and the space file, tagged with the
code's commit like every run of the sweep, and closed with the sweep's files and status."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from tunelab.space import Study
from tunelab.tracking.layout import TAG_ROLE, TAG_STATUS, TAG_SWEEP_ID, experiment_id, find_runs

MAX_PARAMS = 100  # MLflow's limit per log_batch call


def git_commit() -> dict[str, str]:
    """The commit of the code that runs (and whether it has uncommitted changes), as tags."""
    repo = Path(__file__).resolve().parents[2]
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


def new_run(
    client: MlflowClient,
    experiment: str,
    study: Study,
    sweep_id: str,
    name: str,
    role: str,
    tags: dict[str, str],
) -> str:
    """A run of the sweep (`role` "sweep" or "trial") with its identifying tags; its id."""
    run = client.create_run(
        experiment,
        run_name=name,
        tags={
            TAG_ROLE: role,
            TAG_SWEEP_ID: sweep_id,
            "mlflow.source.name": str(study.path),
            **tags,
        },
    )
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, values: dict[str, Any]) -> None:
    """Params in batches of MLflow's limit; tuples as comma-separated values."""
    params = [
        Param(key, ",".join(map(str, value)) if isinstance(value, tuple) else str(value))
        for key, value in values.items()
    ]
    for start in range(0, len(params), MAX_PARAMS):
        client.log_batch(run_id, params=params[start : start + MAX_PARAMS])


def open_sweep_run(
    client: MlflowClient, experiment: str, study: Study, sweep_id: str, tags: dict[str, str]
) -> str:
    """The parent run of a new sweep, with the study's settings as params and the space file."""
    run_id = new_run(client, experiment, study, sweep_id, f"{study.name} sweep", "sweep", tags)
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
    log_params(client, run_id, settings)
    if study.path.is_file():  # the space itself, to rerun it exactly
        client.log_artifact(run_id, str(study.path))
    return run_id


def end_sweep(sweep_id: str, experiment: str, files: Iterable[Path], status: str) -> str:
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
