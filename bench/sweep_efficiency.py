"""Epochs and wall time a sweep spends with ASHA + the convergence stopper vs with neither.

Runs the same space twice and compares total epochs, wall time, the best arm and the ranking of
the top 3, by the mean primary metric over each arm's scored seeds (what the table prints).

    python bench/sweep_efficiency.py search_spaces/losses.py [sweep options, e.g. --data DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import save
from tunelab.results import SCORED_STATUSES
from tunelab.space import load_study
from tunelab.sweep import RESULTS_FILE
from tunelab.sweep import main as sweep_main


def run(space: str, extra: list[str], storage: str) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    assert sweep_main([space, "--storage", storage, "--quiet", *extra]) == 0
    elapsed = time.perf_counter() - start
    name = load_study(space).name
    results = pd.read_parquet(Path(storage) / name / RESULTS_FILE)
    return results[results["primary"]], elapsed


def arm_means(results: pd.DataFrame, metric: str, ascending: bool) -> dict[str, float]:
    """Arms, best first, by the mean over their scored seeds: the number the table prints.

    An arm with no completed or converged seed (all pruned) ranks last.
    """
    scored = results[results["status"].isin(SCORED_STATUSES)]
    means = scored.groupby("arm")[metric].mean().sort_values(ascending=ascending)
    unscored = sorted(set(results["arm"]) - set(means.index))
    return {**means.to_dict(), **dict.fromkeys(unscored, float("nan"))}


def main() -> None:
    space, extra = sys.argv[1], sys.argv[2:]
    study = load_study(space)
    metric = study.metric.removeprefix("val_")
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        runs["pruned"] = run(space, extra, f"{folder}/pruned")
        full = [*extra, "--scheduler", "none", "--no-convergence"]
        runs["full"] = run(space, full, f"{folder}/full")
    summary = {}
    for name, (results, seconds) in runs.items():
        means = arm_means(results, metric, ascending=study.mode == "min")
        order = list(means)
        summary[name] = {
            "epochs": int(results["epochs"].sum()),
            "wall_s": seconds,
            "ranking": order,
            "arm_means": means,
            "statuses": results["status"].value_counts().to_dict(),
        }
        print(
            f"{name:7} epochs {summary[name]['epochs']:5d}  wall {seconds:7.0f} s  "
            f"ranking {order}  {summary[name]['statuses']}"
        )
    share = summary["pruned"]["epochs"] / summary["full"]["epochs"]
    same_best = summary["pruned"]["ranking"][0] == summary["full"]["ranking"][0]
    same_top3 = summary["pruned"]["ranking"][:3] == summary["full"]["ranking"][:3]
    print(
        f"pruned sweep used {share:.0%} of the epochs; same best arm: {same_best}; "
        f"same top 3: {same_top3}"
    )
    path = save(
        "sweep_efficiency",
        {
            "space": space,
            "extra": extra,
            **summary,
            "epoch_share": share,
            "same_best": same_best,
            "same_top3": same_top3,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
