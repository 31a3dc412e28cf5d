"""Read a sweep back from MLflow, and log its report to the sweep's parent run."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from analysis.report import REPORT_FOLDER, AnalysisError, Report, Sweep, load_sweep
from tunelab.results import RESULTS_FILE
from tunelab.tracking.layout import TAG_SWEEP_ID, latest_sweep


def load_mlflow_sweep(
    experiment: str, folder: str | Path, uri: str | None = None, sweep_id: str | None = None
) -> Sweep:
    """Download the newest sweep of `experiment` (or sweep `sweep_id`) into `folder` and read it.

    The sweep's parent run holds the files of the sweep folder (results, epochs, previews),
    logged when the sweep ended; a sweep that never ended has none and is refused.
    """
    if uri and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise AnalysisError(
            f"{experiment!r} is not a sweep folder, and there is no MLflow store at {uri} "
            "to look it up in; pass the sweep's folder or --mlflow-uri"
        )
    client = MlflowClient(uri)
    try:
        parent = latest_sweep(client, experiment, sweep_id)
    except LookupError as error:
        raise AnalysisError(
            f"{experiment!r} is not a sweep folder, and {error} (tracking URI {uri})"
        ) from None
    run_id = parent.info.run_id
    logged = {item.path for item in client.list_artifacts(run_id)}
    if RESULTS_FILE not in logged:
        raise AnalysisError(
            f"sweep run {run_id} of experiment {experiment!r} has no {RESULTS_FILE}: "
            f"the sweep did not finish (status {parent.info.status}); resume it first"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for path in logged - {REPORT_FOLDER}:
        client.download_artifacts(run_id, path, str(folder))
    sweep = load_sweep(folder)
    sweep.identity.setdefault("sweep_id", parent.data.tags.get(TAG_SWEEP_ID, ""))
    sweep.identity.setdefault("experiment", experiment)
    return sweep


def log_report(report: Report, sweep: Sweep, uri: str | None = None) -> str:
    """Log every file of `report` under `analysis/` of the sweep's parent run; its run id.

    Raises AnalysisError if the sweep has no MLflow identity or its run cannot be found.
    """
    experiment, sweep_id = sweep.identity.get("experiment"), sweep.identity.get("sweep_id")
    if not experiment or not sweep_id:
        raise AnalysisError("the sweep folder records no MLflow experiment (no tunelab.json)")
    client = MlflowClient(uri)
    try:
        parent = latest_sweep(client, experiment, sweep_id)
    except LookupError as error:
        raise AnalysisError(f"{error} (tracking URI {client.tracking_uri})") from None
    for path in report.files:
        client.log_artifact(parent.info.run_id, str(path), artifact_path=REPORT_FOLDER)
    return parent.info.run_id
