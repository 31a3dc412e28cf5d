"""Is `tunelab.predict` as fast as a bare `model(x)` loop? Images/s on the same images.

All sides get the images already decoded (PIL, at their own size); the timed part is what
each does from there. tunelab: `Ensemble.probabilities` (resize to the training size,
normalise, predict in batches in the trials' precision, sigmoid, resize back to each image's
size) with one trial's model. Bare: the same model on tensors resized and normalised beforehand
(untimed), `torch.sigmoid(model(x))` per batch under `torch.no_grad()` in fp32. Bare with
resizing: the bare loop plus the same resizes in and out, written by hand.

    python -m bench.predict_speed SWEEP_DIR IMAGES_DIR [--trial ID] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import save
from tunelab.data.batches import normalize
from tunelab.predict.__main__ import BATCH
from tunelab.predict.ensemble import Ensemble
from tunelab.predict.images import find_images, read_image, resize
from tunelab.predict.models import arm_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("images")
    parser.add_argument(
        "--trial", help="the trial whose model runs (default: the best arm's first)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    members = (
        arm_models(Path(args.sweep), single=args.trial)
        if args.trial
        else arm_models(Path(args.sweep))[:1]
    )
    ensemble = Ensemble(members, "auto")
    channels, size = ensemble.cfg.data.channels, ensemble.cfg.data.input_size
    decoded = [read_image(found.path, channels)[0] for found in find_images(Path(args.images))]
    batches = [decoded[i : i + BATCH] for i in range(0, len(decoded), BATCH)]
    model, member = ensemble.models[0], members[0]
    prepared = [
        normalize(
            np.stack([resize(im, size) for im in batch]).transpose(0, 3, 1, 2),
            member.mean,
            member.std,
        )
        for batch in batches
    ]

    def tunelab_pass() -> None:
        for batch in batches:
            ensemble.probabilities(batch)

    @torch.no_grad()
    def bare_pass() -> None:
        for x in prepared:
            torch.sigmoid(model(x.to(ensemble.device)))

    @torch.no_grad()
    def bare_with_resizing() -> None:  # the same work as tunelab, written out by hand
        for batch in batches:
            small = np.stack([resize(im, size) for im in batch]).transpose(0, 3, 1, 2)
            probs = torch.sigmoid(model(normalize(small, member.mean, member.std)))
            for p, im in zip(probs, batch, strict=True):
                torch.nn.functional.interpolate(p[None], size=im.shape[:2], mode="bilinear")

    runs = {"tunelab": tunelab_pass, "bare": bare_pass, "bare_with_resizing": bare_with_resizing}
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up: first-call allocations and imports
        run()
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            timings[name].append(len(decoded) / (time.perf_counter() - start))
    rates = {name: statistics.median(values) for name, values in timings.items()}
    print(
        f"{len(decoded)} images, model of trial {member.trial_id} ({size}x{size}, "
        f"{ensemble.device.type}, autocast {ensemble.autocast_dtype}): tunelab.predict "
        f"{rates['tunelab']:.0f} images/s; bare model(x) on tensors resized beforehand "
        f"{rates['bare']:.0f} images/s ({rates['tunelab'] / rates['bare']:.2f}x); bare with the "
        f"same resizing in and out {rates['bare_with_resizing']:.0f} images/s "
        f"({rates['tunelab'] / rates['bare_with_resizing']:.2f}x)"
    )
    save(
        "predict_speed",
        {"images": len(decoded), "trial": member.trial_id, "rates": rates, "timings": timings},
    )


if __name__ == "__main__":
    main()
