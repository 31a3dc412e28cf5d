"""TPE + ASHA against random + ASHA: the same space, budget and pruning, over several search seeds.

For each search seed, runs the space twice (`--search tpe`, `--search random`) and follows each
sweep in the order its configurations were drawn (Ray's experiment state lists trials as they
were created). After each configuration: the epochs spent so far by every trial, and the best
configuration so far, a configuration's score being the mean over its seeds of each seed's last
validation IoU (what the sampler was told; a pruned seed counts with its value when pruned).
Reports the best mean IoU reached against epochs spent (curve), and the share of the budget
(configurations, and epochs) each run needs to come within 0.005 IoU of the best found by any
run. Each sweep's `results.parquet` and `tunelab.json` are kept in
`bench/results/search_tpe/<method>_s<seed>/`, where `python -m analysis` reads them.

    python -m bench.search_tpe search_spaces/lr_dropout_width.py --search-seeds 0,1,2 \\
        [sweep options, e.g. --num-samples 20]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.common import RESULTS, save
from tunelab.results import IDENTITY_FILE, RESULTS_FILE
from tunelab.space import load_study
from tunelab.sweep import main as sweep_main

METHODS = ("tpe", "random")
WITHIN = 0.005  # IoU: "as good as the best" for the share-of-budget comparison
ORDER_FILE = "trial_order.json"


def run(space: str, method: str, seed: int, extra: list[str], keep: Path) -> float:
    """One sweep; keeps its results and its trials' creation order; returns its wall time."""
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        options = ["--storage", storage, "--quiet", "--search", method, "--search-seed", str(seed)]
        if sweep_main([space, *options, *extra]) != 0:
            raise SystemExit(f"the {method} sweep of {space} (seed {seed}) failed: see above")
        elapsed = time.perf_counter() - start
        folder = Path(storage) / load_study(space).name
        keep.mkdir(parents=True, exist_ok=True)
        for name in (RESULTS_FILE, IDENTITY_FILE):  # what `python -m analysis KEEP` reads
            shutil.copy(folder / name, keep / name)
        (state,) = glob.glob(str(folder / "experiment_state-*.json"))
        trials = json.loads(Path(state).read_text())["trial_data"]
        order = [json.loads(trial[0])["trial_id"] for trial in trials]
        (keep / ORDER_FILE).write_text(json.dumps({"order": order, "wall_s": elapsed}) + "\n")
    return elapsed


def trajectory(keep: Path) -> pd.DataFrame:
    """One row per configuration, in the order it was drawn: epochs spent so far (all trials of
    it and of those before), its seed-mean validation IoU, and the best so far."""
    results = pd.read_parquet(keep / RESULTS_FILE)
    results = results[results["primary"]]
    order = json.loads((keep / ORDER_FILE).read_text())["order"]
    position = {trial_id: index for index, trial_id in enumerate(order)}
    results = results.assign(position=results["trial_id"].map(position))
    per_arm = results.groupby("arm").agg(
        first=("position", "min"),
        epochs=("epochs", "sum"),
        iou=("iou", "mean"),
        seeds=("seed", "nunique"),
        test_iou=("test_iou", "mean"),
    )
    per_arm = per_arm.sort_values("first").reset_index()
    per_arm["configurations"] = np.arange(1, len(per_arm) + 1)
    per_arm["epochs_spent"] = per_arm["epochs"].cumsum()
    per_arm["best_so_far"] = per_arm["iou"].cummax()
    return per_arm


def budget_share(path: pd.DataFrame, target: float) -> dict[str, float | None]:
    """The share of the run's configurations and epochs spent when it first reached `target`."""
    reached = path[path["best_so_far"] >= target]
    if reached.empty:
        return {"configurations": None, "epochs": None}
    first = reached.iloc[0]
    return {
        "configurations": round(float(first["configurations"]) / len(path), 3),
        "epochs": round(float(first["epochs_spent"]) / float(path["epochs_spent"].iloc[-1]), 3),
    }


def plot(paths: dict[tuple[str, int], pd.DataFrame], out: Path) -> None:
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    colours = {"tpe": "tab:blue", "random": "tab:orange"}
    for (method, seed), path in sorted(paths.items()):
        ax.step(
            path["epochs_spent"],
            path["best_so_far"],
            where="post",
            color=colours[method],
            alpha=0.8,
            label=f"{method}, search seed {seed}",
            linestyle=["-", "--", ":", "-."][seed % 4],
        )
    ax.set_xlabel("epochs spent (all trials)")
    ax.set_ylabel("best seed-mean validation IoU so far")
    ax.set_title("TPE + ASHA vs random + ASHA")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space")
    parser.add_argument("--search-seeds", default="0,1,2")
    parser.add_argument("--reuse", action="store_true", help="analyse the kept sweeps only")
    args, extra = parser.parse_known_args(argv)
    seeds = [int(s) for s in args.search_seeds.split(",")]
    folder = RESULTS / "search_tpe"
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    walls = {}
    for seed in seeds:
        for method in METHODS:
            keep = folder / f"{method}_s{seed}"
            if not args.reuse:
                walls[f"{method}_s{seed}"] = round(run(args.space, method, seed, extra, keep), 1)
    paths = {(m, s): trajectory(folder / f"{m}_s{s}") for s in seeds for m in METHODS}
    best = max(float(path["best_so_far"].iloc[-1]) for path in paths.values())
    target = best - WITHIN
    runs = {}
    for (method, seed), path in paths.items():
        winner = path.loc[path["iou"].idxmax()]
        runs[f"{method}_s{seed}"] = {
            "best_val_iou": round(float(winner["iou"]), 4),
            "best_test_iou": round(float(winner["test_iou"]), 4),
            "best_configuration": winner["arm"],
            "configurations": len(path),
            "epochs": int(path["epochs_spent"].iloc[-1]),
            "share_to_within": budget_share(path, target),
        }
    plot(paths, folder / "curve.png")
    summary = {
        method: {
            "mean_best_val_iou": round(
                float(np.mean([runs[f"{method}_s{s}"]["best_val_iou"] for s in seeds])), 4
            ),
            "reached_within": sum(
                runs[f"{method}_s{s}"]["share_to_within"]["epochs"] is not None for s in seeds
            ),
        }
        for method in METHODS
    }
    payload = {
        "command": "python -m bench.search_tpe " + " ".join(argv),
        "best_found": round(best, 4),
        "within": WITHIN,
        "summary": summary,
        "runs": runs,
        "wall_s": walls,
    }
    print(json.dumps(payload, indent=2))
    print(f"saved {save('search_tpe', payload)} and {folder / 'curve.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
