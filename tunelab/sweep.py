"""`python -m tunelab.sweep SPACE.py`: validate a space, run it on Ray Tune, write the results.

The space is loaded and validated before Ray (or torch) is imported, so a wrong file fails in
about a second and nothing is started.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tunelab.config_values import parse_overrides
from tunelab.space import SEARCHES, SpaceError, Study, load_study
from tunelab.tracking.store import tracking_uri


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tunelab.sweep",
        description="Run a search or an ablation study described by a search-space file.",
    )
    parser.add_argument("space", help="search-space file, e.g. search_spaces/losses.py")
    parser.add_argument("--data", help="dataset folder (default: the synthetic dataset)")
    parser.add_argument(
        "--test-data",
        metavar="DIR",
        help="an external test set, scored like the internal one, which is then off "
        "(sets data.test_root)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TrialConfig key for every trial, e.g. --set train.max_epochs=5",
    )
    parser.add_argument("--seeds", help="comma-separated seeds, replacing the space's SEEDS")
    parser.add_argument("--max-epochs", type=int, help="shortcut for --set train.max_epochs=N")
    parser.add_argument(
        "--num-samples", type=int, help="configurations a random or TPE search draws (NUM_SAMPLES)"
    )
    parser.add_argument("--search", choices=SEARCHES, help="how SPACE is sampled (SEARCH)")
    parser.add_argument(
        "--search-seed", type=int, help="seed of the random or TPE sampler (SEARCH_SEED)"
    )
    parser.add_argument("--scheduler", choices=["asha", "none"], help="override SCHEDULER")
    parser.add_argument(
        "--no-convergence",
        action="store_true",
        help="turn the convergence stopper off (same as --set stop.enabled=False)",
    )
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default 1)")
    parser.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per trial, fractional to pack trials on one card, e.g. 0.25 (default: "
        "1 per trial when the machine has a GPU, else 0)",
    )
    parser.add_argument("--address", help="attach to a running Ray cluster, e.g. auto")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance")
    parser.add_argument(
        "--storage",
        default="runs",
        help="Ray storage: where the sweep folder goes (path or URI, default ./runs)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep of the same name"
    )
    parser.add_argument(
        "--max-failures", type=int, default=1, help="retries of a trial that raises (default 1)"
    )
    parser.add_argument("--quiet", action="store_true", help="no live trial table")
    parser.add_argument(
        "--mlflow-uri",
        help="MLflow tracking URI, e.g. http://127.0.0.1:5000 (default: $MLFLOW_TRACKING_URI, "
        "else sqlite:///./mlflow.db, which `mlflow ui` run in this folder opens)",
    )
    parser.add_argument("--experiment", help="MLflow experiment name (default: the space's NAME)")
    parser.add_argument(
        "--keep-checkpoints",
        choices=["all", "tested"],
        default="all",
        help="tested: when the sweep ends, each trial keeps one checkpoint with only the weights "
        "its test set scored (no optimizer state; what predict reads), default all",
    )
    parser.add_argument(
        "--log-model",
        action="store_true",
        help="log each trial's trained weights as an MLflow PyTorch model",
    )
    return parser


def study_from_args(args: argparse.Namespace) -> Study:
    """Load the space and apply the command line's overrides; raises SpaceError or ValueError."""
    study = load_study(args.space)
    overrides = parse_overrides(args.set)
    if args.data is not None:
        overrides["data.root"] = args.data
    if args.test_data is not None:
        overrides["data.test_root"] = args.test_data
    for key in ("data.root", "data.test_root"):
        folder = overrides.get(key, study.base.get(key))
        if folder:  # trials run in Ray's own working folders: a relative path would not be found
            overrides[key] = str(Path(str(folder)).resolve())
    if args.max_epochs is not None:
        overrides["train.max_epochs"] = args.max_epochs
    changes: dict[str, Any] = {}
    if args.seeds:
        changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.scheduler:
        changes["scheduler"] = args.scheduler
    if args.search:
        changes["search"] = args.search
    if args.num_samples is not None:
        changes["num_samples"] = args.num_samples
    if args.search_seed is not None:
        changes["search_seed"] = args.search_seed
    if args.no_convergence:
        overrides["stop.enabled"] = False
    if args.cpus_per_trial is not None or args.gpus_per_trial is not None:
        resources = dict(study.resources)
        if args.cpus_per_trial is not None:
            resources["cpu"] = args.cpus_per_trial
        if args.gpus_per_trial is not None:
            resources["gpu"] = args.gpus_per_trial
        changes["resources"] = resources
    if not changes and not overrides:  # load_study has validated the file as it is
        return study
    # validated again as a whole: a flag can clash with the file (--num-samples on a grid)
    return dataclasses.replace(study, **changes).with_base(overrides)


def _show_warnings() -> None:
    """tunelab's warnings (e.g. what MLflow did not log) reach the terminal even though
    libraries imported later raise the root logger's level."""
    log = logging.getLogger("tunelab")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # options anywhere, as every CLI
    try:
        study = study_from_args(args)
    except (SpaceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Ray and torch are imported only once the space is valid
    from tunelab.runner import SetupError, SweepInterrupted, SweepOptions, run_sweep

    options = SweepOptions(
        storage=args.storage if "://" in args.storage else str(Path(args.storage).resolve()),
        address=args.address,
        resume=args.resume,
        gpus_per_trial=args.gpus_per_trial,
        max_failures=args.max_failures,
        num_cpus=args.num_cpus,
        verbose=0 if args.quiet else 1,
        mlflow_uri=tracking_uri(args.mlflow_uri),
        experiment=args.experiment,
        log_model=args.log_model,
        keep_checkpoints=args.keep_checkpoints,
    )
    _show_warnings()

    started = time.perf_counter()
    try:
        summary = run_sweep(study, options)
    except SweepInterrupted as interrupted:
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary)
    print(f"\nsweep took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
