"""Figures of a sweep (matplotlib, no pyplot state): metric bars and learning curves by arm.
One trial's figures (its learning curve and prediction grid) are `tunelab.tracking.figures`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tunelab.metric_names import ALL_METRICS, VAL_PREFIX
from tunelab.summary import split_reference


def metric_bars(table: pd.DataFrame, metrics: Sequence[str], labels: Mapping[str, str]) -> Figure:
    """One panel per metric: a bar per arm at its mean over seeds, the std as an error bar, and
    the all-foreground reference, where the table has one, as a dashed line."""
    reference, arms = split_reference(table)
    fig = Figure(figsize=(3.2 * len(metrics), 3.6), layout="constrained")
    positions = np.arange(len(arms))
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        errors = arms[f"{metric}_std"].fillna(0.0)
        ax.bar(positions, arms[f"{metric}_mean"], yerr=errors, capsize=4, color="tab:blue")
        if reference is not None and not np.isnan(reference[f"{metric}_mean"]):
            ax.axhline(reference[f"{metric}_mean"], color="grey", ls="--", label="all foreground")
            ax.legend(fontsize="small")
        ax.set_xticks(positions, arms["arm"], rotation=30, ha="right", fontsize="small")
        ax.set_title(labels.get(metric, metric), fontsize="medium")
    return fig


def learning_curves(
    epochs: pd.DataFrame,
    threshold: float,
    losses: Mapping[str, str] | None = None,
    metric: str = f"{VAL_PREFIX}iou",
) -> Figure:
    """By epoch, one line per arm (mean over its replicates, the band spanning them): the
    headline validation metric, which every arm shares; the validation loss, one panel per loss
    function (`losses`: arm -> its train.loss; the losses' scales differ, so arms are compared
    on one axis only when they train the same loss); and the convergence trend, with the level
    the rule stops below dotted. Epochs are integers on every axis."""
    losses = losses or {}
    groups: dict[str, list[str]] = {}
    for arm in dict.fromkeys(epochs["arm"]):
        groups.setdefault(losses.get(str(arm), ""), []).append(str(arm))
    panels: list[tuple[str, str, list[str]]] = []  # (column, y label, arms)
    arms = list(dict.fromkeys(str(a) for a in epochs["arm"]))
    if metric in epochs:
        name = metric.removeprefix(VAL_PREFIX)
        label = ALL_METRICS[name].label if name in ALL_METRICS else name
        panels.append((metric, f"validation {label}", arms))
    if "val_loss" in epochs:
        for loss, members in groups.items():
            panels.append(
                ("val_loss", f"validation loss ({loss})" if loss else "validation loss", members)
            )
    if "trend" in epochs:  # exists once an epoch fills the rule's window
        panels.append(("trend", "trend index", arms))
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.8), layout="constrained")
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(arms)}  # one colour per arm throughout
    for ax, (column, label, members) in zip(axes, panels, strict=False):
        for arm in members:
            by_epoch = epochs[epochs["arm"] == arm].groupby("epoch")[column]
            mean = by_epoch.mean()
            ax.plot(mean.index, mean.to_numpy(), label=arm, color=colours[arm])
            low, high = by_epoch.min(), by_epoch.max()
            ax.fill_between(mean.index, low, high, color=colours[arm], alpha=0.15, lw=0)
        if column == "trend":
            ax.axhline(-threshold, color="grey", ls=":", label="convergence threshold")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    return fig


def rank_blobs(ranks: pd.DataFrame, title: str = "") -> Figure:
    """challengeR's blob plot: rank on the x axis, arms on the y axis, each dot's area the share
    of resamples in which the arm had that rank (`uncertainty.rank_table`)."""
    rank_columns = [c for c in ranks.columns if c.startswith("rank_")]
    fig = Figure(
        figsize=(1.2 + 0.8 * len(rank_columns), 0.9 + 0.5 * len(ranks)), layout="constrained"
    )
    ax = fig.add_subplot()
    for row, record in enumerate(ranks.to_dict("records")):
        shares = np.array([record[c] for c in rank_columns], dtype=float)
        ranks_x = np.arange(1, len(rank_columns) + 1)
        shown = shares > 0
        ax.scatter(
            ranks_x[shown], np.full(shown.sum(), row), s=600 * shares[shown], color="tab:blue"
        )
    ax.set_xticks(np.arange(1, len(rank_columns) + 1))
    ax.set_xlim(0.5, len(rank_columns) + 0.5)
    ax.set_yticks(np.arange(len(ranks)), ranks["arm"])
    ax.set_ylim(len(ranks) - 0.5, -0.5)  # the first arm on top
    ax.set_xlabel("rank (1 = best)")
    ax.set_title(title, fontsize="medium")
    return fig


def forest(comparison: pd.DataFrame, metrics: Sequence[str], labels: Mapping[str, str]) -> Figure:
    """One panel per metric: each arm's mean difference from the baseline (dot), its 95% CI
    over cases and replicates (thick; `boot_low`/`boot_high`) and its t CI over replicates
    (thin; `ci_low`/`ci_high`), with the zero line drawn."""
    fig = Figure(
        figsize=(3.4 * len(metrics), 0.9 + 0.45 * comparison["arm"].nunique()), layout="constrained"
    )
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        rows = comparison[comparison["metric"] == metric].reset_index(drop=True)
        y = np.arange(len(rows))
        ax.hlines(
            y + 0.12, rows["ci_low"], rows["ci_high"], color="grey", lw=1, label="t (replicates)"
        )
        if "boot_low" in rows:
            ax.hlines(
                y,
                rows["boot_low"],
                rows["boot_high"],
                color="tab:blue",
                lw=4,
                label="cases x replicates",
            )
        ax.plot(rows["mean_diff"], y, "o", color="black")
        ax.axvline(0, color="grey", ls="--", lw=1)
        ax.set_yticks(y, rows["arm"])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_title(labels.get(metric, metric), fontsize="medium")
        ax.set_xlabel("difference from the baseline")
    fig.axes[0].legend(fontsize="small")
    return fig
