"""Run every (arm, seed, fold) of an ARMS space with `train.fit` alone, no Ray: the study's
table on a machine without Ray (a lent GPU box), and each trial's own wall time. (A SPACE
search needs Ray's sampling: run it with `python -m tunelab.sweep`.)

    python bench/reproduce.py search_spaces/ebhi_table1.py --data DIR [--set K=V] \
        [--parallel 4] --out runs/ebhi_table1_gpu

Trials run in `--parallel` processes (4 pack one GPU). Each finished trial appends one line to
`<out>/trials.jsonl` (its identity and last report) and its epochs to `<out>/epochs.jsonl`, so an
interrupted run keeps what finished; with pandas, `results.parquet` and `epochs.parquet` follow,
in the sweep's layout, for `analysis`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunelab.config import parse_overrides
from tunelab.space import FOLD_KEY, Study, load_study


def run_trial(job: tuple[Study, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One trial to its end (convergence rule included): (its summary, one row per epoch)."""
    from tunelab.train import fit

    study, params = job
    cfg = study.trial_config(params)
    started = time.perf_counter()
    history = [result.to_flat() for result in fit(cfg)]
    identity = {
        "sweep": study.name,
        "arm": study.arm_label(params),
        "seed": cfg.seed,
        "fold": cfg.data.fold,
        "trial_id": f"{study.arm_label(params)}_s{cfg.seed}_f{cfg.data.fold}",
        "status": history[-1]["status"] if history else "failed",
        "epochs": len(history),
        "time_s": time.perf_counter() - started,
        "error": "",
    }
    return {"identity": identity, "last": history[-1] if history else {}}, [
        {**identity, **row} for row in history
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space")
    parser.add_argument("--data", default="")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--arms", help="comma-separated arms (default: all)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the space's)")
    parser.add_argument("--parallel", type=int, default=1, help="trials at once")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--tables-only", action="store_true", help="only turn <out>/*.jsonl into parquet"
    )
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    if args.data:
        overrides["data.root"] = str(Path(args.data).resolve())
    study = load_study(args.space).with_base(overrides)
    arms = args.arms.split(",") if args.arms else list(study.arms)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(study.seeds)
    folds = [{FOLD_KEY: fold} for fold in range(study.folds)] or [{}]
    jobs = [
        (study, {"arm": arm, "seed": seed, **fold})
        for seed in seeds
        for fold in folds
        for arm in arms
    ]
    out = Path(args.out)
    if args.tables_only:
        write_tables(study, out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # spawn: CUDA cannot follow a fork; not a Pool: its daemon workers cannot start the
    # DataLoader workers that augmentation uses
    with ProcessPoolExecutor(
        args.parallel, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
    ) as pool:
        for future in as_completed([pool.submit(run_trial, job) for job in jobs]):
            summary, epochs = future.result()
            with (out / "trials.jsonl").open("a") as file:
                file.write(json.dumps(summary) + "\n")
            with (out / "epochs.jsonl").open("a") as file:
                file.writelines(json.dumps(row) + "\n" for row in epochs)
            who = summary["identity"]
            print(
                f"{who['arm']:>14} seed {who['seed']}: {who['status']} at epoch "
                f"{who['epochs']}, iou {summary['last'].get('val_iou', float('nan')):.4f}, "
                f"{who['time_s']:.0f} s (t={time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    print(f"all {len(jobs)} trials in {time.perf_counter() - started:.0f} s")
    write_tables(study, out)
    return 0


def write_tables(study: Study, out: Path) -> None:
    """results.parquet and epochs.parquet from the JSON lines, as the sweep writes them."""
    try:
        import pandas as pd
    except ImportError:  # a bare GPU box: convert later, on a machine with pandas
        return
    from tunelab.results import IDENTITY_FILE, class_names_in, trial_rows

    # trials finish in any order; the tables list arms as the space does, then by seed
    position = {arm: index for index, arm in enumerate(study.arms)}
    summaries = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    summaries.sort(key=lambda s: (position.get(s["identity"]["arm"], 0), s["identity"]["seed"]))
    rows = []
    for summary in summaries:
        identity, last = summary["identity"], summary["last"]
        fold = {FOLD_KEY: identity["fold"]} if study.folds else {}
        cfg = study.trial_config({"arm": identity["arm"], "seed": identity["seed"], **fold})
        rows += trial_rows(cfg, identity, last, class_names_in(last))
    pd.DataFrame(rows).to_parquet(out / "results.parquet", index=False)
    epochs = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    pd.DataFrame(epochs).to_parquet(out / "epochs.parquet", index=False)
    (out / IDENTITY_FILE).write_text(json.dumps({"baseline": study.baseline or ""}) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
