"""Which models predict: an arm's trials in a finished sweep folder, each with its config, its
normalisation and the weights the test set scored (best-validation or last).

A sweep folder holds `results.parquet` (one row per trial) and, per trial, Ray's folder
`<label>_s<seed>[_f<fold>]_<trial id>/` with its checkpoints; the last checkpoint of a trial is
the one its final report names, and it holds the tested weights (`tunelab.checkpoint`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunelab import checkpoint, summary
from tunelab.config import VALID_KEYS, TrialConfig
from tunelab.results import RESULTS_FILE, SCORED_STATUSES
from tunelab.tracking.layout import TAG_SWEEP_DIR, latest_sweep
from tunelab.tracking.store import tracking_uri

HEADLINE = "iou"  # the metric that picks the default arm


class PredictError(ValueError):
    """The sweep, arm, images or labels cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class TrialModel:
    trial_id: str
    arm: str
    seed: int
    fold: int
    cfg: TrialConfig
    mean: np.ndarray  # (C,) normalisation of the trial's training split, units of x / 255
    std: np.ndarray
    weights: dict[str, Any]  # the tested weights
    checkpoint: Path


def sweep_folder(sweep: str, mlflow_uri: str | None = None) -> Path:
    """A sweep folder as given, or the folder of an MLflow experiment's newest sweep (its parent
    run's `tunelab.sweep_dir` tag), which must be on this machine: checkpoints are not in MLflow."""
    if Path(sweep).is_dir():
        return Path(sweep)
    from mlflow.tracking import MlflowClient  # only for an experiment name

    uri = tracking_uri(mlflow_uri)
    try:
        parent = latest_sweep(MlflowClient(uri), sweep)
    except LookupError as error:
        raise PredictError(f"{sweep!r} is not a sweep folder, and {error} ({uri})") from None
    recorded = parent.data.tags.get(TAG_SWEEP_DIR, "")
    if not recorded:
        raise PredictError(
            f"experiment {sweep!r}: its sweep run {parent.info.run_id} does not record its "
            "folder (a sweep from before tunelab.sweep_dir was tagged); pass the folder"
        )
    if not Path(recorded).is_dir():
        raise PredictError(
            f"experiment {sweep!r}: its sweep folder {recorded} (with the checkpoints) is not "
            "on this machine; copy it here and pass its path"
        )
    return Path(recorded)


def read_results(folder: Path) -> pd.DataFrame:
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise PredictError(
            f"{folder}: no {RESULTS_FILE}; give a finished sweep's folder (runs/<space NAME>)"
        )
    return pd.read_parquet(path)


def best_arm(results: pd.DataFrame) -> str:
    """The arm with the best mean headline metric over its scored trials, on the test set when
    the sweep has one (the table the sweep printed)."""
    split = summary.default_split(results)
    best = summary.best_arm(summary.main_table(summary.on_split(results, split)), HEADLINE)
    if best is None:
        raise PredictError(
            "no trial of this sweep completed or converged: no model to predict with"
        )
    return best


def arm_models(folder: Path, arm: str | None = None, single: str | None = None) -> list[TrialModel]:
    """The models of `arm` (default: the best arm), one per completed or converged trial (all
    its seeds and folds), or the one trial `single` (a trial id)."""
    results = summary.primary_rows(read_results(folder))
    scored = results[results["status"].isin(SCORED_STATUSES)]
    with_models = [str(a) for a in dict.fromkeys(scored["arm"])]
    if single is not None:
        rows = results[results["trial_id"] == single]
        if rows.empty:
            ids = ", ".join(results["trial_id"].astype(str))
            raise PredictError(f"--single {single}: no such trial in {folder}; trials: {ids}")
        if rows["status"].iloc[0] not in SCORED_STATUSES:
            raise PredictError(
                f"--single {single}: the trial ended {rows['status'].iloc[0]}, without a trained "
                f"model; arms with models: {with_models}"
            )
    else:
        arm = arm or best_arm(results)
        if arm not in with_models:
            all_arms = [str(a) for a in dict.fromkeys(results["arm"])]
            why = "not an arm of this sweep" if arm not in all_arms else "no trial of it completed"
            raise PredictError(f"--arm {arm!r}: {why}; arms with models: {with_models}")
        rows = scored[scored["arm"] == arm]
    return [load_trial_model(folder, row) for row in rows.to_dict("records")]


def load_trial_model(folder: Path, row: dict[str, Any]) -> TrialModel:
    """One trial's model from its last checkpoint; PredictError names what is missing."""
    trial_id = str(row["trial_id"])
    trial_dirs = sorted(folder.glob(f"*_{trial_id}"))
    if not trial_dirs:
        raise PredictError(
            f"trial {trial_id} ({row['arm']}, seed {row['seed']}): its folder *_{trial_id} is "
            f"missing from {folder}; the sweep's checkpoints were moved or deleted"
        )
    saved = sorted(trial_dirs[0].glob("checkpoint_*"))
    if not saved or not (saved[-1] / checkpoint.STATE_FILE).is_file():
        raise PredictError(
            f"trial {trial_id} ({row['arm']}, seed {row['seed']}): no checkpoint with "
            f"{checkpoint.STATE_FILE} in {trial_dirs[0]}; its checkpoints were deleted"
        )
    last = saved[-1]
    report = json.loads((last / checkpoint.DATA_REPORT_FILE).read_text())
    return TrialModel(
        trial_id=trial_id,
        arm=str(row["arm"]),
        seed=int(row["seed"]),
        fold=int(row.get("fold", 0) or 0),
        cfg=config_from_row(row),
        mean=np.asarray(report["normalize_mean"], dtype=np.float64),
        std=np.asarray(report["normalize_std"], dtype=np.float64),
        weights=checkpoint.tested_weights(checkpoint.load_state(last)),
        checkpoint=last,
    )


def config_from_row(row: dict[str, Any]) -> TrialConfig:
    """The trial's TrialConfig from its results row (dotted columns; tuples comma-joined)."""
    defaults = TrialConfig().to_flat()
    values: dict[str, Any] = {}
    for key in VALID_KEYS:
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue  # absent, or None (the field's default)
        if isinstance(defaults[key], tuple) and isinstance(value, str):
            value = tuple(float(v) for v in value.split(","))
        values[key] = value.item() if isinstance(value, np.generic) else value
    return TrialConfig.from_dict(values)
