"""Figures of a search (matplotlib, no pyplot state): fANOVA importance as bars, the
configurations as parallel coordinates, and the metric against each hyperparameter (slices).
Log domains get log axes; categorical ones, one tick per choice."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from optuna.distributions import BaseDistribution, CategoricalDistribution


def importance_bars(importance: pd.DataFrame, title: str) -> Figure:
    """One horizontal bar per hyperparameter, the most important on top, its share written."""
    fig = Figure(figsize=(6.0, 1.2 + 0.45 * len(importance)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(importance))
    ax.barh(y, importance["importance"], color="tab:blue")
    for position, share in zip(y, importance["importance"], strict=True):
        ax.text(share, position, f" {share:.2f}", va="center", fontsize="small")
    ax.set_yticks(y, importance["hyperparameter"])
    ax.set_ylim(len(importance) - 0.5, -0.5)
    ax.set_xlim(0, max(1.0, float(importance["importance"].max()) * 1.15))
    ax.set_xlabel("importance (fANOVA; shares sum to 1)")
    ax.set_title(title, fontsize="medium")
    return fig


def parallel_coordinates(
    configs: pd.DataFrame,
    domains: Mapping[str, BaseDistribution],
    value: str,
    label: str,
    higher_is_better: bool,
    title: str = "",
) -> Figure:
    """One line per configuration through an axis per hyperparameter (its domain, bottom to
    top) and the metric, coloured by the metric; the best drawn last, on top."""
    shown = configs[np.isfinite(configs[value])].sort_values(value, ascending=higher_is_better)
    keys = list(domains)
    fig = Figure(figsize=(1.2 + 1.6 * (len(keys) + 1), 4.2), layout="constrained")
    ax = fig.add_subplot()
    low, high = float(shown[value].min()), float(shown[value].max())
    spread = high > low
    columns = [_unit(shown[key], domains[key]) for key in keys]
    columns.append((shown[value].to_numpy() - low) / (high - low) if spread else 0.5)
    heights = np.column_stack(np.broadcast_arrays(*columns))  # (configurations, axes)
    norm = Normalize(low, high)
    cmap = "viridis" if higher_is_better else "viridis_r"  # the best is bright either way
    colours = ScalarMappable(norm, cmap).to_rgba(shown[value].to_numpy())
    x = np.arange(len(keys) + 1)
    for row, colour in zip(heights, colours, strict=True):
        ax.plot(x, row, color=colour, lw=1.2, alpha=0.8)
    ticks = [_ticks(domains[key]) for key in keys]
    ticks.append([(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")] if spread else [(0.5, f"{low:.3g}")])
    for position, axis_ticks in zip(x, ticks, strict=True):
        ax.axvline(position, color="grey", lw=0.8)
        for height, text in axis_ticks:
            ax.text(position, height, f" {text}", fontsize="x-small", va="center", bbox=_LABEL_BOX)
    ax.set_xticks(x, [*keys, label], rotation=20, ha="right")
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(keys) + 0.4)
    ax.set_ylim(-0.05, 1.05)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=label)
    ax.set_title(title, fontsize="medium")
    return fig


_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5}


def slices(
    configs: pd.DataFrame,
    trials: pd.DataFrame,
    domains: Mapping[str, BaseDistribution],
    value: str,
    trial_value: str,
    label: str,
    title: str = "",
) -> Figure:
    """One panel per hyperparameter: each configuration's mean over its trials (dots) and each
    trial's own value (faint), against the hyperparameter."""
    keys = list(domains)
    columns = min(len(keys), 4)
    rows = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(3.3 * columns, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        domain = domains[key]
        x = _x(trials[key], domain)
        ax.scatter(x, trials[trial_value], s=10, color="grey", alpha=0.3, lw=0, label="a trial")
        ax.scatter(_x(configs[key], domain), configs[value], s=22, label="mean of its trials")
        if isinstance(domain, CategoricalDistribution):
            ax.set_xticks(range(len(domain.choices)), [str(c) for c in domain.choices])
            ax.set_xlim(-0.5, len(domain.choices) - 0.5)
        elif domain.log:
            ax.set_xscale("log")
        ax.set_xlabel(key)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel(label)
    axes[0].legend(fontsize="x-small")
    fig.suptitle(title, fontsize="medium")
    return fig


def _x(values: pd.Series, domain: BaseDistribution) -> np.ndarray:
    """Where values sit on a slice's x axis: a categorical's choice by its index."""
    if isinstance(domain, CategoricalDistribution):
        return np.array([domain.choices.index(v) for v in values], dtype=float)
    return values.to_numpy(dtype=float)


def _unit(values: pd.Series, domain: BaseDistribution) -> np.ndarray:
    """Values placed in [0, 1] along their domain (log domains in log space)."""
    if isinstance(domain, CategoricalDistribution):
        return _x(values, domain) / max(len(domain.choices) - 1, 1)
    low, high, numbers = float(domain.low), float(domain.high), values.to_numpy(dtype=float)
    if domain.log:
        low, high, numbers = math.log10(low), math.log10(high), np.log10(numbers)
    return (numbers - low) / (high - low) if high > low else np.full(len(numbers), 0.5)


def _ticks(domain: BaseDistribution) -> list[tuple[float, str]]:
    """(height in [0, 1], label) for an axis: every choice, or the bounds and the middle."""
    if isinstance(domain, CategoricalDistribution):
        last = max(len(domain.choices) - 1, 1)
        return [(i / last, str(choice)) for i, choice in enumerate(domain.choices)]
    low, high = float(domain.low), float(domain.high)
    middle = math.sqrt(low * high) if domain.log else (low + high) / 2
    return [(0.0, f"{low:.3g}"), (0.5, f"{middle:.3g}"), (1.0, f"{high:.3g}")]
