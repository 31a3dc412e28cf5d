"""Figures of a sweep (matplotlib, no pyplot state): metric bars and learning curves by arm.
One trial's figures (its learning curve and prediction grid) are `tunelab.tracking.figures`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

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


def learning_curves(epochs: pd.DataFrame, threshold: float) -> Figure:
    """Validation loss and convergence trend by epoch, one line per arm (mean over its seeds,
    the band spanning them); the dotted line is the trend the convergence rule stops below."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    loss_ax, trend_ax = fig.subplots(1, 2)
    # the trend exists once an epoch fills the rule's window; shorter runs have none
    panels = [(ax, c) for ax, c in ((loss_ax, "val_loss"), (trend_ax, "trend")) if c in epochs]
    for arm, trials in epochs.groupby("arm", sort=False):
        for ax, column in panels:
            by_epoch = trials.groupby("epoch")[column]
            mean = by_epoch.mean()
            (line,) = ax.plot(mean.index, mean.to_numpy(), label=str(arm))
            low, high = by_epoch.min(), by_epoch.max()
            ax.fill_between(mean.index, low, high, color=line.get_color(), alpha=0.15, lw=0)
    trend_ax.axhline(-threshold, color="grey", ls=":", label="convergence threshold")
    trend_ax.legend(fontsize="small")
    for ax, name in ((loss_ax, "validation loss"), (trend_ax, "trend index")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
    loss_ax.legend(fontsize="small")
    return fig
