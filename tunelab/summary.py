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
from collections.abc import Iterable, Mapping

import pandas as pd

from tunelab.metric_names import ALL_METRICS, BOUNDARY_METRICS, COUNT_METRICS, TEST_PREFIX
from tunelab.results import SCORED_STATUSES

SUMMARY_METRICS = ("iou", "dice", "pixel_error")
REFERENCE_ARM = "all foreground (reference)"
HEADERS = {
    "arm": "Arm",
    "class": "Class",
    "threshold": "Threshold",
    "metric": "Metric",
    # lower-is-better scores say so in their header
    **{name: f"{m.label}{'' if m.higher_is_better else ' ↓'}" for name, m in ALL_METRICS.items()},
    "time_s": "Time (s)",
    "unscored": "Not in the means: last validation IoU",
    "n": "n",
    "statuses": "Trials",
    "mean_diff": "Δ vs baseline",
    "ci": "95% CI (t, replicates)",
    "boot": "95% CI (cases x replicates)",
    "p_value": "p",
    "p_holm": "p (Holm)",
    "case_boot": "95% CI (cases)",
    "interval": "95% CI (cases x replicates)",
    "mean": "Mean",
    "p_best": "P(best)",
    "replicates": "Replicates",
    "cases": "Cases",
    "case": "Case",
    "images": "Images",
    "note": "Note",
}

SPLITS = ("test", "validation")


def has_test_scores(results: pd.DataFrame) -> bool:
    """Whether any trial of the sweep scored a test set."""
    return f"{TEST_PREFIX}iou" in results and bool(results[f"{TEST_PREFIX}iou"].notna().any())


def default_split(results: pd.DataFrame) -> str:
    """The test set when the sweep has test scores, else the validation split."""
    return "test" if has_test_scores(results) else "validation"


# each trial's validation IoU at its last reported epoch, kept on either split: what a pruned,
# diverged or failed trial (never averaged) is shown with
LAST_REPORTED = "last_val_iou"


def on_split(results: pd.DataFrame, split: str) -> pd.DataFrame:
    """The results with one split's scores under the plain names (`iou`, `iou/Normal`, ...), so
    every table is built the same way from either split."""
    if "iou" in results and LAST_REPORTED not in results:
        results = results.assign(**{LAST_REPORTED: results["iou"]})
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
    """IoU, Dice, pixel error, accuracy where it differs from 1 - pixel error (multi-class), and
    the boundary metrics (HD95, NSD) where the split has them (the test set)."""
    counted = (*SUMMARY_METRICS, "accuracy") if is_multiclass(results) else SUMMARY_METRICS
    boundary = [m for m in BOUNDARY_METRICS if m in results and results[m].notna().any()]
    return (*counted, *boundary)


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
    """Arm x (IoU, Dice, pixel error[, accuracy][, HD95, NSD], time): mean and std over the
    scored replicates.

    The first row is the all-foreground prediction (study A's "Random" row), scored on each
    replicate's own split (validation, or the shared test set) and averaged over replicates;
    multi-class results have none. Where an arm has trials that are not in its means (pruned,
    diverged, failed), `unscored` shows each one's last validation IoU and the epoch it ended at.
    """
    primary = primary_rows(results)
    columns = (*table_metrics(results), "time_s")
    reference = _reference_row(primary, table_metrics(results))
    rows = [reference] if reference["n"] else []  # multi-class has no all-foreground score
    for arm, trials in by_arm(primary):
        row = summarise_trials({"arm": arm}, trials, columns)
        row["unscored"] = _unscored(trials)
        rows.append(row)
    frame = summary_frame(rows)
    if not frame["unscored"].fillna("").astype(bool).any():
        frame = frame.drop(columns="unscored")
    return frame


def _unscored(trials: pd.DataFrame) -> str:
    """`pruned 0.7810 @ epoch 4; diverged @ epoch 7`: the trials not in the means, each with its
    last validation IoU (a number that no decision, and no other arm, is averaged with)."""
    notes = []
    for row in trials[~trials["status"].isin(SCORED_STATUSES)].to_dict("records"):
        score = row.get(LAST_REPORTED, row.get("iou", math.nan))  # not split yet: validation
        value = "" if _missing(score) else f" {score:.4f}"
        epoch = f" @ epoch {int(row['epochs'])}" if "epochs" in row else ""
        notes.append(f"{row['status']}{value}{epoch}")
    return "; ".join(notes)


def best_arm(main: pd.DataFrame, metric: str = "iou") -> str | None:
    """The arm of `main_table` with the best mean `metric` over its scored replicates (lowest
    where lower is better); None when no arm has a score."""
    _, arms = split_reference(main)
    scored = arms.dropna(subset=[f"{metric}_mean"])
    if scored.empty:
        return None
    higher_is_better = ALL_METRICS[metric].higher_is_better
    return str(scored.sort_values(f"{metric}_mean", ascending=not higher_is_better)["arm"].iloc[0])


def split_reference(table: pd.DataFrame) -> tuple[pd.Series | None, pd.DataFrame]:
    """`main_table` -> (its all-foreground row, or None; the arms' rows)."""
    is_reference = table["arm"] == REFERENCE_ARM
    reference = table[is_reference].iloc[0] if is_reference.any() else None
    return reference, table[~is_reference]


def summary_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows of `summarise_trials` as a frame: label, metrics, n, then the trials' statuses."""
    frame = pd.DataFrame(rows)
    tail = [c for c in ("n", "statuses", "unscored") if c in frame.columns]
    order = [c for c in frame.columns if c not in tail] + tail
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


def display_cells(
    table: pd.DataFrame, headers: Mapping[str, str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of strings: `X_mean`/`X_std` pairs become one "mean ± std" cell.
    `headers`: a header for a column (by its name in `table`) instead of the usual one."""
    columns = [c for c in table.columns if not c.endswith(("_std", "_high"))]
    header = [(headers or {}).get(c) or _header(c) for c in columns]
    rows = []
    for record in table.to_dict("records"):
        rows.append([_cell(column, record) for column in columns])
    return header, rows


def _header(column: str) -> str:
    if column.startswith("rank_"):
        return f"Rank {column.removeprefix('rank_')}"
    if column.endswith("_low"):  # an interval: `ci_low` and `ci_high` in one cell
        return HEADERS.get(column.removesuffix("_low"), column)
    return HEADERS.get(column.removesuffix("_mean"), column)


def _cell(column: str, record: dict[str, object]) -> str:
    value = record[column]
    digits = _digits(column, record)
    if column.endswith("_mean"):
        return _mean_std(value, record.get(column.replace("_mean", "_std")), digits)
    if column.endswith("_low"):
        low, high = value, record[column.replace("_low", "_high")]
        signed = column in ("ci_low", "boot_low")  # differences: signed
        form = f"+.{digits}f" if signed else f".{digits}f"
        return "-" if _missing(low) else f"[{low:{form}}, {high:{form}}]"
    if column == "mean_diff":
        return "-" if _missing(value) else f"{value:+.{digits}f}"
    if column in ("p_value", "p_holm"):
        return "-" if _missing(value) else f"{value:.3g}"
    if column == "metric":
        return HEADERS.get(str(value), str(value))
    if isinstance(value, float):
        return "-" if _missing(value) else f"{value:.{digits}f}"
    return "" if value is None else str(value)


def _digits(column: str, record: dict[str, object]) -> int:
    """Decimals: 1 for seconds, 2 for distances in pixels (HD95), 4 for scores in [0, 1]."""
    metric = str(record.get("metric", column))
    if column.startswith("time_s"):
        return 1
    if column == "p_best" or column.startswith("rank_"):  # shares of resamples
        return 2
    return 2 if column.startswith("hd95") or metric == "hd95" else 4


def _missing(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _mean_std(mean: object, std: object, digits: int) -> str:
    if not isinstance(mean, float) or math.isnan(mean):
        return "-"
    if isinstance(std, float) and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def format_markdown(table: pd.DataFrame, headers: Mapping[str, str] | None = None) -> str:
    """Render any table of this module as a Markdown table (`headers`: see `display_cells`)."""
    header, rows = display_cells(table, headers)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)
