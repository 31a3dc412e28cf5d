"""A finished trial's last report -> rows of the sweep's results table (one per threshold).

Pure functions of plain dicts, so the sweep, the tests and analysis share one layout:
identity columns (sweep, arm, seed, trial_id, status, epochs, time_s), the trial's flat config
(dotted names, as in the space and in MLflow), `threshold` ("0.5", "otsu", or "argmax" for
multi-class), `primary` (the trial's first threshold, the one tables report), the validation
metrics of the last epoch at that threshold and the same per tumour class (`iou/Normal`), and
the test set's (`test_iou`, `test_iou/Normal`, with `test_hd95` and `test_nsd` on the primary
row) by the model of `checkpoint_epoch`. Test columns are NaN for a trial without test scores:
pruned, diverged or failed, or a sweep without a test set.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tunelab.config import TrialConfig
from tunelab.metric_names import BOUNDARY_METRICS, COUNT_METRICS, TEST_PREFIX, VAL_PREFIX

# the sweep folder's files, read by analysis without Ray
RESULTS_FILE = "results.parquet"  # one row per trial x threshold
EPOCHS_FILE = "epochs.parquet"  # one row per trial x epoch
TABLE_FILE = "results.md"  # the table the sweep printed
TEST_IMAGES_FILE = "test_images.parquet"  # one row per trial x test image
PREVIEWS_FOLDER = "previews"  # <trial_id>.npz: each trial's last prediction preview
IDENTITY_FILE = "tunelab.json"  # the sweep's id and MLflow experiment, read back by --resume

# statuses whose numbers describe a trained model; the rest are shown, never averaged in
SCORED_STATUSES = ("completed", "converged")


def read_identity(folder: Path) -> dict[str, str]:
    """A sweep folder's IDENTITY_FILE: its id, MLflow experiment and store, baseline (empty
    where the folder has none)."""
    path = folder / IDENTITY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def final_status(last: dict[str, Any], errored: bool) -> str:
    """The one status a trial ends with, from its last report and whether Ray saw it raise."""
    if errored:
        return "failed"
    reported = last.get("status")
    if reported in ("completed", "converged", "diverged"):
        return str(reported)
    return "pruned"  # stopped by the scheduler while still improving


def threshold_suffixes(cfg: TrialConfig) -> dict[str, str]:
    """Threshold label -> metric-name suffix, in the naming of `metrics.score`."""
    if cfg.data.task == "multiclass":
        return {"argmax": ""}
    suffixes = {f"{t:g}": f"_t{t:g}" for t in cfg.eval.thresholds}
    if cfg.eval.otsu:
        suffixes["otsu"] = "_otsu"
    return suffixes


def trial_rows(
    cfg: TrialConfig,
    identity: dict[str, Any],
    last: dict[str, Any],
    class_names: list[str],
) -> list[dict[str, Any]]:
    """One row per evaluation threshold of a trial; metrics are NaN where none were reported."""
    config = {
        key: ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else value
        for key, value in cfg.to_flat().items()
    }
    val_classes = class_names
    test_classes = class_names_in(last, TEST_PREFIX)
    rows = []
    for index, (label, suffix) in enumerate(threshold_suffixes(cfg).items()):
        row: dict[str, Any] = {**identity, **config, "threshold": label, "primary": index == 0}
        row["checkpoint_epoch"] = _number(last.get("checkpoint_epoch"))
        # what scoring the test set cost
        row["time_test_s"] = _number(last.get(f"{TEST_PREFIX}seconds"))
        for column, report, names in (
            ("", VAL_PREFIX, val_classes),  # results columns: validation plain, test prefixed
            (TEST_PREFIX, TEST_PREFIX, test_classes),
        ):
            for metric in COUNT_METRICS:
                everywhere = f"foreground_{metric}_all"
                row[f"{column}{everywhere}"] = _number(last.get(f"{report}{everywhere}"))
                row[f"{column}{metric}"] = _number(last.get(f"{report}{metric}{suffix}"))
                for name in names:
                    value = last.get(f"{report}{metric}{suffix}/{name}")
                    row[f"{column}{metric}/{name}"] = _number(value)
        for metric in BOUNDARY_METRICS:
            for name in ("", *(f"/{n}" for n in test_classes)):
                value = last.get(f"{TEST_PREFIX}{metric}{name}") if index == 0 else None
                row[f"{TEST_PREFIX}{metric}{name}"] = _number(value)
        rows.append(row)
    return rows


def class_names_in(last: dict[str, Any], split: str = VAL_PREFIX) -> list[str]:
    """The tumour classes a report has per-class metrics for (`val_iou/Normal` -> Normal), for
    the validation split or, with split "test_", the test set (an external one has its own)."""
    prefix = f"{split}iou/"
    return sorted(key.removeprefix(prefix) for key in last if key.startswith(prefix))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def error_message(text: str) -> str:
    """The exception's own message: Ray wraps it under lines about the actor that ran it."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
