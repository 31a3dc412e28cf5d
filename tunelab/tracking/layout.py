"""How a sweep is laid out in MLflow (an experiment, a parent run, a nested run per trial, and
their `tunelab.*` tags), and how to find its runs again.

Shared by the tracker, which writes the runs, and analysis, which reads them back; it imports
neither Ray nor torch, nor MLflow itself (callers pass their client).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the sweep CLI imports this before validating a space: keep it light
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

TAG_ROLE = "tunelab.role"  # "sweep" (the parent run) or "trial"
TAG_SWEEP_ID = "tunelab.sweep_id"
TAG_TRIAL_ID = "tunelab.trial_id"
TAG_ARM = "tunelab.arm"
TAG_SEED = "tunelab.seed"
TAG_FOLD = "tunelab.fold"
TAG_STATUS = "tunelab.status"  # running, then completed / converged / pruned / diverged / failed
TAG_REASON = "tunelab.reason"  # why a trial failed or diverged
TAG_NODE = "tunelab.node_id"
TAG_RETRIES = "tunelab.retries"
TAG_SWEEP_DIR = "tunelab.sweep_dir"  # the parent run's: where the sweep folder was written


def find_runs(
    client: MlflowClient, experiment_id: str, sweep_id: str, role: str, extra: str = ""
) -> Iterator[Run]:
    """The runs of one sweep with one role (and the `extra` filter), whatever their status."""
    query = f"tags.`{TAG_SWEEP_ID}` = '{sweep_id}' and tags.`{TAG_ROLE}` = '{role}'"
    query += f" and {extra}" if extra else ""
    token = None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # a training experiment: the UI opens on its runs table, not on GenAI traces
        return client.create_experiment(
            name, tags={"mlflow.experimentKind": "custom_model_development"}
        )
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def latest_sweep(client: MlflowClient, experiment: str, sweep_id: str | None = None) -> Run:
    """The parent run of `sweep_id`, or of the experiment's newest sweep; LookupError if none."""
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage == "deleted":
        names = [e.name for e in client.search_experiments()]
        raise LookupError(f"no MLflow experiment {experiment!r}; experiments: {names}")
    query = f"tags.`{TAG_ROLE}` = 'sweep'"
    if sweep_id:
        query += f" and tags.`{TAG_SWEEP_ID}` = '{sweep_id}'"
    runs = client.search_runs(
        [found.experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"]
    )
    if not runs:
        which = f"sweep {sweep_id!r}" if sweep_id else "a sweep run"
        raise LookupError(f"experiment {experiment!r} has no {which}")
    return runs[0]
