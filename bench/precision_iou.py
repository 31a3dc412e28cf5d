"""Does bf16 autocast keep IoU within 0.01 of fp32? The same trials trained both ways.

Each seed trains the same config twice, in fp32 and with bf16 autocast (same data, split and
initial weights), with the convergence rule off so both see the same epochs. Each run is scored
by its mean validation IoU over the last 5 epochs (one epoch's IoU jumps by a percent or more),
and the table gives both precisions and the paired difference. `train.precision=auto` picks bf16
only where it is faster, so this is the accuracy half of that decision.

    python -m bench.precision_iou [--seeds 0,1,2] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import save
from tunelab.config import TrialConfig, parse_overrides
from tunelab.data import prepare
from tunelab.train import Trainer

DEFAULTS = {  # a model that trains to a stable IoU in minutes on a CPU, even in slow bf16
    "data.input_size": 32,
    "model.depth": 3,
    "model.base_channels": 8,
    "model.norm": "batch",
    "train.lr": 1e-3,
    "train.max_epochs": 30,
    "stop.enabled": False,
}


LAST_EPOCHS = 5


def final_iou(cfg: TrialConfig) -> tuple[float, float]:
    """(mean validation IoU over the last epochs, seconds)."""
    start = time.perf_counter()
    results = list(Trainer(cfg, prepare(cfg)).epochs())
    iou = statistics.mean(r.metrics["iou"] for r in results[-LAST_EPOCHS:])
    return iou, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {**DEFAULTS, **parse_overrides(args.set)}
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row: dict[str, float] = {"seed": seed}
        for precision in ("fp32", "bf16"):
            cfg = TrialConfig.from_dict({**overrides, "seed": seed, "train.precision": precision})
            row[f"{precision}_iou"], row[f"{precision}_s"] = final_iou(cfg)
        row["diff"] = row["bf16_iou"] - row["fp32_iou"]
        rows.append(row)
        print(
            f"seed {seed}: fp32 IoU {row['fp32_iou']:.4f} ({row['fp32_s']:.0f} s), "
            f"bf16 {row['bf16_iou']:.4f} ({row['bf16_s']:.0f} s), diff {row['diff']:+.4f}",
            flush=True,
        )
    diffs = [row["diff"] for row in rows]
    mean = statistics.mean(diffs)
    print(f"bf16 - fp32 IoU: mean {mean:+.4f}, largest |diff| {max(map(abs, diffs)):.4f}")
    path = save("precision_iou", {"config": overrides, "trials": rows, "mean_diff": mean})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
