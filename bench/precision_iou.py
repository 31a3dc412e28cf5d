"""Does `train.precision=auto` (the default) keep IoU within 0.01 of fp32? The same trials,
trained both ways.

Each seed trains the same config twice, in fp32 and under auto (same data, split and
initial weights), with the convergence rule off so both see the same epochs. Each run is scored
by its mean validation IoU over the last 5 epochs (one epoch's IoU jumps by a percent or more),
and the table gives both settings and the paired difference. On a CPU with native bf16, auto is
bf16 autocast + channels_last; elsewhere it is fp32, and the two runs agree exactly. This is the
accuracy half of the decision; `bench/cpu_throughput.py` is the speed half.

    python -m bench.precision_iou [--seeds 0,1,2] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import save
from tunelab.config import TrialConfig
from tunelab.config_values import parse_overrides
from tunelab.data import prepare
from tunelab.device import resolve_dtype, resolve_memory_format
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
        for precision in ("fp32", "auto"):
            cfg = TrialConfig.from_dict({**overrides, "seed": seed, "train.precision": precision})
            row[f"{precision}_iou"], row[f"{precision}_s"] = final_iou(cfg)
        row["diff"] = row["auto_iou"] - row["fp32_iou"]
        rows.append(row)
        print(
            f"seed {seed}: fp32 IoU {row['fp32_iou']:.4f} ({row['fp32_s']:.0f} s), "
            f"auto {row['auto_iou']:.4f} ({row['auto_s']:.0f} s), diff {row['diff']:+.4f}",
            flush=True,
        )
    diffs = [row["diff"] for row in rows]
    mean = statistics.mean(diffs)
    auto = TrialConfig.from_dict({**overrides, "train.precision": "auto"})
    device = torch.device("cpu")
    chosen = f"{resolve_dtype(auto, device) or 'fp32'}, {resolve_memory_format(auto, device)}"
    print(f"auto here: {chosen}")
    print(f"auto - fp32 IoU: mean {mean:+.4f}, largest |diff| {max(map(abs, diffs)):.4f}")
    payload = {"config": overrides, "auto": chosen, "trials": rows, "mean_diff": mean}
    path = save("precision_iou", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
