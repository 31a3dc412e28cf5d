"""A finished sweep -> its report: tables (Markdown, LaTeX, CSV) and figures (PNG) in one folder.

    sweep = load_sweep("runs/ebhi_table1")  # or load_mlflow_sweep("ebhi_table1", folder)
    report = build_report(sweep, baseline="baseline")   # frames, and the files it wrote
    print(report.markdown)

Reads only the sweep folder's files (`results.parquet`, `epochs.parquet`,
`test_images.parquet`, `previews/`, `tunelab.json`), so it needs neither Ray nor the machine the
sweep ran on. On the test split, every interval counts the test cases as well as the replicates
(`analysis.uncertainty`); the resample count and seed are in the report.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import figures, tables, uncertainty
from analysis.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from analysis.errors import AnalysisError
from analysis.search_report import report_section as search_section
from analysis.stats import TEST_NAME
from analysis.uncertainty import Resampling
from tunelab import summary
from tunelab.results import (
    EPOCHS_FILE,
    PREVIEWS_FOLDER,
    RESULTS_FILE,
    SCORED_STATUSES,
    TEST_IMAGES_FILE,
    read_identity,
)
from tunelab.tracking.figures import prediction_grid, save_png

REPORT_FOLDER = "analysis"  # inside the sweep folder, and the artifact path in MLflow


@dataclass
class Sweep:
    """What a sweep left behind: one row per trial x threshold, one per trial x epoch, and
    each trial's prediction preview (trial id -> arrays)."""

    results: pd.DataFrame
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    previews: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)  # sweep_id, experiment, baseline
    path: Path | None = None
    test_images: pd.DataFrame = field(default_factory=pd.DataFrame)  # trial x test image


@dataclass
class Report:
    main: pd.DataFrame
    comparison: pd.DataFrame
    thresholds: pd.DataFrame
    classes: dict[str, pd.DataFrame]
    markdown: str
    files: list[Path]
    # test split with per-image scores only: arm intervals and P(best), rank shares
    arms: pd.DataFrame = field(default_factory=pd.DataFrame)
    ranks: pd.DataFrame = field(default_factory=pd.DataFrame)


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
    identity = read_identity(folder)
    images_path = folder / TEST_IMAGES_FILE
    # names stay text: a case "0012" must not become the number 12
    test_images = pd.read_parquet(images_path) if images_path.is_file() else pd.DataFrame()
    return Sweep(results, epochs, previews, identity, folder, test_images)


def default_baseline(sweep: Sweep) -> str:
    """The space's BASELINE as the sweep recorded it, else the first arm."""
    arms = tables.arm_names(sweep.results)
    recorded = sweep.identity.get("baseline", "")
    return recorded if recorded in arms else arms[0]


def best_arm(main: pd.DataFrame, metric: str = "iou") -> str:
    """The arm of `main_table` with the best mean metric over scored seeds (lowest where lower
    is better); the first arm when none has a score."""
    best = summary.best_arm(main, metric)
    return best if best is not None else str(summary.split_reference(main)[1]["arm"].iloc[0])


def build_report(
    sweep: Sweep,
    out: str | Path | None = None,
    baseline: str | None = None,
    arm: str | None = None,
    split: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Report:
    """Every table and figure of the sweep, written to `out` (default: <sweep>/analysis).

    `baseline` is what the paired comparisons are against (default: the space's BASELINE);
    `arm` is the arm of the threshold table (default: the best by mean validation IoU); `split`
    is what the tables score: "test" (the default when the sweep has test scores) or
    "validation". `resamples` and `seed` drive the bootstrap of the test split's intervals.
    """
    arms = tables.arm_names(sweep.results)
    for name, value in (("--baseline", baseline), ("--arm", arm)):
        if value is not None and value not in arms:
            raise AnalysisError(f"{name} {value!r} is not an arm of this sweep; arms: {arms}")
    if resamples < 100:
        raise AnalysisError(
            f"--bootstrap {resamples}: at least 100 resamples (default {DEFAULT_RESAMPLES})"
        )
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
    losses = _losses(sweep.results)
    searched = sweep.results  # the search views read validation, whatever `split` is
    # tables and figures list the baseline first, then the arms in the sweep's order
    sweep = dataclasses.replace(
        sweep,
        results=summary.on_split(_baseline_first(sweep.results, baseline), split),
        epochs=_baseline_first(sweep.epochs, baseline),
    )
    results = sweep.results
    arms = tables.arm_names(results)
    main = summary.main_table(results)
    if out is None:
        if sweep.path is None:
            raise AnalysisError("no output folder: pass out= (the sweep was not read from disk)")
        out = sweep.path / REPORT_FOLDER
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    metrics = summary.table_metrics(results)
    comparison = tables.comparison_table(results, baseline)
    thresholds = tables.threshold_table(results, arm)
    classes = tables.class_tables(results)
    how = Resampling(resamples, seed)
    images = pd.DataFrame()
    if split == "test" and not sweep.test_images.empty:
        images = uncertainty.scored_images(sweep.test_images, arms)
    arm_table = ranks = pd.DataFrame()
    case_sections = []
    if not images.empty:
        intervals = uncertainty.difference_intervals(images, arms, baseline, metrics, how)
        keys = list(zip(comparison["arm"], comparison["metric"], strict=True))
        bounds = [intervals.get(key, (math.nan, math.nan)) for key in keys]
        comparison.insert(6, "boot_low", [low for low, _ in bounds])
        comparison.insert(7, "boot_high", [high for _, high in bounds])
        arm_table = uncertainty.arm_table(images, arms, metrics, how)
        ranks = uncertainty.rank_table(images, arms, "iou", how)
        worst = uncertainty.worst_cases(images, arms, "iou")
        per_class = uncertainty.class_table(images, arms, "iou", how)
        case_sections = [
            (
                "arms",
                arm_table,
                "Arms with 95% intervals over test cases and replicates, and "
                "the share of resamples in which each is the best arm",
            ),
            ("ranks", ranks, "IoU rank of each arm: share of resamples at each rank"),
            (
                "worst_cases",
                worst,
                f"The {uncertainty.WORST_CASES} test cases of lowest IoU, per "
                "arm (mean over the case's images and the arm's replicates)",
            ),
            (
                "classes_test",
                per_class,
                "IoU per tumour class with 95% intervals over the class's test cases",
            ),
        ]
    files: list[Path] = []
    per_class_sections = [
        (f"classes_{_slug(k)}", v, f"{k} per tumour class") for k, v in classes.items()
    ]
    compared = f"Each arm minus {baseline}: {TEST_NAME}; p adjusted by Holm over the arms"
    if not images.empty:
        compared += "; and a 95% interval over test cases and replicates"
    sections = [
        ("main", main, "Arms: mean ± std over the replicates (seeds x folds) each rests on (n)"),
        ("comparison", comparison, compared),
        *case_sections,
        ("thresholds", thresholds, f"{arm} by decision threshold"),
        *per_class_sections,
    ]
    markdown = [f"Scores: {caption}.\n"]
    if not images.empty:
        markdown.append(f"Intervals over test cases: {how.describe()}.\n")
    markdown.append(findings(comparison, baseline))
    for stem, frame, title in sections:
        frame.to_csv(out / f"{stem}.csv", index=False)
        latex_caption = f"{title}. {caption}."
        (out / f"{stem}.tex").write_text(tables.format_latex(frame, caption=latex_caption))
        files += [out / f"{stem}.csv", out / f"{stem}.tex"]
        markdown.append(f"## {title}\n\n{summary.format_markdown(frame)}\n")
    markdown.append(_status_note(results))
    search_markdown, search_files = search_section(searched, sweep.identity, out, seed)
    markdown += [search_markdown] if search_markdown else []
    files += search_files
    files += _figures(sweep, main, comparison, ranks, metrics, losses, out)
    text = "\n".join(markdown)
    (out / "report.md").write_text(text)
    files.append(out / "report.md")
    return Report(main, comparison, thresholds, classes, text, files, arm_table, ranks)


SIGNIFICANCE = 0.05


def findings(comparison: pd.DataFrame, baseline: str, metric: str = "iou") -> str:
    """One line per arm on `metric`: its difference from the baseline, its intervals, and
    whether it is significant, judged by the Holm-adjusted p (never the raw one)."""
    rows = comparison[comparison["metric"] == metric]
    family = int(rows["p_value"].notna().sum())
    lines = [f"## Findings ({summary.HEADERS.get(metric, metric)} against {baseline})", ""]
    for row in rows.to_dict("records"):
        if math.isnan(row["mean_diff"]):
            lines.append(f"- {row['arm']}: no difference: {row['note']}")
            continue
        parts = [f"{row['mean_diff']:+.4f}"]
        if not math.isnan(row.get("boot_low", math.nan)):
            low, high = row["boot_low"], row["boot_high"]
            parts.append(f"95% CI over cases and replicates [{low:+.4f}, {high:+.4f}]")
        if math.isnan(row["p_holm"]):
            parts.append(f"n = {row['n']}: {row['note'] or 'no test'}")
            lines.append(f"- {row['arm']}: " + ", ".join(parts))
            continue
        verdict = "significant" if row["p_holm"] < SIGNIFICANCE else "not significant"
        parts.append(
            f"t-test p = {row['p_value']:.3g}, Holm-adjusted p = {row['p_holm']:.3g} "
            f"({family} comparisons): {verdict} at {SIGNIFICANCE}"
        )
        lines.append(f"- {row['arm']}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


def _losses(results: pd.DataFrame) -> dict[str, str]:
    """Arm -> the loss it trains (for learning curves: losses of different scales apart)."""
    if "train.loss" not in results:
        return {}
    return {str(a): str(t["train.loss"].iloc[0]) for a, t in results.groupby("arm", sort=False)}


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


def _figures(
    sweep: Sweep,
    main: pd.DataFrame,
    comparison: pd.DataFrame,
    ranks: pd.DataFrame,
    metrics: tuple[str, ...],
    losses: dict[str, str],
    out: Path,
) -> list[Path]:
    files = []
    bars = figures.metric_bars(main, metrics, summary.HEADERS)
    files.append(_save(bars, out / "metrics.png"))
    if not comparison.empty:
        forest = figures.forest(comparison, metrics, summary.HEADERS)
        files.append(_save(forest, out / "forest.png"))
    if not ranks.empty:
        files.append(_save(figures.rank_blobs(ranks, "IoU rank over resamples"), out / "ranks.png"))
    if not sweep.epochs.empty:
        threshold = _stop_threshold(sweep.results)
        curves = figures.learning_curves(sweep.epochs, threshold, losses)
        files.append(_save(curves, out / "learning_curves.png"))
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
