"""`python -m tunelab.predict SWEEP IMAGES_DIR --out OUT_DIR`: segment new images with an arm's
models, ensembled over its seeds and folds, and (with --labels) score them.

Writes into OUT_DIR only: a mask PNG per image (0/255 binary, the class index for multi-class)
at the image's own size, `predictions.csv`, optionally probabilities (`.npy`), overlays and, with
--labels, `scores.csv` (per image) and `scores_summary.csv`. Exit status 2 for input it cannot
use, with a message that names it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from tunelab import metrics
from tunelab.metric_names import IMAGE_METRICS
from tunelab.predict.ensemble import Ensemble, as_logits
from tunelab.predict.fields import FIELD_FILES, write_fields
from tunelab.predict.images import Found, find_images, label_index, read_image, read_label
from tunelab.predict.models import (
    PredictError,
    TrialModel,
    arm_models,
    sweep_folder,
)
from tunelab.predict.registry import register
from tunelab.results import read_identity
from tunelab.tracking.layout import TAG_TRIAL_ID
from tunelab.tracking.store import tracking_uri

BATCH = 16  # images per forward pass
PROGRESS_ABOVE = 200  # folders larger than this get a progress line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tunelab.predict",
        description=" ".join(__doc__.split("\n\n")[0].split()),  # the whole first paragraph
    )
    parser.add_argument(
        "sweep", help="a finished sweep's folder (runs/<space NAME>), or its MLflow experiment"
    )
    parser.add_argument(
        "--mlflow-uri",
        help="with an experiment: its store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    parser.add_argument(
        "images",
        nargs="?",
        help="a folder of images (flat, or a dataset layout); optional with --receptive-field",
    )
    parser.add_argument("--out", required=True, help="output folder; nothing is written elsewhere")
    parser.add_argument("--arm", help="the arm whose models predict (default: the best by IoU)")
    parser.add_argument("--single", metavar="TRIAL_ID", help="one trial's model, not the ensemble")
    parser.add_argument("--labels", metavar="DIR", help="label PNGs (matched by file stem): score")
    parser.add_argument("--probabilities", action="store_true", help="also write .npy maps")
    parser.add_argument("--overlay", action="store_true", help="also write the mask's contour")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--register",
        metavar="NAME",
        help="also register the ensemble in the MLflow Model Registry as NAME (a pyfunc model)",
    )
    parser.add_argument(
        "--receptive-field",
        action="store_true",
        help="instead of predicting: the arm's theoretical and effective receptive fields",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    # options anywhere: `SWEEP --arm dice IMAGES_DIR` as well as `SWEEP IMAGES_DIR --arm dice`
    args = build_parser().parse_intermixed_args(argv)
    try:
        summary = predict(args)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary)
    return 0


def predict(args: argparse.Namespace) -> str:
    folder = sweep_folder(args.sweep, args.mlflow_uri)
    members = arm_models(folder, args.arm, args.single)
    ensemble = Ensemble(members, args.device)
    registered = _register(ensemble, folder, args) if args.register else ""
    if args.receptive_field:
        out = Path(args.out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        found = find_images(Path(args.images)) if args.images else []
        text = write_fields(ensemble, found, out)
        return f"{text}\n{_log_to_trial_runs(out, members, folder, args)}"
    if not args.images:
        raise PredictError("no images folder given (it is optional only with --receptive-field)")
    found = find_images(Path(args.images))
    labels = label_index(Path(args.labels)) if args.labels else {}
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows, scores, skipped, converted = [], [], [], {}
    start, done = time.perf_counter(), 0
    for offset in range(0, len(found), BATCH):
        batch, pixels = [], []
        for item in found[offset : offset + BATCH]:
            try:
                image, mode = read_image(item.path, ensemble.cfg.data.channels)
            except (OSError, SyntaxError, ValueError) as error:
                skipped.append(f"{item.path}: unreadable ({error})")
                continue
            if mode:
                converted[mode] = converted.get(mode, 0) + 1
            batch.append(item)
            pixels.append(image)
        if not batch:
            continue
        for item, image, probs in zip(batch, pixels, ensemble.probabilities(pixels), strict=True):
            mask = ensemble.masks(probs)
            target = _inside(out, item.name)
            _write_outputs(target, item.path, probs, mask, ensemble.binary, args)
            foreground = mask > 0
            confidence = probs[0] if ensemble.binary else probs.max(0)
            rows.append(
                {
                    "image": item.name,
                    "height": image.shape[0],
                    "width": image.shape[1],
                    "foreground_fraction": float(foreground.mean()),
                    "mean_probability": float(confidence[foreground].mean())
                    if foreground.any()
                    else float("nan"),
                    "models": len(members),
                }
            )
            if labels:
                scores.append(_score(item, probs, labels, ensemble))
        done += len(batch)
        if len(found) > PROGRESS_ABOVE:
            print(f"\r{done}/{len(found)} images", end="", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    if len(found) > PROGRESS_ABOVE:
        print(file=sys.stderr)
    if not rows:
        raise PredictError(f"{args.images}: no readable image; " + "; ".join(skipped[:3]))
    pd.DataFrame(rows).to_csv(out / "predictions.csv", index=False)
    lines = [
        f"{len(rows)} images -> {out} with {len(members)} model(s) of "
        f"{members[0].arm!r} ({', '.join(m.trial_id for m in members)}): "
        f"{len(rows) / seconds:.1f} images/s"
    ]
    lines += [f"skipped {entry}" for entry in skipped]
    for mode, count in converted.items():
        wanted = "greyscale" if ensemble.cfg.data.channels == 1 else "RGB"
        lines.append(
            f"warning: converted {count} {mode} image(s) to {wanted}, as the model expects"
        )
    if labels:
        lines.append(_write_scores(out, scores))
    if registered:
        lines.append(registered)
    return "\n".join(lines)


def _sweep_store(folder: Path, args: argparse.Namespace) -> tuple[str, str]:
    """(the sweep's MLflow experiment, its store): --mlflow-uri, else what the sweep recorded."""
    identity = read_identity(folder)
    uri = args.mlflow_uri or identity.get("mlflow_uri") or tracking_uri()
    return identity.get("experiment") or folder.name, uri


def _log_to_trial_runs(
    out: Path, members: list[TrialModel], folder: Path, args: argparse.Namespace
) -> str:
    """Log the receptive-field files to each member trial's MLflow run (artifact path
    `receptive_field/`); a store that cannot take them is reported, not fatal."""
    experiment_name, uri = _sweep_store(folder, args)
    client = MlflowClient(uri)
    try:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            return f"MLflow: no experiment of this sweep in {uri}; the files are in {out}"
        for member in members:
            query = f"tags.`{TAG_TRIAL_ID}` = '{member.trial_id}'"
            for run in client.search_runs([experiment.experiment_id], query):
                for name in FIELD_FILES:
                    client.log_artifact(run.info.run_id, str(out / name), "receptive_field")
    except Exception as error:  # the files are on disk; MLflow is a copy
        return f"MLflow: could not log the receptive field to {uri} ({error}); files in {out}"
    return f"logged to the MLflow runs of {len(members)} trial(s) in {uri}"


def _register(ensemble: Ensemble, folder: Path, args: argparse.Namespace) -> str:
    """Register the ensemble in the sweep's MLflow store (its experiment), before predicting."""
    experiment, uri = _sweep_store(folder, args)
    version = register(ensemble, args.register, experiment, uri)
    model_uri = f"models:/{args.register}/{version}"
    return f"registered {args.register!r} version {version} in {uri} ({model_uri})"


def _inside(out: Path, name: str) -> Path:
    """The output stem of an image: its relative path under OUT_DIR, never outside it."""
    target = (out / name).with_suffix("").resolve()
    if not target.is_relative_to(out):
        raise PredictError(f"{name}: would be written outside {out}")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _write_outputs(
    target: Path,
    source: Path,
    probs: np.ndarray,
    mask: np.ndarray,
    binary: bool,
    args: argparse.Namespace,
) -> None:
    Image.fromarray(mask * 255 if binary else mask).save(f"{target}_mask.png")
    if args.probabilities:
        np.save(f"{target}_probabilities.npy", probs[0] if binary else probs)
    if args.overlay:
        with Image.open(source) as original:  # drawn on the image as it is, in colour
            rgb = np.array(original.convert("RGB"))
        contours, _ = cv2.findContours(
            (mask > 0).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(rgb, contours, -1, (255, 255, 0), 1)
        Image.fromarray(rgb).save(f"{target}_overlay.png")


def _score(item: Found, probs: np.ndarray, labels: dict[str, Path], ensemble: Ensemble) -> dict:
    label_path = labels.get(Path(item.name).stem)
    if label_path is None:
        return {"image": item.name, "label": "", "note": "no label with this file stem"}
    target = read_label(label_path, ensemble.cfg.data.task)
    if target.shape != probs.shape[1:]:
        return {"image": item.name, "label": str(label_path), "note": "label size differs"}
    by_class, _ = metrics.image_scores(
        as_logits(probs),
        torch.from_numpy(target)[None],
        (ensemble.threshold,),
        otsu=False,
        boundary_tolerance=ensemble.cfg.eval.boundary_tolerance,
    )
    return {
        "image": item.name,
        "label": str(label_path),
        **{name: float(by_class[name][0]) for name in IMAGE_METRICS},
        "note": "",
    }


def _write_scores(out: Path, scores: list[dict]) -> str:
    frame = pd.DataFrame(scores)
    frame.to_csv(out / "scores.csv", index=False)
    scored = frame[frame["note"] == ""] if "note" in frame else frame
    summary = scored[list(IMAGE_METRICS)].agg(["mean", "std"]).T if len(scored) else pd.DataFrame()
    summary.to_csv(out / "scores_summary.csv")
    unscored = len(frame) - len(scored)
    means = (
        ", ".join(f"{m} {scored[m].mean():.4f}" for m in IMAGE_METRICS) if len(scored) else "none"
    )
    return f"scored {len(scored)} image(s) against their labels ({unscored} without): {means}"


if __name__ == "__main__":
    raise SystemExit(main())
