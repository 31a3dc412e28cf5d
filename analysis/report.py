"""A finished sweep -> its report: tables (Markdown, LaTeX, CSV) and figures (PNG) in one folder.

    sweep = load_sweep("runs/ebhi_table1")  # or load_mlflow_sweep("ebhi_table1", folder)
    report = build_report(sweep, baseline="baseline")   # frames, and the files it wrote
    print(report.markdown)

Reads only the sweep folder's files (`results.parquet`, `epochs.parquet`, `previews/`,
`tunelab.json`), so it needs neither Ray nor the machine the sweep ran on.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import figures, tables
from analysis.stats import TEST_NAME
from tunelab import summary
from tunelab.results import (
    EPOCHS_FILE,
    IDENTITY_FILE,
    PREVIEWS_FOLDER,
    RESULTS_FILE,
    SCORED_STATUSES,
)
from tunelab.tracking.figures import prediction_grid, save_png

REPORT_FOLDER = "analysis"  # inside the sweep folder, and the artifact path in MLflow


class AnalysisError(ValueError):
    """The sweep cannot be analysed as asked (missing file, unknown arm); the message says why."""


@dataclass
class Sweep:
    """What a sweep left behind: one row per trial x threshold, one per trial x epoch, and
    each trial's prediction preview (trial id -> arrays)."""

    results: pd.DataFrame
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    previews: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)  # sweep_id, experiment, baseline
    path: Path | None = None


@dataclass
class Report:
    main: pd.DataFrame
    comparison: pd.DataFrame
    thresholds: pd.DataFrame
    classes: dict[str, pd.DataFrame]
    markdown: str
    files: list[Path]


def load_sweep(folder: str | Path) -> Sweep:
    """Read a sweep folder (what `python -m tunelab.sweep` or `bench/reproduce.py` wrote)."""
    folder = Path(folder)
    results_path = folder / RESULTS_FILE
    if not results_path.is_file():
        raise AnalysisError(
            f"{folder}: no {RESULTS_FILE}; give the sweep's folder (e.g. runs/<space NAME>), "
            "written when the sweep ends"
        )
    results = pd.read_parquet(results_path)
    missing = {"arm", "seed", "status", "threshold", "primary"} - set(results.columns)
    if missing:
        raise AnalysisError(
            f"{results_path}: not a tunelab results table (lacks {sorted(missing)})"
        )
    if results.empty:
        raise AnalysisError(f"{results_path}: no trials in it")
    epochs_path = folder / EPOCHS_FILE
    epochs = pd.read_parquet(epochs_path) if epochs_path.is_file() else pd.DataFrame()
    previews = {}
    for path in sorted((folder / PREVIEWS_FOLDER).glob("*.npz")):
        with np.load(path, allow_pickle=False) as arrays:
            previews[path.stem] = {name: arrays[name] for name in arrays.files}
    identity_path = folder / IDENTITY_FILE
    identity = json.loads(identity_path.read_text()) if identity_path.is_file() else {}
    return Sweep(results, epochs, previews, identity, folder)


def default_baseline(sweep: Sweep) -> str:
    """The space's BASELINE as the sweep recorded it, else the first arm."""
    arms = tables.arm_names(sweep.results)
    recorded = sweep.identity.get("baseline", "")
    return recorded if recorded in arms else arms[0]


def best_arm(main: pd.DataFrame, metric: str = "iou") -> str:
    """The arm of `main_table` with the best mean metric over scored seeds (pixel error:
    lowest); the first arm when none has a score."""
    _, arms = summary.split_reference(main)
    scored = arms.dropna(subset=[f"{metric}_mean"])
    if scored.empty:
        return str(arms["arm"].iloc[0])
    order = scored.sort_values(f"{metric}_mean", ascending=metric == "pixel_error")
    return str(order["arm"].iloc[0])


def build_report(
    sweep: Sweep,
    out: str | Path | None = None,
    baseline: str | None = None,
    arm: str | None = None,
    split: str | None = None,
) -> Report:
    """Every table and figure of the sweep, written to `out` (default: <sweep>/analysis).

    `baseline` is what the paired comparisons are against (default: the space's BASELINE);
    `arm` is the arm of the threshold table (default: the best by mean validation IoU); `split`
    is what the tables score: "test" (the default when the sweep has test scores) or
    "validation".
    """
    arms = tables.arm_names(sweep.results)
    for name, value in (("--baseline", baseline), ("--arm", arm)):
        if value is not None and value not in arms:
            raise AnalysisError(f"{name} {value!r} is not an arm of this sweep; arms: {arms}")
    split = split or summary.default_split(sweep.results)
    if split == "test" and not summary.has_test_scores(sweep.results):
        raise AnalysisError(
            "--split test: no trial of this sweep scored a test set (data.test_fraction = 0, "
            "or none completed); use --split validation"
        )
    caption = summary.split_caption(sweep.results, split)
    # the threshold table's arm is a choice: made on validation, never on the test set
    arm = arm or best_arm(summary.main_table(summary.on_split(sweep.results, "validation")))
    baseline = baseline or default_baseline(sweep)
    # tables and figures list the baseline first, then the arms in the sweep's order
    sweep = dataclasses.replace(
        sweep,
        results=summary.on_split(_baseline_first(sweep.results, baseline), split),
        epochs=_baseline_first(sweep.epochs, baseline),
    )
    results = sweep.results
    main = summary.main_table(results)
    if out is None:
        if sweep.path is None:
            raise AnalysisError("no output folder: pass out= (the sweep was not read from disk)")
        out = sweep.path / REPORT_FOLDER
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    comparison = tables.comparison_table(results, baseline)
    thresholds = tables.threshold_table(results, arm)
    classes = tables.class_tables(results)
    files: list[Path] = []
    per_class = [(f"classes_{_slug(k)}", v, f"{k} per tumour class") for k, v in classes.items()]
    sections = [
        ("main", main, "Arms: mean ± std over the replicates (seeds x folds) each rests on (n)"),
        ("comparison", comparison, f"Each arm minus {baseline}: {TEST_NAME}"),
        ("thresholds", thresholds, f"{arm} by decision threshold"),
        *per_class,
    ]
    markdown = [f"Scores: {caption}.\n"]
    for stem, frame, title in sections:
        frame.to_csv(out / f"{stem}.csv", index=False)
        latex_caption = f"{title}. {caption}."
        (out / f"{stem}.tex").write_text(tables.format_latex(frame, caption=latex_caption))
        files += [out / f"{stem}.csv", out / f"{stem}.tex"]
        markdown.append(f"## {title}\n\n{summary.format_markdown(frame)}\n")
    markdown.append(_status_note(results))
    files += _figures(sweep, main, out)
    text = "\n".join(markdown)
    (out / "report.md").write_text(text)
    files.append(out / "report.md")
    return Report(main, comparison, thresholds, classes, text, files)


def _baseline_first(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame.sort_values("arm", key=lambda arms: arms != baseline, kind="stable")


def _status_note(results: pd.DataFrame) -> str:
    primary = summary.primary_rows(results)
    unscored = primary[~primary["status"].isin(SCORED_STATUSES)]
    if unscored.empty:
        return "Every trial completed or converged; all are in the means.\n"
    lines = ["Not in the means (shown in the Trials column):", ""]
    for row in unscored.itertuples():
        error = getattr(row, "error", "") or ""
        fold = f", fold {row.fold}" if getattr(row, "fold", 0) else ""
        lines.append(
            f"- {row.arm}, seed {row.seed}{fold}: {row.status}" + (f" ({error})" if error else "")
        )
    return "\n".join(lines) + "\n"


def _figures(sweep: Sweep, main: pd.DataFrame, out: Path) -> list[Path]:
    files = []
    metrics = summary.table_metrics(sweep.results)
    bars = figures.metric_bars(main, metrics, summary.HEADERS)
    files.append(_save(bars, out / "metrics.png"))
    if not sweep.epochs.empty:
        threshold = _stop_threshold(sweep.results)
        files.append(
            _save(figures.learning_curves(sweep.epochs, threshold), out / "learning_curves.png")
        )
    for arm, trial_id in _preview_trials(sweep).items():
        grid = prediction_grid(sweep.previews[trial_id], title=f"{arm} ({trial_id})")
        files.append(_save(grid, out / f"predictions_{_slug(arm)}.png"))
    return files


def _preview_trials(sweep: Sweep) -> dict[str, str]:
    """Per arm, the trial whose preview to draw: its first scored seed that has one."""
    chosen: dict[str, str] = {}
    if "trial_id" not in sweep.results:
        return chosen
    primary = summary.primary_rows(sweep.results).sort_values("seed")
    for row in primary[primary["status"].isin(SCORED_STATUSES)].itertuples():
        if row.arm not in chosen and row.trial_id in sweep.previews:
            chosen[str(row.arm)] = str(row.trial_id)
    return chosen


def _stop_threshold(results: pd.DataFrame) -> float:
    if "stop.threshold" in results and results["stop.threshold"].notna().any():
        return float(results["stop.threshold"].dropna().iloc[0])
    return math.nan


def _save(fig: Figure, path: Path) -> Path:
    save_png(fig, path)
    return path


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)
