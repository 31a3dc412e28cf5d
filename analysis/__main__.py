"""`python -m analysis SWEEP_DIR_OR_MLFLOW_EXPERIMENT`: a finished sweep's tables and figures.

Prints the report (Markdown), writes CSV, LaTeX and PNG files to --out (default: the sweep
folder's `analysis/`), and logs them to the sweep's parent run in MLflow. Exit status 2 for input
it cannot use, 1 when the report was written but MLflow did not take it, each with a message
that says why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from analysis.mlflow_sweep import load_mlflow_sweep, log_report
from analysis.report import AnalysisError, build_report, load_sweep
from tunelab.tracking.store import tracking_uri


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweep", help="a sweep folder (runs/<NAME>) or the name of its MLflow experiment"
    )
    parser.add_argument("--baseline", help="arm to compare the others with (default: BASELINE)")
    parser.add_argument("--arm", help="arm of the threshold table (default: best mean IoU)")
    parser.add_argument(
        "--out", help="output folder (default: <sweep folder>/analysis, or analysis-<experiment>)"
    )
    parser.add_argument(
        "--mlflow-uri",
        help="tracking URI (default: the sweep's own, else $MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    parser.add_argument(
        "--split",
        choices=["test", "validation"],
        help="what the tables score (default: test when the sweep has test scores)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_RESAMPLES,
        metavar="N",
        help="resamples of the test cases for every interval on the test split "
        f"(default {DEFAULT_RESAMPLES}; recorded in the report)",
    )
    parser.add_argument(
        "--bootstrap-seed",
        type=int,
        default=DEFAULT_SEED,
        metavar="S",
        help=f"seed of those resamples (default {DEFAULT_SEED}; recorded in the report)",
    )
    parser.add_argument("--sweep-id", help="with an experiment: this sweep, not the newest")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # options anywhere, as every CLI
    try:
        if Path(args.sweep).is_dir():
            sweep, out = load_sweep(args.sweep), args.out
            uri = args.mlflow_uri or sweep.identity.get("mlflow_uri") or tracking_uri()
        else:  # the sweep's files are downloaded into <out>/sweep
            out, uri = Path(args.out or f"analysis-{args.sweep}"), args.mlflow_uri or tracking_uri()
            sweep = load_mlflow_sweep(args.sweep, out / "sweep", uri, args.sweep_id)
        report = build_report(
            sweep,
            out,
            baseline=args.baseline,
            arm=args.arm,
            split=args.split,
            resamples=args.bootstrap,
            seed=args.bootstrap_seed,
        )
    except AnalysisError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.markdown)
    print(f"files: {report.files[0].parent}")
    if not args.no_mlflow:
        try:
            run_id = log_report(report, sweep, uri)
            print(f"logged to MLflow run {run_id} ({uri}), artifacts analysis/")
        except Exception as error:  # the report is on disk, but the MLflow copy is not whole
            print(
                f"error: the report is in {report.files[0].parent}, but MLflow ({uri}) lacks "
                f"some or all of its {len(report.files)} files under analysis/: {error}. "
                "Run again when MLflow answers, or add --no-mlflow",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
