"""What the sweep's driver spends per reported result over hundreds of tiny trials, and trials per
minute against a bare Ray Tune run of the same trainable.

One study of TRIALS tiny trials (EPOCHS epochs each, 40 synthetic 32x32 images, a 3-level U-Net
with 4 base channels) runs three times on a local Ray instance with 2 CPUs:
- through tunelab with MLflow on SQLite, and with MLflow behind a local tracking server: the
  driver's work per result is timed where it happens (the tracker's `on_trial_result` and the
  convergence stopper), per trial (the tracker's start and end of a trial's run) and once at the
  end (results, epochs and test tables, the sweep's parent run);
- bare: `tune.Tuner` on the same trial function, no callbacks, no stopper, no MLflow.
Growth over the sweep's life: the mean per-result cost over the first and the last fifth.

    python -m bench.driver_cost [--trials 200] [--epochs 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import save

TIMED = {  # what the driver runs, by where it runs
    "tracker": [("tunelab.tracking.callback", "SweepTracker", "on_trial_result")],
    "stopper": [("tunelab.stopper", "ConvergenceStopper", "__call__")],
    "per_trial": [
        ("tunelab.tracking.callback", "SweepTracker", "on_trial_start"),
        ("tunelab.tracking.callback", "SweepTracker", "on_trial_complete"),
    ],
    # on the tracker's writer thread: a trial's MLflow run, its params, figures and tables
    "writer_per_trial": [
        ("tunelab.tracking.callback", "SweepTracker", "_create_trial_run"),
        ("tunelab.tracking.callback", "SweepTracker", "_end_trial"),
    ],
    "at_end": [
        ("tunelab.runner", None, "results_frame"),
        ("tunelab.runner", None, "epochs_frame"),
        ("tunelab.runner", None, "collect_checkpoint_files"),
        ("tunelab.runner", None, "end_sweep"),
    ],
}


def space_file(folder: Path, trials: int, epochs: int) -> Path:
    path = folder / "driver_cost.py"
    lrs = [round(1e-3 * (1 + i / trials), 8) for i in range(trials)]
    path.write_text(
        "from ray import tune\n"
        "BASE = {'train.precision': 'fp32', 'data.synthetic_images': 40, "
        "'data.input_size': 32, 'model.depth': 3, 'model.base_channels': 4, "
        f"'train.batch_size': 8, 'train.max_epochs': {epochs}, 'data.test_fraction': 0}}\n"
        f"SPACE = {{'train.lr': tune.grid_search({lrs!r})}}\n"
        "SEEDS = [0]\nSCHEDULER = 'none'\n"
    )
    return path


@contextmanager
def timed(spent: dict[str, list[float]]) -> Iterator[None]:
    """Time every call of the TIMED functions into `spent[group]`, then put them back."""
    import importlib

    originals = []
    for group, targets in TIMED.items():
        for module_name, class_name, name in targets:
            owner = importlib.import_module(module_name)
            owner = getattr(owner, class_name) if class_name else owner
            original = getattr(owner, name)
            setattr(owner, name, _timer(original, spent[group]))
            originals.append((owner, name, original))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def _timer(function: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    return run


def tunelab_run(space: Path, storage: Path, mlflow_uri: str) -> dict[str, Any]:
    from tunelab.sweep import main as sweep_main

    spent: dict[str, list[float]] = defaultdict(list)
    start = time.perf_counter()
    with timed(spent):
        options = ["--storage", str(storage), "--num-cpus", "2", "--quiet"]
        if sweep_main([str(space), *options, "--mlflow-uri", mlflow_uri]) != 0:
            raise SystemExit("the tunelab sweep failed: see above")
    wall = time.perf_counter() - start
    tracker = spent["tracker"]
    fifth = max(1, len(tracker) // 5)
    mean_ms = {name: 1000 * statistics.mean(spent[name]) for name in ("tracker", "stopper")}
    return {
        "wall_s": round(wall, 1),
        "results": len(tracker),
        "per_result_ms": round(mean_ms["tracker"] + mean_ms["stopper"], 2),
        "tracker_ms": round(mean_ms["tracker"], 2),
        "tracker_ms_p95": round(1000 * sorted(tracker)[int(0.95 * len(tracker))], 2),
        "stopper_ms": round(mean_ms["stopper"], 3),
        "tracker_first_fifth_ms": round(1000 * statistics.mean(tracker[:fifth]), 2),
        "tracker_last_fifth_ms": round(1000 * statistics.mean(tracker[-fifth:]), 2),
        "per_trial_ms": round(1000 * sum(spent["per_trial"]) / (len(spent["per_trial"]) / 2), 1),
        "writer_per_trial_ms": round(
            1000 * sum(spent["writer_per_trial"]) / (len(spent["writer_per_trial"]) / 2), 1
        ),
        "at_end_s": round(sum(spent["at_end"]), 2),
    }


def bare_run(space: Path, storage: Path) -> dict[str, Any]:
    """The same trial function on a bare Tuner: no tunelab callbacks, stopper or MLflow."""
    import ray
    from ray import tune

    from tunelab.data import load
    from tunelab.space import load_study
    from tunelab.trainable import train_trial

    study = load_study(space)
    data = load(study.trial_config(study.first_params()).data)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, study=study, fingerprints={data.root: data.fingerprint}),
        {"cpu": 1},
    )
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2)
    try:
        start = time.perf_counter()
        tuner = tune.Tuner(
            trainable,
            param_space=study.param_space(),
            tune_config=tune.TuneConfig(metric="val_iou", mode="max", reuse_actors=True),
            run_config=tune.RunConfig(name="bare", storage_path=str(storage), verbose=0),
        )
        grid = tuner.fit()
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {"wall_s": round(wall, 1), "trials": len(grid)}


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    port = 5757
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--backend-store-uri", f"sqlite:///{folder / 'server.db'}"]
    command += ["--default-artifact-root", str(folder / "artifacts"), "--workers", "1"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        from tunelab.tracking.store import TrackingError, check_reachable

        deadline = time.monotonic() + 120
        while True:
            try:
                check_reachable(uri)
                break
            except TrackingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.environ["TUNELAB_CACHE"] = str(root / "cache")
        space = space_file(root, args.trials, args.epochs)
        runs = {"sqlite": tunelab_run(space, root / "sqlite", f"sqlite:///{root / 'm.db'}")}
        with mlflow_server(root) as uri:
            runs["server"] = tunelab_run(space, root / "server", uri)
        runs["bare"] = bare_run(space, root / "bare")
    for run in runs.values():
        run["trials_per_min"] = round(60 * args.trials / run["wall_s"], 1)
    payload = {
        "command": "python -m bench.driver_cost " + " ".join(argv),
        "trials": args.trials,
        "epochs": args.epochs,
        "runs": runs,
    }
    print(payload)
    print(f"saved {save('driver_cost', payload)}")


if __name__ == "__main__":
    main(sys.argv[1:])
