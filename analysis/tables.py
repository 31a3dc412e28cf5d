"""Results -> the tables a paper prints, as pandas frames, and their Markdown and LaTeX.

Every table averages only trials that ended with a trained model (completed or converged) and
says how many seeds each number rests on; `statuses` lists the fate of every trial, so a pruned,
diverged or failed seed is shown, never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from analysis.stats import paired_comparison
from tunelab.results import METRICS, SCORED_STATUSES, TEST_PREFIX

SUMMARY_METRICS = ("iou", "dice", "pixel_error")
REFERENCE_ARM = "all foreground (reference)"
HEADERS = {
    "arm": "Arm",
    "class": "Class",
    "threshold": "Threshold",
    "metric": "Metric",
    "iou": "IoU",
    "dice": "Dice",
    "pixel_error": "Pixel error",
    "accuracy": "Accuracy",
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
    return name in METRICS or name.startswith("foreground_")


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


def arm_names(results: pd.DataFrame) -> list[str]:
    """The sweep's arms, in the order of the results."""
    return [str(arm) for arm in dict.fromkeys(results["arm"])]


def is_multiclass(results: pd.DataFrame) -> bool:
    return bool((results["threshold"] == "argmax").any())


def table_metrics(results: pd.DataFrame) -> tuple[str, ...]:
    """IoU, Dice, pixel error, and accuracy where it differs from 1 - pixel error (multi-class)."""
    return (*SUMMARY_METRICS, "accuracy") if is_multiclass(results) else SUMMARY_METRICS


def _summarise(label: dict[str, object], trials: pd.DataFrame, columns: Iterable[str]) -> dict:
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
    rows += [_summarise({"arm": arm}, trials, columns) for arm, trials in _by_arm(primary)]
    return _frame(rows)


def split_reference(table: pd.DataFrame) -> tuple[pd.Series | None, pd.DataFrame]:
    """`main_table` -> (its all-foreground row, or None; the arms' rows)."""
    is_reference = table["arm"] == REFERENCE_ARM
    reference = table[is_reference].iloc[0] if is_reference.any() else None
    return reference, table[~is_reference]


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows of `_summarise` as a frame: label, metrics, n, then the trials' statuses."""
    frame = pd.DataFrame(rows)
    order = [c for c in frame.columns if c not in ("n", "statuses")] + ["n", "statuses"]
    return frame[order]


def _by_arm(frame: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
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


def class_names(results: pd.DataFrame) -> list[str]:
    return sorted({c.split("/", 1)[1] for c in results.columns if c.startswith("iou/")})


def class_tables(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per arm, one row per tumour class: metrics at the primary threshold over scored seeds."""
    primary = primary_rows(results)
    metrics = table_metrics(results)
    tables = {}
    for arm, trials in _by_arm(primary):
        rows = []
        for name in class_names(results):
            per_class = {m: trials[f"{m}/{name}"] for m in metrics}
            one_class = pd.DataFrame({"status": trials["status"], **per_class})
            rows.append(_summarise({"class": name}, one_class, metrics))
        tables[arm] = _frame(rows)
    return tables


def threshold_table(results: pd.DataFrame, arm: str) -> pd.DataFrame:
    """One arm's metrics at every evaluated threshold (Otsu included), over scored seeds."""
    trials = results[results["arm"] == arm]
    if trials.empty:
        raise KeyError(f"no arm {arm!r} in the results; arms: {arm_names(results)}")
    return _frame(
        [
            _summarise({"threshold": label}, rows, table_metrics(results))
            for label, rows in trials.groupby("threshold", sort=False)
        ]
    )


def replicate_columns(results: pd.DataFrame) -> list[str]:
    """What pairs trials across arms: the seed, and the fold where the sweep has FOLDS."""
    return ["seed", "fold"] if "fold" in results else ["seed"]


def replicate_scores(results: pd.DataFrame, arm: str, metric: str) -> dict[tuple, float]:
    """(seed, fold) -> the arm's metric, for scored trials only."""
    trials = primary_rows(results)
    trials = trials[(trials["arm"] == arm) & trials["status"].isin(SCORED_STATUSES)]
    keys = trials[replicate_columns(results)].itertuples(index=False, name=None)
    values = trials[metric]
    return {tuple(map(int, key)): float(v) for key, v in zip(keys, values, strict=True)}


def comparison_table(results: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every other arm against `baseline`, per metric, paired by seed and fold (see
    `analysis.stats`)."""
    arms = arm_names(results)
    if baseline not in arms:
        raise KeyError(f"baseline {baseline!r} is not an arm of the results; arms: {arms}")
    metrics = table_metrics(results)
    base = {metric: replicate_scores(results, baseline, metric) for metric in metrics}
    rows = []
    for arm in arms:
        if arm == baseline:
            continue
        for metric in metrics:
            comparison = paired_comparison(replicate_scores(results, arm, metric), base[metric])
            rows.append({"arm": arm, "metric": metric, **vars(comparison)})
    columns = ["arm", "metric", "n", "mean_diff", "ci_low", "ci_high", "p_value", "note"]
    return pd.DataFrame(rows, columns=columns)


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


def format_latex(table: pd.DataFrame, caption: str = "") -> str:
    """Render any table of this module as a booktabs LaTeX table."""
    header, rows = display_cells(table)

    def line(cells: list[str]) -> str:
        return " & ".join(_latex_escape(c) for c in cells) + r" \\"

    body = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        line(header),
        r"\midrule",
        *(line(cells) for cells in rows),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if caption:
        body.append(r"\caption{" + _latex_escape(caption) + "}")
    body.append(r"\end{table}")
    return "\n".join(body) + "\n"


_LATEX = {"±": r"$\pm$", "Δ": r"$\Delta$", "%": r"\%", "_": r"\_", "&": r"\&", "#": r"\#"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(char, char) for char in text)
