"""Trials packed on one GPU: per-trial and aggregate images/s with 1, 2 and 4 trials at once.

This is what Ray Tune's fractional GPUs do (`--gpus-per-trial 0.5` or `0.25`): Ray only sets
CUDA_VISIBLE_DEVICES, so N trial processes share one card with no partitioning. Ray itself is not
used here (it need not be installed on the GPU machine): N spawned processes each train one trial
with `tunelab.train.Trainer`. Each runs its first epoch (warm-up: CUDA and cuDNN set-up) on its
own; then all are released at once for the other epochs. Per trial: training images / median of
those epochs (an epoch includes validation, as in fit_vs_bare); aggregate: the sum over the N
trials, checked against images trained / the round's wall time. Processes are kept between
rounds; each round builds fresh trials in them.

    python bench/gpu_packing.py [--data DIR] [--epochs 4] [--trials 1,2,4]
        [--precision fp32,bf16] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
import traceback
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import torch

from bench.common import save
from tunelab.config import TrialConfig
from tunelab.config_values import parse_overrides
from tunelab.data import prepare
from tunelab.train import Trainer

DEFAULTS = {  # study A's model and batch; the convergence rule off so every trial runs all epochs
    "model.depth": 5,
    "model.base_channels": 64,
    "data.input_size": 64,
    "data.channels": 1,
    "data.split": "image",
    "train.lr": 1e-4,
    "train.batch_size": 32,
    "stop.enabled": False,
}
GO = "go"
RESULT_TIMEOUT_S = 900  # a worker that never answers fails the run instead of hanging it


def worker(rank: int, jobs: Queue, results: Queue) -> None:
    """Train one trial per job: a warm-up epoch, then ready; at the go, the other epochs."""
    while (job := jobs.get()) is not None:
        try:
            flat, threads = job
            torch.set_num_threads(threads)
            cfg = TrialConfig.from_dict(flat)
            trainer = Trainer(cfg)  # data from the cache the parent filled
            cuda = trainer.device.type == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            epochs = trainer.epochs()
            warmup = next(epochs).epoch_seconds  # alone: CUDA and cuDNN set-up stay out of it
            results.put(("ready", rank, len(trainer.data.train.source.items)))
            if jobs.get() != GO:
                raise RuntimeError("expected the go message")
            times = [warmup] + [result.epoch_seconds for result in epochs]
            peak_mib = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
            results.put(("done", rank, (times, peak_mib)))
            del trainer
            if cuda:
                torch.cuda.empty_cache()
        except Exception:
            results.put(("error", rank, traceback.format_exc()))


def collect(results: Queue, n: int, kind: str) -> dict[int, Any]:
    """One message of `kind` from each of n workers; a worker's error ends the benchmark."""
    got: dict[int, Any] = {}
    while len(got) < n:
        what, rank, payload = results.get(timeout=RESULT_TIMEOUT_S)
        if what == "error":
            raise RuntimeError(f"trial process {rank} failed:\n{payload}")
        if what != kind:
            raise RuntimeError(f"trial process {rank}: expected {kind!r}, got {what!r}")
        got[rank] = payload
    return got


def run_round(
    jobs: list[Queue], results: Queue, base: dict[str, Any], n: int, threads: int
) -> dict[str, Any]:
    """N trials at once (seeds 0 .. n-1); their images/s and the round's wall time."""
    for rank in range(n):
        jobs[rank].put(({**base, "seed": rank}, threads))
    images = collect(results, n, "ready")
    start = time.perf_counter()
    for rank in range(n):
        jobs[rank].put(GO)
    done = collect(results, n, "done")
    wall = time.perf_counter() - start
    per_trial = [images[rank] / statistics.median(done[rank][0][1:]) for rank in range(n)]
    return {
        "precision": base["train.precision"],
        "trials": n,
        "threads_per_trial": threads,
        "train_images": [images[rank] for rank in range(n)],
        "epoch_s": [done[rank][0] for rank in range(n)],
        "peak_gpu_mib": [done[rank][1] for rank in range(n)],
        "per_trial_images_s": per_trial,
        "aggregate_images_s": sum(per_trial),
        "wall_s": wall,
        # the measured epochs over the round's wall time: a check on the sum
        "wall_images_s": sum(images[r] * (len(done[r][0]) - 1) for r in range(n)) / wall,
    }


def write(base: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    return save(
        "gpu_packing",
        {
            "method": "N spawned processes on one GPU, each one Trainer (Ray not installed on "
            "the GPU machine; Ray's fractional GPUs run trials the same way, unpartitioned)",
            "config": {key: value for key, value in base.items() if key != "seed"},
            "rounds": rows,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--epochs", type=int, default=4, help="per trial; the first is warm-up")
    parser.add_argument("--trials", default="1,2,4", help="trials at once, comma-separated")
    parser.add_argument("--precision", default="fp32", help="train.precision values: fp32,bf16")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")
    counts = [int(n) for n in args.trials.split(",")]
    precisions = args.precision.split(",")
    base = {
        **DEFAULTS,
        "data.root": args.data,
        "train.max_epochs": args.epochs,
        **parse_overrides(args.set),
    }
    for precision in precisions:  # fail here, in two seconds, not in a worker
        TrialConfig.from_dict({**base, "train.precision": precision})
    prepare(TrialConfig.from_dict(base))  # decode once into the cache; the trials only read it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ctx = mp.get_context("spawn")
    results: Queue = ctx.Queue()
    jobs: list[Queue] = [ctx.Queue() for _ in range(max(counts))]
    procs = [
        ctx.Process(target=worker, args=(rank, jobs[rank], results), daemon=True)
        for rank in range(max(counts))
    ]
    for proc in procs:
        proc.start()
    rows = []
    try:
        for precision in precisions:
            for n in counts:
                threads = max(1, (cores or 1) // n)
                row = run_round(jobs, results, {**base, "train.precision": precision}, n, threads)
                rows.append(row)
                write(base, rows)  # after every round: a run cut short keeps what it measured
                print(
                    f"{precision:5} trials {n}  per-trial images/s "
                    + " ".join(f"{rate:7.1f}" for rate in row["per_trial_images_s"])
                    + f"  aggregate {row['aggregate_images_s']:7.1f}"
                    + f"  peak MiB {max(row['peak_gpu_mib']):.0f}",
                    flush=True,
                )
    finally:
        for queue in jobs:
            queue.put(None)
        for proc in procs:
            proc.join(timeout=30)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (CPU)"
    print(f"\n{gpu}; {args.epochs} epochs per trial: 1 warm-up alone, median of the rest")
    header = f"{'precision':9} {'trials':>6} {'per-trial img/s':>15} {'aggregate':>10} {'vs 1':>6}"
    print(f"{header} {'wall img/s':>10}")
    for row in rows:
        single = next(
            r for r in rows if r["precision"] == row["precision"] and r["trials"] == counts[0]
        )
        mean = statistics.mean(row["per_trial_images_s"])
        ratio = row["aggregate_images_s"] / single["aggregate_images_s"]
        print(
            f"{row['precision']:9} {row['trials']:6d} {mean:15.1f} "
            f"{row['aggregate_images_s']:10.1f} {ratio:5.2f}x {row['wall_images_s']:10.1f}"
        )
    print(f"wrote {write(base, rows)}")


if __name__ == "__main__":
    main()
