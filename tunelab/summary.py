"""The sweep's headline table: each arm's mean ± std over its scored replicates, on the test
split when the sweep has one, with a caption that says which split and which model.

`python -m tunelab.sweep` prints it, and `analysis` builds every other table of a paper on the
same functions (tunelab never imports analysis). Every table averages only trials that ended
with a trained model (completed or converged) and says how many replicates each number rests on;
`statuses` lists the fate of every trial, so a pruned, diverged or failed seed is shown, never
silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from tunelab.metric_names import ALL_METRICS, COUNT_METRICS, TEST_PREFIX
from tunelab.results import SCORED_STATUSES

SUMMARY_METRICS = ("iou", "dice", "pixel_error")
REFERENCE_ARM = "all foreground (reference)"
HEADERS = {
    "arm": "Arm",
    "class": "Class",
    "threshold": "Threshold",
    "metric": "Metric",
    **{name: metric.label for name, metric in ALL_METRICS.items()},
    "time_s": "Time (s)",
    "n": "n",
    "statuses": "Trials",
    "mean_diff": "Δ vs baseline",
    "ci": "95% CI",
    "p_value": "p",
    "note": "Note",
}

SPLITS = ("test", "validation")


def has_test_scores(results: pd.DataFrame) -> bool:
    """Whether any trial of the sweep scored a test set."""
    return f"{TEST_PREFIX}iou" in results and bool(results[f"{TEST_PREFIX}iou"].notna().any())


def default_split(results: pd.DataFrame) -> str:
    """The test set when the sweep has test scores, else the validation split."""
    return "test" if has_test_scores(results) else "validation"


def on_split(results: pd.DataFrame, split: str) -> pd.DataFrame:
    """The results with one split's scores under the plain names (`iou`, `iou/Normal`, ...), so
    every table is built the same way from either split."""
    tested = [c for c in results.columns if c.startswith(TEST_PREFIX)]
    if split == "validation":
        return results.drop(columns=tested)
    if split != "test":
        raise ValueError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    # every validation score goes, also one without a test twin (a class the test set lacks)
    validation = [c for c in results.columns if _is_score(c)]
    plain = {c: c.removeprefix(TEST_PREFIX) for c in tested}
    return results.drop(columns=validation).rename(columns=plain)


def _is_score(column: str) -> bool:
    """A validation score's column: `iou`, `iou/<class>`, `iou_t0.3`, `foreground_iou_all`."""
    name = column.split("/", 1)[0]
    return name in COUNT_METRICS or name.startswith("foreground_")


def split_caption(results: pd.DataFrame, split: str) -> str:
    """What a table's numbers are: which split, and the model of which epoch."""
    if split == "test":
        checkpoints = _config_values(results, "eval.checkpoint")
        model = {
            "best": "the best-validation epoch's model (eval.checkpoint = best)",
            "last": "the last epoch's model (eval.checkpoint = last)",
        }
        which = "; ".join(model.get(c, c) for c in checkpoints) or "the tested model"
        return f"Test set ({_test_source(results)}), scored once per trial with {which}"
    if has_test_scores(results):
        return (
            "Validation split at each trial's last epoch; it also stopped, pruned and selected "
            "the trials, so it is optimistic (the test set is unbiased)"
        )
    why = (
        "no test set: data.test_fraction = 0"
        if "0.0" in _config_values(results, "data.test_fraction")
        else "no trial scored the test set"
    )
    return (
        "Validation split at each trial's last epoch, the split that also stopped, pruned and "
        f"selected the trials ({why})"
    )


def _test_source(results: pd.DataFrame) -> str:
    roots = [r for r in _config_values(results, "data.test_root") if r]
    if roots:
        return "external: " + ", ".join(roots)
    seeds = ", ".join(_config_values(results, "data.test_seed")) or "?"
    return f"held-out cases, data.test_seed = {seeds}"


def _config_values(results: pd.DataFrame, key: str) -> list[str]:
    if key not in results:
        return []
    return [str(v) for v in dict.fromkeys(results[key].dropna())]


def primary_rows(results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: the trial's first (reported) threshold."""
    return results[results["primary"]]


def is_multiclass(results: pd.DataFrame) -> bool:
    return bool((results["threshold"] == "argmax").any())


def table_metrics(results: pd.DataFrame) -> tuple[str, ...]:
    """IoU, Dice, pixel error, and accuracy where it differs from 1 - pixel error (multi-class)."""
    return (*SUMMARY_METRICS, "accuracy") if is_multiclass(results) else SUMMARY_METRICS


def summarise_trials(
    label: dict[str, object], trials: pd.DataFrame, columns: Iterable[str]
) -> dict:
    """Mean and sample std of each column over the scored trials, n, and every trial's status."""
    scored = trials[trials["status"].isin(SCORED_STATUSES)]
    row: dict[str, object] = dict(label)
    for column in columns:
        values = scored[column].dropna()
        row[f"{column}_mean"] = values.mean() if len(values) else math.nan
        row[f"{column}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
    row["n"] = len(scored)
    counts = trials["status"].value_counts()
    row["statuses"] = ", ".join(f"{count} {status}" for status, count in counts.items())
    return row


def main_table(results: pd.DataFrame) -> pd.DataFrame:
    """Arm x (IoU, Dice, pixel error[, accuracy], time): mean and std over the scored seeds.

    The first row is the all-foreground prediction (study A's "Random" row), scored on each
    replicate's own split (validation, or the shared test set) and averaged over replicates;
    multi-class results have none.
    """
    primary = primary_rows(results)
    columns = (*table_metrics(results), "time_s")
    reference = _reference_row(primary, table_metrics(results))
    rows = [reference] if reference["n"] else []  # multi-class has no all-foreground score
    rows += [summarise_trials({"arm": arm}, trials, columns) for arm, trials in by_arm(primary)]
    return summary_frame(rows)


def split_reference(table: pd.DataFrame) -> tuple[pd.Series | None, pd.DataFrame]:
    """`main_table` -> (its all-foreground row, or None; the arms' rows)."""
    is_reference = table["arm"] == REFERENCE_ARM
    reference = table[is_reference].iloc[0] if is_reference.any() else None
    return reference, table[~is_reference]


def summary_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows of `summarise_trials` as a frame: label, metrics, n, then the trials' statuses."""
    frame = pd.DataFrame(rows)
    order = [c for c in frame.columns if c not in ("n", "statuses")] + ["n", "statuses"]
    return frame[order]


def by_arm(frame: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    return ((str(arm), trials) for arm, trials in frame.groupby("arm", sort=False))


def _reference_row(primary: pd.DataFrame, metrics: Iterable[str]) -> dict[str, object]:
    """All-foreground scores: one value per replicate (every arm of a seed and fold shares its
    split)."""
    row: dict[str, object] = {"arm": REFERENCE_ARM, "statuses": ""}
    per_seed = None
    for metric in metrics:
        column = f"foreground_{metric}_all"
        if column not in primary:
            continue
        # first non-NaN: any arm's report
        per_seed = primary.groupby(replicate_columns(primary))[column].first()
        row[f"{metric}_mean"] = per_seed.mean()
        row[f"{metric}_std"] = per_seed.std(ddof=1) if per_seed.notna().sum() > 1 else math.nan
    row["n"] = 0 if per_seed is None else int(per_seed.notna().sum())
    return row


def replicate_columns(results: pd.DataFrame) -> list[str]:
    """What pairs trials across arms: the seed, and the fold where the sweep has FOLDS."""
    return ["seed", "fold"] if "fold" in results else ["seed"]


def display_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of strings: `X_mean`/`X_std` pairs become one "mean ± std" cell."""
    columns = [c for c in table.columns if not c.endswith(("_std", "_high"))]
    header = [_header(c) for c in columns]
    rows = []
    for record in table.to_dict("records"):
        rows.append([_cell(column, record) for column in columns])
    return header, rows


def _header(column: str) -> str:
    if column == "ci_low":
        return HEADERS["ci"]
    return HEADERS.get(column.removesuffix("_mean"), column)


def _cell(column: str, record: dict[str, object]) -> str:
    value = record[column]
    if column.endswith("_mean"):
        digits = 1 if column.startswith("time_s") else 4
        return _mean_std(value, record.get(column.replace("_mean", "_std")), digits)
    if column == "ci_low":
        low, high = value, record["ci_high"]
        return "-" if _missing(low) else f"[{low:+.4f}, {high:+.4f}]"
    if column == "mean_diff":
        return "-" if _missing(value) else f"{value:+.4f}"
    if column == "p_value":
        return "-" if _missing(value) else f"{value:.3g}"
    if column == "metric":
        return HEADERS.get(str(value), str(value))
    return "" if value is None or _missing(value) else str(value)


def _missing(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _mean_std(mean: object, std: object, digits: int) -> str:
    if not isinstance(mean, float) or math.isnan(mean):
        return "-"
    if isinstance(std, float) and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def format_markdown(table: pd.DataFrame) -> str:
    """Render any table of this module as a Markdown table."""
    header, rows = display_cells(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)
