"""A search sweep's part of the report: its Markdown ("## Search: ...") and its files, the
importance, parallel-coordinates and slice figures with their CSVs and the top configurations.
The tables and numbers are `analysis.search`'s; the figures, `analysis.search_figures`'."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from optuna.distributions import BaseDistribution

from analysis import search_figures
from analysis.search import (
    TOP_K,
    SearchSpace,
    cast_to_domains,
    configuration_table,
    importance,
    read_search,
    top_configurations,
    trial_table,
    why_no_importance,
)
from tunelab.summary import format_markdown
from tunelab.tracking.figures import save_png

TRIALS_CSV = "search_trials.csv"  # one row per trial: the faint points of the slices
CONFIGURATIONS_CSV = "search_configurations.csv"  # one per configuration: the parallel lines
TOP_CSV = "search_top.csv"
IMPORTANCE_CSV = "search_importance.csv"
IMPORTANCE_PNG = "search_importance.png"
PARALLEL_PNG = "search_parallel.png"
SLICES_PNG = "search_slices.png"


def report_section(
    results: pd.DataFrame, identity: Mapping[str, Any], out: Path, seed: int, k: int = TOP_K
) -> tuple[str, list[Path]]:
    """A search sweep's Markdown ("## Search: ...") and files in `out`: importance, parallel
    coordinates, slices and the top k. ("", []) where the sweep was no search."""
    space = read_search(identity)
    if space is None:
        return "", []
    if space.column not in results:  # a search on a score results do not keep: say so, go on
        return (
            f"## Search\n\nNot analysed: results.parquet has no {space.column!r} column for "
            f"the searched metric {space.metric}.\n",
            [],
        )
    trials, domains, notes = cast_to_domains(trial_table(results, space), space)
    configs = configuration_table(trials, domains, space)
    files = [_csv(trials, out / TRIALS_CSV), _csv(configs, out / CONFIGURATIONS_CSV)]
    valued = int(configs[space.mean].notna().sum())
    markdown = [
        f"## Search: {space.method or 'search'} over {len(domains)} hyperparameter(s), "
        f"{len(configs)} configurations, {space.metric} ({space.mode})\n",
        f"A configuration's value is the mean over its trials (seeds) of the {space.label} "
        "each reported last: the number the sampler saw. Pruned seeds enter with their value "
        "at pruning; importance, parallel coordinates and slices use every configuration with "
        f"a value ({valued}).\n",
    ]
    reason = why_no_importance(configs, domains, space)
    if reason is None:
        text, written = _importance_and_figures(trials, configs, domains, space, seed, out)
        markdown.append(text)
        files += written
    else:
        markdown.append(f"No importance, parallel coordinates or slices: {reason}.\n")
    top = top_configurations(configs, space, k)
    files.append(_csv(top, out / TOP_CSV))
    markdown.append(_top_markdown(top, configs, domains, space))
    markdown += [f"- {note}" for note in notes]
    return "\n".join(markdown) + "\n", files


def _importance_and_figures(
    trials: pd.DataFrame,
    configs: pd.DataFrame,
    domains: Mapping[str, BaseDistribution],
    space: SearchSpace,
    seed: int,
    out: Path,
) -> tuple[str, list[Path]]:
    shares = importance(configs, domains, space, seed)
    title = f"fANOVA importance for {space.label} (forest seed {seed})"
    higher = space.mode == "max"
    # the figures travel alone (MLflow), so each says what its points are
    seeds = "its mean over seeds, a pruned seed at its value at pruning"
    figures = {
        IMPORTANCE_PNG: search_figures.importance_bars(shares, title),
        PARALLEL_PNG: search_figures.parallel_coordinates(
            configs, domains, space.mean, space.label, higher, f"A line per configuration: {seeds}"
        ),
        SLICES_PNG: search_figures.slices(
            configs,
            trials,
            domains,
            space.mean,
            space.column,
            space.label,
            f"A dot per configuration: {seeds}",
        ),
    }
    files = [_csv(shares, out / IMPORTANCE_CSV)]
    for name, fig in figures.items():
        save_png(fig, out / name)
        files.append(out / name)
    text = (
        f"### Hyperparameter importance (fANOVA, forest seed {seed})\n\n"
        "Each hyperparameter's share of the variance of the configurations' values, as "
        "Optuna's fANOVA evaluator estimates it with a random forest; the shares sum to 1.\n\n"
        + format_markdown(shares, {"hyperparameter": "Hyperparameter", "importance": "Importance"})
    )
    return text + "\n", files


def _top_markdown(
    top: pd.DataFrame,
    configs: pd.DataFrame,
    domains: Mapping[str, BaseDistribution],
    space: SearchSpace,
) -> str:
    eligible = int(configs["all_scored"].sum())
    lines = [
        f"### Top {len(top)} configurations by mean {space.label}\n",
        f"Only configurations whose every trial completed or converged are ranked ({eligible} "
        f"of {len(configs)}), so the best is never one lucky seed or a pruned trial.\n",
    ]
    if top.empty:
        return "\n".join([*lines, "No configuration qualifies.\n"])
    metric = space.label.removeprefix("validation ")
    headers = {"rank": "Rank", "arm": "Arm", "n": "n"}
    headers[space.mean] = f"Validation {metric} (mean ± std)"
    headers[f"{space.test_column}_mean"] = f"Test {metric} (mean ± std)"
    shown = top.assign(**{key: top[key].map(_format_value) for key in domains})
    return "\n".join([*lines, format_markdown(shown, headers)]) + "\n"


def _format_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path
