"""Aggregate trials over seeds: one row per arm, mean and spread, and how many seeds it rests on."""

from __future__ import annotations

import math

import pandas as pd

from tunelab.results import SCORED_STATUSES

TABLE_METRICS = ("iou", "dice", "pixel_error", "time_s")


def main_table(results: pd.DataFrame) -> pd.DataFrame:
    """Arm x (IoU, Dice, pixel error, time): mean and std over the scored seeds.

    Only completed or converged trials are averaged; `n` says how many seeds each mean rests on
    and `statuses` lists every trial's fate, so a pruned or failed seed is visible, not hidden.
    The first row is the all-foreground reference (study A's "Random" row).
    """
    primary = results[results["primary"]]
    rows = [_reference_row(primary)]
    for arm, trials in primary.groupby("arm", sort=False):
        scored = trials[trials["status"].isin(SCORED_STATUSES)]
        row: dict[str, object] = {"arm": arm}
        for metric in TABLE_METRICS:
            row[f"{metric}_mean"] = scored[metric].mean()
            row[f"{metric}_std"] = scored[metric].std(ddof=1) if len(scored) > 1 else math.nan
        row["n"] = len(scored)
        counts = trials["status"].value_counts()
        row["statuses"] = ", ".join(f"{count} {status}" for status, count in counts.items())
        rows.append(row)
    return pd.DataFrame(rows)


def _reference_row(primary: pd.DataFrame) -> dict[str, object]:
    """All-foreground prediction: scored on each trial's own validation split, then averaged."""
    per_split = primary.drop_duplicates(["seed"])
    row: dict[str, object] = {"arm": "all foreground (reference)", "statuses": ""}
    for metric in ("iou", "dice", "pixel_error"):
        row[f"{metric}_mean"] = per_split[f"foreground_{metric}_all"].mean()
    row["n"] = len(per_split)
    return row


def format_markdown(table: pd.DataFrame) -> str:
    """Render `main_table` as a Markdown table with mean ± std cells."""
    header = "| Arm | IoU | Dice | Pixel error | Time (s) | n | Trials |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        cells = [str(row["arm"])]
        for metric in TABLE_METRICS:
            digits = 1 if metric == "time_s" else 4
            cells.append(_cell(row.get(f"{metric}_mean"), row.get(f"{metric}_std"), digits))
        cells += [str(row.get("n", "")), str(row.get("statuses", "") or "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(mean: object, std: object, digits: int) -> str:
    if not isinstance(mean, float) or math.isnan(mean):
        return "-"
    if isinstance(std, float) and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"
