"""What Ray's experiment-state snapshots cost and risk, by `TUNE_GLOBAL_CHECKPOINT_S`.

The runner sets `TUNE_GLOBAL_CHECKPOINT_S=0` (a snapshot at every step of Tune's loop) so that
the state `--resume` reads names a checkpoint that still exists (two are kept per trial). Ray's
default, `auto`, snapshots every 10 s or more, plus whenever a trial has saved two checkpoints
since the last one. The same tiny sweep runs once per setting while a probe reads the sweep
folder's newest `experiment_state-*.json` as fast as it can and counts:
- rewrites: distinct (mtime, size) versions of the file seen, per second of sweep;
- unreadable: the share of reads that found it empty or cut short (Ray rewrites it in place),
  which is the chance that a SIGKILL at a random moment leaves a state `--resume` must refuse.

    python -m bench.state_snapshots [--epochs 6] [--settings 0,auto]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import save

SPACE = """BASE = {'train.precision': 'fp32', 'data.synthetic_images': 40, 'data.input_size': 32,
        'model.depth': 3, 'model.base_channels': 4, 'train.lr': 1e-3, 'train.batch_size': 8,
        'train.max_epochs': %d, 'stop.enabled': False}
ARMS = {'a': {}, 'b': {'model.dropout': 0.1}}
SEEDS = [0, 1]
"""


def probe(sweep_dir: Path, done: threading.Event, counts: dict[str, Any]) -> None:
    versions: set[tuple[int, int]] = set()
    while not done.is_set():
        states = sorted(sweep_dir.glob("experiment_state-*.json"))
        if not states:
            time.sleep(0.005)
            continue
        try:
            stat = states[-1].stat()
            text = states[-1].read_text()
        except OSError:
            continue
        versions.add((stat.st_mtime_ns, stat.st_size))
        counts["reads"] += 1
        try:
            json.loads(text)
        except ValueError:
            counts["unreadable"] += 1
    counts["versions"] = len(versions)


def run(setting: str, epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "space.py").write_text(SPACE % epochs)
        env = {
            **os.environ,
            "TUNE_GLOBAL_CHECKPOINT_S": setting,
            "TUNELAB_CACHE": str(root / "cache"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        }
        command = [sys.executable, "-m", "tunelab.sweep", str(root / "space.py"), "--quiet"]
        command += ["--storage", str(root / "runs"), "--num-cpus", "2"]
        counts: dict[str, Any] = {"reads": 0, "unreadable": 0}
        done = threading.Event()
        watcher = threading.Thread(target=probe, args=(root / "runs" / "space", done, counts))
        watcher.start()
        started = time.perf_counter()
        before = os.times()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        after = os.times()
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
    return {
        "setting": setting,
        "sweep_seconds": round(seconds, 1),
        "driver_cpu_seconds": round(
            (after.children_user - before.children_user)
            + (after.children_system - before.children_system),
            1,
        ),
        "state_rewrites": counts["versions"],
        "rewrites_per_second": round(counts["versions"] / seconds, 2),
        "reads": counts["reads"],
        "unreadable_share": round(counts["unreadable"] / max(counts["reads"], 1), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--settings", default="0,auto")
    args = parser.parse_args()
    rows = [run(setting, args.epochs) for setting in args.settings.split(",")]
    for row in rows:
        print(row)
    print(save("state_snapshots", {"epochs": args.epochs, "trials": 4, "runs": rows}))


if __name__ == "__main__":
    main()
