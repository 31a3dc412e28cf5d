"""What a trial's checkpoint costs for study A's full U-Net, per checkpoint and per GPU epoch.

Builds the full model (64 base channels, 5 levels, 31 M parameters) with Adam's state after
one step and the best-validation weights kept (`eval.checkpoint = best`), as a trial holds them,
then times `checkpoint.write` into a temporary folder and the copy of that folder into the
sweep's storage (what Ray does with each reported checkpoint, through pyarrow's copy_files).
The denominator is the H100 fp32 epoch of study A in BENCHMARKS.md (0.306 s), which this
CPU-only machine cannot measure. Also the disk a Table 1 sweep (12 trials) holds at its end,
with Ray keeping two checkpoints per trial, and with `--keep-checkpoints tested`.

    python -m bench.checkpoint_cost [--repeats 5] [--every-s 60] [--epochs 100]
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs
import torch

from bench.common import save
from tunelab import checkpoint
from tunelab.config import TrialConfig
from tunelab.model import UNet

H100_EPOCH_S = 0.306  # study A, fp32, EBHI 64x64 (BENCHMARKS.md, "fit vs bare loop")
TABLE1_TRIALS = 12
KEPT_PER_TRIAL = 2  # CheckpointConfig(num_to_keep=2), see tunelab.runner


def trial_state() -> dict:
    """A full-size trial's state: weights, Adam after one step, the best weights."""
    cfg = TrialConfig()
    model = UNet(cfg.model, cfg.data.channels, cfg.out_channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    model(torch.zeros(2, cfg.data.channels, 64, 64)).mean().backward()
    optimizer.step()
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {
        "epoch": 1,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best": {"epoch": 1, "val_loss": 0.5, "weights": weights},
    }


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def timed_checkpoint(state: dict, root: Path, index: int) -> tuple[float, float, int]:
    """(seconds to write, seconds to persist, bytes) of one checkpoint."""
    written, stored = root / f"local_{index}", root / f"storage_{index}"
    written.mkdir()
    stored.mkdir()
    start = time.perf_counter()
    checkpoint.write(written, state, {"preview": torch.zeros(4, 64, 64).numpy()}, "{}")
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    pyarrow.fs.copy_files(str(written), str(stored))
    persist_s = time.perf_counter() - start
    return write_s, persist_s, folder_bytes(written)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every-s", type=float, default=60.0, help="the cadence to evaluate")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of a Table 1 trial")
    args = parser.parse_args(argv)
    state = trial_state()
    parameters = sum(v.numel() for v in state["model"].values())
    with tempfile.TemporaryDirectory(dir=".") as folder:  # this disk, as the sweep's storage
        root = Path(folder).resolve()
        runs = [timed_checkpoint(state, root, i) for i in range(args.repeats)]
    write_s = statistics.median(r[0] for r in runs)
    persist_s = statistics.median(r[1] for r in runs)
    full_bytes = runs[0][2]
    cost_s = write_s + persist_s
    buffer = io.BytesIO()
    torch.save(checkpoint.tested_state(state), buffer)
    tested_bytes = len(buffer.getvalue())
    trial_s = args.epochs * H100_EPOCH_S
    # a trial saves when the interval has passed and at its last epoch
    saves_per_trial = math.floor(trial_s / args.every_s) + 1
    payload = {
        "command": "python -m bench.checkpoint_cost " + " ".join(argv),
        "parameters": parameters,
        "checkpoint_mb": round(full_bytes / 1e6, 1),
        "write_s": round(write_s, 3),
        "persist_s": round(persist_s, 3),
        "cost_s": round(cost_s, 3),
        "h100_epoch_s": H100_EPOCH_S,
        "before_every_epoch": {
            "share_of_epoch": round(cost_s / H100_EPOCH_S, 3),
            "mb_per_epoch": round(full_bytes / 1e6, 1),
        },
        "after_every_s": {
            "every_s": args.every_s,
            "saves_per_100_epoch_trial": saves_per_trial,
            "share_of_trial": round(saves_per_trial * cost_s / trial_s, 4),
            "share_of_a_long_trial": round(cost_s / args.every_s, 4),
            "mb_per_epoch": round(saves_per_trial * full_bytes / 1e6 / args.epochs, 1),
        },
        "table1_disk_gb": {
            "all_two_kept": round(TABLE1_TRIALS * KEPT_PER_TRIAL * full_bytes / 1e9, 2),
            "all_one_saved": round(TABLE1_TRIALS * min(saves_per_trial, 2) * full_bytes / 1e9, 2),
            "keep_tested": round(TABLE1_TRIALS * tested_bytes / 1e9, 2),
        },
    }
    print(payload)
    print(f"saved {save('checkpoint_cost', payload)}")


if __name__ == "__main__":
    main(sys.argv[1:])
