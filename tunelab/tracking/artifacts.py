"""What a trial's MLflow run holds when the trial ends, however it ends: its learning curve,
the prediction grid of its last checkpoint, its per-class table, data report, per-image test
scores and, when it failed, the error."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunelab import checkpoint
from tunelab.metric_names import COUNT_METRICS
from tunelab.results import class_names_in, trial_rows
from tunelab.space import Study
from tunelab.tracking.figures import learning_curve, prediction_grid, save_png


def class_table(study: Study, params: dict[str, Any], last: dict[str, Any]) -> pd.DataFrame:
    """Per tumour class x threshold: the count metrics of the last epoch (validation split)."""
    cfg = study.trial_config(params)
    rows = []
    for row in trial_rows(cfg, {}, last, class_names_in(last)):
        for name in class_names_in(last):
            rows.append(
                {"class": name, "threshold": row["threshold"]}
                | {metric: row[f"{metric}/{name}"] for metric in COUNT_METRICS}
            )
    return pd.DataFrame(rows, columns=["class", "threshold", *COUNT_METRICS])


def error_text(trial: Any) -> str:
    """The traceback Ray kept for a failed trial."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text()
    return "the trial raised an error; Ray kept no error file"


def write_trial_artifacts(
    folder: Path, study: Study, trial: Any, history: pd.DataFrame, status: str
) -> None:
    """Write a Tune trial's end-of-run files into `folder`; `history` is its loss curves by
    epoch (columns epoch, train_loss, val_loss, trend)."""
    title = f"{study.arm_label(trial.config)}, seed {trial.config.get('seed')}: {status}"
    if len(history):
        save_png(learning_curve(history, title), folder / "learning_curve.png")
    last = trial.last_result or {}
    if class_names_in(last):
        class_table(study, trial.config, last).to_csv(folder / "per_class.csv", index=False)
    if status == "failed":
        (folder / "error.txt").write_text(error_text(trial))
    if trial.checkpoint is None:  # it failed before its first epoch ended
        return
    with trial.checkpoint.as_directory() as saved:
        saved = Path(saved)
        shutil.copy(saved / checkpoint.DATA_REPORT_FILE, folder / checkpoint.DATA_REPORT_FILE)
        if (saved / checkpoint.TEST_SCORES_FILE).is_file():
            shutil.copy(saved / checkpoint.TEST_SCORES_FILE, folder / checkpoint.TEST_SCORES_FILE)
        with np.load(saved / checkpoint.PREVIEW_FILE, allow_pickle=False) as preview:
            save_png(prediction_grid(preview, title), folder / "prediction_grid.png")
