"""A finished Ray Tune experiment -> the sweep folder's tables: one row per trial x threshold
(results.parquet), per trial x epoch (epochs.parquet) and per trial x test image
(test_images.parquet), with the same identity columns in each, plus each trial's last preview."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from ray import tune

from tunelab import checkpoint
from tunelab.epoch_report import is_epoch_value
from tunelab.metric_names import IMAGE_METRICS
from tunelab.results import class_names_in, error_message, final_status, trial_rows
from tunelab.space import Study

IDENTITY_COLUMNS = ("sweep", "arm", "seed", "fold", "trial_id", "status")
TEST_IMAGE_COLUMNS = (*checkpoint.TEST_NAME_COLUMNS, *IMAGE_METRICS)


def trial_identity(study: Study, result: tune.Result) -> dict[str, Any]:
    """The columns that name a trial in every table: sweep, arm, seed, fold, trial id, status."""
    params = result.config or {}
    last = result.metrics or {}
    cfg = study.trial_config(params)
    status = final_status(last, errored=result.error is not None)
    values = (
        study.name,
        study.arm_label(params),
        cfg.seed,
        cfg.data.fold,
        _trial_id(result),
        status,
    )
    return dict(zip(IDENTITY_COLUMNS, values, strict=True))


def results_frame(study: Study, grid: tune.ResultGrid) -> pd.DataFrame:
    """One row per trial x threshold; every trial appears, whatever its status."""
    rows: list[dict[str, Any]] = []
    for result in grid:
        last = result.metrics or {}
        identity = {
            **trial_identity(study, result),
            "epochs": int(last.get("epoch", 0)),
            "time_s": float(last.get("time_total_s", float("nan"))),
            "node_id": str(last.get("node_id", "")),
            "error": error_message(str(result.error or "")),
        }
        cfg = study.trial_config(result.config or {})
        rows += trial_rows(cfg, identity, last, class_names_in(last))
    return pd.DataFrame(rows)


def epochs_frame(study: Study, grid: tune.ResultGrid) -> pd.DataFrame:
    """One row per trial x epoch: losses, trend and validation metrics, for learning curves."""
    frames = []
    for result in grid:
        history = result.metrics_dataframe
        if history is None or "epoch" not in history:
            continue  # failed before its first epoch
        columns = [c for c in history if is_epoch_value(c)]
        # a resumed trial repeats the epochs after its checkpoint; keep what MLflow keeps
        frame = history[columns].drop_duplicates("epoch")
        identity = pd.DataFrame([trial_identity(study, result)] * len(frame), index=frame.index)
        frames.append(pd.concat([identity, frame], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def collect_checkpoint_files(study: Study, grid: tune.ResultGrid, previews: Path) -> pd.DataFrame:
    """From each trial's last checkpoint: its prediction preview, copied to
    `<previews>/<trial id>.npz`, and its per-image test scores, returned as one frame (one row
    per trial x test image, with the trial's identity and tested epoch)."""
    previews.mkdir(exist_ok=True)
    frames = []
    for result in grid:
        if result.checkpoint is None:
            continue
        with result.checkpoint.as_directory() as saved:
            preview = Path(saved) / checkpoint.PREVIEW_FILE
            shutil.copy(preview, previews / f"{_trial_id(result)}.npz")
            frame = checkpoint.read_test_scores(Path(saved))
        if frame is None:  # no test set, or the trial ended without a trained model
            continue
        identity = trial_identity(study, result)
        identity["checkpoint_epoch"] = (result.metrics or {}).get("checkpoint_epoch")
        frames.append(pd.concat([pd.DataFrame([identity] * len(frame)), frame], axis=1))
    if not frames:  # no trial scored a test set: the same columns, no rows
        columns = [*IDENTITY_COLUMNS, "checkpoint_epoch", *TEST_IMAGE_COLUMNS]
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def keep_tested_checkpoints(grid: tune.ResultGrid) -> None:
    """Leave each trial that ended without an error one checkpoint, its last, holding only the
    weights its test set scored (`checkpoint.tested_state`): what prediction reads, without the
    optimizer state or the earlier checkpoint kept for --resume. A failed trial keeps all, so
    `--resume` can retry it. Works on any storage Ray wrote to; the new state replaces the old
    by a rename, so an interruption leaves one or the other, whole."""
    for result in grid:
        last = result.checkpoint
        if last is None or result.error is not None:
            continue
        with last.as_directory() as saved:
            state = checkpoint.tested_state(checkpoint.load_state(Path(saved)))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        target = f"{last.path}/{checkpoint.STATE_FILE}"
        with last.filesystem.open_output_stream(f"{target}.partial") as out:
            out.write(buffer.getvalue())
        last.filesystem.move(f"{target}.partial", target)
        for older, _ in result.best_checkpoints or []:
            if older.path != last.path:
                older.filesystem.delete_dir(older.path)


def _trial_id(result: tune.Result) -> str:
    return str((result.metrics or {}).get("trial_id", Path(result.path).name))
