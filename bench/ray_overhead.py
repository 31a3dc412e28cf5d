"""Ray's cost per epoch: one trial through the trainable vs `train.fit` called directly.

Same config, same data, same threads (the trial gets all CPUs, so Ray gives it as many torch
threads as the direct run has). Ray's per-epoch time is `time_this_iter_s`: the epoch plus the
report and the checkpoint.

    python bench/ray_overhead.py [--epochs 5] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench.common import save
from tunelab.config import TrialConfig, parse_overrides
from tunelab.sweep import main as sweep_main
from tunelab.train import fit

BASE = {
    "model.depth": 4,
    "model.base_channels": 16,
    "model.norm": "batch",
    "train.lr": 1e-3,
    "stop.enabled": False,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {**BASE, "train.max_epochs": args.epochs, **parse_overrides(args.set)}
    cpus = os.cpu_count() or 1
    direct = [r.epoch_seconds for r in fit(TrialConfig.from_dict(overrides))]
    with tempfile.TemporaryDirectory() as folder:
        space = Path(folder) / "overhead.py"
        space.write_text(f"BASE = {overrides!r}\nARMS = {{'one': {{}}}}\nSEEDS = [0]\n")
        code = sweep_main(
            [str(space), "--storage", folder, "--cpus-per-trial", str(cpus), "--quiet"]
        )
        assert code == 0, "the sweep failed"
        (result_file,) = Path(folder).glob("overhead/*/result.json")
        reports = [json.loads(line) for line in result_file.read_text().splitlines()]
    in_ray = [r["time_this_iter_s"] for r in reports]
    in_trial = [r["epoch_seconds"] for r in reports]
    direct_s, ray_s = statistics.median(direct[1:]), statistics.median(in_ray[1:])
    overhead = ray_s / direct_s - 1
    print(f"epoch, train.fit directly:        {direct_s:.3f} s")
    print(f"epoch, inside the Ray trial:      {statistics.median(in_trial[1:]):.3f} s")
    print(f"iteration, Ray (+report, ckpt):   {ray_s:.3f} s")
    print(f"Ray overhead per epoch: {overhead:+.1%}")
    path = save(
        "ray_overhead",
        {
            "config": overrides,
            "direct_epoch_s": direct,
            "ray_iteration_s": in_ray,
            "ray_epoch_s": in_trial,
            "overhead": overhead,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
