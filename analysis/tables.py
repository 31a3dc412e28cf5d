"""Results -> the tables a paper prints beyond the sweep's headline table (per class, per
threshold, comparisons against the baseline), as pandas frames, and LaTeX for any of them.

Built on `tunelab.summary` (the headline table, splits, captions and Markdown), with the same
rules: only scored trials are averaged, and every trial's fate is listed.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.stats import holm, paired_comparison
from tunelab.results import SCORED_STATUSES
from tunelab.summary import (
    by_arm,
    display_cells,
    primary_rows,
    replicate_columns,
    summarise_trials,
    summary_frame,
    table_metrics,
)


def arm_names(results: pd.DataFrame) -> list[str]:
    """The sweep's arms, in the order of the results."""
    return [str(arm) for arm in dict.fromkeys(results["arm"])]


def class_names(results: pd.DataFrame) -> list[str]:
    return sorted({c.split("/", 1)[1] for c in results.columns if c.startswith("iou/")})


def class_tables(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per arm, one row per tumour class: metrics at the primary threshold over scored seeds."""
    primary = primary_rows(results)
    metrics = table_metrics(results)
    tables = {}
    for arm, trials in by_arm(primary):
        rows = []
        for name in class_names(results):
            per_class = {m: trials[f"{m}/{name}"] for m in metrics}
            one_class = pd.DataFrame({"status": trials["status"], **per_class})
            rows.append(summarise_trials({"class": name}, one_class, metrics))
        tables[arm] = summary_frame(rows)
    return tables


def threshold_table(results: pd.DataFrame, arm: str) -> pd.DataFrame:
    """One arm's metrics at every evaluated threshold (Otsu included), over scored seeds."""
    trials = results[results["arm"] == arm]
    if trials.empty:
        raise KeyError(f"no arm {arm!r} in the results; arms: {arm_names(results)}")
    return summary_frame(
        [
            summarise_trials({"threshold": label}, rows, table_metrics(results))
            for label, rows in trials.groupby("threshold", sort=False)
        ]
    )


def replicate_scores(results: pd.DataFrame, arm: str, metric: str) -> dict[tuple, float]:
    """(seed, fold) -> the arm's metric, for scored trials only."""
    trials = primary_rows(results)
    trials = trials[(trials["arm"] == arm) & trials["status"].isin(SCORED_STATUSES)]
    keys = trials[replicate_columns(results)].itertuples(index=False, name=None)
    values = trials[metric]
    return {tuple(map(int, key)): float(v) for key, v in zip(keys, values, strict=True)}


def comparison_table(results: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every other arm against `baseline`, per metric, paired by seed and fold (see
    `analysis.stats`): the t interval and p, and p adjusted by Holm's method over the arms
    compared on that metric. A row without a difference says why in `note`."""
    arms = arm_names(results)
    if baseline not in arms:
        raise KeyError(f"baseline {baseline!r} is not an arm of the results; arms: {arms}")
    metrics = table_metrics(results)
    base = {metric: replicate_scores(results, baseline, metric) for metric in metrics}
    statuses = _statuses(results)
    rows = []
    for arm in arms:
        if arm == baseline:
            continue
        for metric in metrics:
            comparison = paired_comparison(replicate_scores(results, arm, metric), base[metric])
            row = {"arm": arm, "metric": metric, **vars(comparison)}
            if comparison.n == 0:  # name the statuses that left no pair
                row["note"] = (
                    f"no replicate scored in both ({arm}: {statuses[arm]}; "
                    f"{baseline}: {statuses[baseline]})"
                )
            rows.append(row)
    columns = ["arm", "metric", "n", "mean_diff", "ci_low", "ci_high", "p_value", "p_holm", "note"]
    frame = pd.DataFrame(rows, columns=[c for c in columns if c != "p_holm"])
    frame.insert(7, "p_holm", math.nan)
    for family in frame.groupby("metric", sort=False).groups.values():  # one family per metric
        frame.loc[family, "p_holm"] = holm(frame.loc[family, "p_value"].tolist())
    return frame[columns]


def _statuses(results: pd.DataFrame) -> dict[str, str]:
    """Arm -> its trials' statuses, e.g. "2 completed, 1 pruned"."""
    primary = primary_rows(results)
    return {
        str(arm): ", ".join(
            f"{n} {status}" for status, n in trials["status"].value_counts().items()
        )
        for arm, trials in primary.groupby("arm", sort=False)
    }


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


_LATEX = {
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "↓": r"$\downarrow$",
    "%": r"\%",
    "_": r"\_",
    "&": r"\&",
    "#": r"\#",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(char, char) for char in text)
