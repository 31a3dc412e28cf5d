"""Epochs and wall time a search spends with ASHA + the convergence stopper vs with neither.

Runs the same space twice, as written and with `--scheduler none --no-convergence`, and compares
total epochs, wall time, the winning configuration and the ranking of the top 3. Configurations
are ranked by their best trial's last reported metric, pruned trials included: that is the
number ASHA decides on, and what a search returns as its best result. Each sweep's
`results.parquet` and `epochs.parquet` are kept in `bench/results/sweep_efficiency/<run>/`.

    python -m bench.sweep_efficiency search_spaces/lr_dropout.py [sweep options, e.g. --data DIR]

`--reuse-full` (first argument after the space) takes the unpruned sweep kept by an earlier
run instead of running it again: it does not depend on the space's ASHA settings, so trying
other settings costs only the pruned sweep.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import RESULTS, save
from tunelab.results import EPOCHS_FILE, RESULTS_FILE
from tunelab.space import load_study
from tunelab.sweep import main as sweep_main

FULL = ["--scheduler", "none", "--no-convergence"]
WALL_FILE = "wall.json"  # beside a kept sweep's tables: its wall time and flags


def run(space: str, extra: list[str], storage: Path, keep: Path) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    if sweep_main([space, "--storage", str(storage), "--quiet", *extra]) != 0:
        raise SystemExit(f"the sweep of {space} failed: see its output above")
    elapsed = time.perf_counter() - start
    folder = storage / load_study(space).name
    keep.mkdir(parents=True, exist_ok=True)
    for name in (RESULTS_FILE, EPOCHS_FILE):
        shutil.copy(folder / name, keep / name)
    (keep / WALL_FILE).write_text(json.dumps({"wall_s": elapsed, "flags": extra}) + "\n")
    return kept(keep)


def kept(keep: Path) -> tuple[pd.DataFrame, float]:
    """A sweep kept by `run`: its trials (primary threshold) and wall time."""
    results = pd.read_parquet(keep / RESULTS_FILE)
    return results[results["primary"]], json.loads((keep / WALL_FILE).read_text())["wall_s"]


def ranking(results: pd.DataFrame, metric: str, ascending: bool) -> dict[str, float]:
    """Configurations, best first, by their best trial's last reported metric."""
    per_arm = results.groupby("arm")[metric]
    best = per_arm.min() if ascending else per_arm.max()
    return best.sort_values(ascending=ascending, na_position="last").to_dict()


def main() -> None:
    space, extra = sys.argv[1], sys.argv[2:]
    reuse_full = extra[:1] == ["--reuse-full"]
    extra = extra[1:] if reuse_full else extra
    study = load_study(space)
    metric = study.metric.removeprefix("val_")
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, flags in (("pruned", extra), ("full", [*extra, *FULL])):
            keep = RESULTS / "sweep_efficiency" / name
            reused = reuse_full and name == "full"
            runs[name] = kept(keep) if reused else run(space, flags, Path(folder) / name, keep)
    summary = {}
    for name, (results, seconds) in runs.items():
        scores = ranking(results, metric, ascending=study.mode == "min")
        summary[name] = {
            "epochs": int(results["epochs"].sum()),
            "wall_s": seconds,
            "ranking": list(scores),
            "best_trial_scores": scores,
            "statuses": results["status"].value_counts().to_dict(),
        }
        print(
            f"{name:7} epochs {summary[name]['epochs']:5d}  wall {seconds:7.0f} s  "
            f"top 3 {list(scores)[:3]}  {summary[name]['statuses']}"
        )
    share = summary["pruned"]["epochs"] / summary["full"]["epochs"]
    same_best = summary["pruned"]["ranking"][0] == summary["full"]["ranking"][0]
    same_top3 = summary["pruned"]["ranking"][:3] == summary["full"]["ranking"][:3]
    print(
        f"pruned sweep used {share:.0%} of the epochs; same best configuration: {same_best}; "
        f"same top 3: {same_top3}"
    )
    asha = load_study(space).asha
    payload = {"space": space, "extra": extra, "asha": asha, **summary, "epoch_share": share}
    path = save("sweep_efficiency", {**payload, "same_best": same_best, "same_top3": same_top3})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
