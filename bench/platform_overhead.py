"""What the platform costs, in one run: a bare PyTorch loop vs `train.fit` vs the same trial
through the sweep (Ray trainable + MLflow tracking), and the data path around them.

Same config, data and threads throughout. Measured, in order:
1. data: the dataset loaded into an empty cache (scan, decode, resize, write), then again
   (cached: content fingerprint and memory map);
2. bare loop and `train.fit`, epochs alternating so both see the same machine state;
3. the trial through `python -m tunelab.sweep` with MLflow tracking into a fresh SQLite store;
   its epochs (`epoch_seconds`), Ray's iterations (epoch + report + checkpoint,
   `time_this_iter_s`) and the trial's start-up (data load + model build, `startup_seconds`);
4. `train.fit` with study A's augmentation (class balancing, flips, rotations): the share of an
   epoch spent waiting for batches when batches are augmented.
The first epoch of each is a warm-up; numbers are medians over the rest.

    python -m bench.platform_overhead --data ../shared/data/ebhi-seg [--epochs 6] [--set K=V]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import save
from bench.fit_vs_bare import DEFAULTS, bare_epoch, training_tensors
from tunelab.config import TrialConfig, parse_overrides
from tunelab.data import load, prepare
from tunelab.model import UNet
from tunelab.sweep import main as sweep_main
from tunelab.train import Trainer


def median_after_warmup(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def load_twice(cfg: TrialConfig) -> tuple[float, float]:
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        load(cfg.data)
        timings.append(time.perf_counter() - start)
    return timings[0], timings[1]


def bare_and_fit(cfg: TrialConfig) -> tuple[int, dict[str, list[float]]]:
    """(training images, epoch times of the bare loop and of fit, and fit's data waits)."""
    data = prepare(cfg)
    trainer = Trainer(cfg, data)
    torch.manual_seed(cfg.seed)
    model = UNet(cfg.model, cfg.data.channels, cfg.out_channels).to(trainer.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    x, y = training_tensors(data)
    times: dict[str, list[float]] = {"bare": [], "fit": [], "fit_data": []}
    for result in trainer.epochs():
        batch, device = cfg.train.batch_size, trainer.device
        times["bare"].append(bare_epoch(model, optimizer, x, y, data.val_images, batch, device))
        times["fit"].append(result.epoch_seconds)
        times["fit_data"].append(result.data_seconds)
    return len(x), times


def through_the_sweep(overrides: dict[str, object], folder: Path) -> list[dict[str, float]]:
    space = folder / "overhead.py"
    space.write_text(f"BASE = {overrides!r}\nARMS = {{'one': {{}}}}\nSEEDS = [0]\n")
    cpus = str(os.cpu_count() or 1)
    options = ["--storage", str(folder), "--cpus-per-trial", cpus, "--num-cpus", cpus, "--quiet"]
    options += ["--mlflow-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    if sweep_main([str(space), *options]) != 0:
        raise SystemExit("the sweep failed: see its output above")
    (result_file,) = folder.glob("overhead/*/result.json")
    return [json.loads(line) for line in result_file.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--augmented-epochs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        overrides = {
            **DEFAULTS,
            "model.norm": "batch",
            "data.root": args.data,
            "data.cache_dir": str(Path(folder) / "cache"),
            "train.max_epochs": args.epochs,
            **parse_overrides(args.set),
        }
        cfg = TrialConfig.from_dict(overrides)
        first_load, cached_load = load_twice(cfg)
        images, loops = bare_and_fit(cfg)
        reports = through_the_sweep(overrides, Path(folder))
        augmented_cfg = TrialConfig.from_dict(
            {**overrides, "data.balance": True, "train.max_epochs": args.augmented_epochs}
        )
        augmented = [(r.epoch_seconds, r.data_seconds) for r in Trainer(augmented_cfg).epochs()]
    seconds = {
        "bare loop": median_after_warmup(loops["bare"]),
        "train.fit": median_after_warmup(loops["fit"]),
        "epoch in the Ray trial": median_after_warmup([r["epoch_seconds"] for r in reports]),
        "Ray iteration (+report, checkpoint, MLflow)": median_after_warmup(
            [r["time_this_iter_s"] for r in reports]
        ),
    }
    print(f"{images} training images, batch {cfg.train.batch_size}, {args.epochs} epochs")
    print(f"{'':46} {'epoch s':>8} {'img/s':>7} {'vs bare':>8}")
    for name, value in seconds.items():
        ratio = value / seconds["bare loop"] - 1
        print(f"{name:46} {value:8.3f} {images / value:7.1f} {ratio:+8.1%}")
    ray_overhead = seconds["Ray iteration (+report, checkpoint, MLflow)"] / seconds["train.fit"] - 1
    fit_overhead = seconds["train.fit"] / seconds["bare loop"] - 1
    data_share = median_after_warmup(loops["fit_data"]) / seconds["train.fit"]
    augmented_epoch = median_after_warmup([epoch for epoch, _ in augmented])
    augmented_share = median_after_warmup([d for _, d in augmented]) / augmented_epoch
    startup = reports[0]["startup_seconds"]
    print(
        f"train.fit vs bare loop {fit_overhead:+.1%}; Ray + MLflow vs train.fit {ray_overhead:+.1%}"
    )
    print(f"data: first load {first_load:.2f} s, cached {cached_load:.2f} s")
    print(f"trial start to first step (cached data, model built): {startup:.2f} s")
    print(
        f"waiting for batches: {data_share:.1%} of a plain epoch, {augmented_share:.1%} of an "
        f"augmented one ({augmented_epoch:.1f} s)"
    )
    path = save(
        "platform_overhead",
        {
            "config": cfg.to_flat(),
            "train_images": images,
            "median_epoch_s": seconds,
            "fit_vs_bare": fit_overhead,
            "ray_mlflow_vs_fit": ray_overhead,
            "bare_epoch_s": loops["bare"],
            "fit_epoch_s": loops["fit"],
            "fit_data_s": loops["fit_data"],
            "ray_reports": [
                {k: r.get(k) for k in ("epoch_seconds", "data_seconds", "time_this_iter_s")}
                for r in reports
            ],
            "first_load_s": first_load,
            "cached_load_s": cached_load,
            "startup_s": startup,
            "data_share": data_share,
            "augmented_epochs": augmented,
            "augmented_data_share": augmented_share,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
