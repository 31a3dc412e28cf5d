"""How well calibrated are the report's intervals over test cases and replicates?

Simulated studies of two arms over the same test cases and replicates, with no true difference
(coverage of 0 by the 95% interval) or a true gain (power: the interval excludes 0), under
variance components in several proportions. Compared: tunelab's two-level bootstrap (cases
resampled, replicates through Student's t; `analysis/bootstrap.py`) and the "pigeonhole"
bootstrap that resamples both levels.

    python -m bench.bootstrap_calibration [--studies 1000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis.bootstrap import CaseScores, draws, interval
from bench.common import save

# standard deviations: (the trial's own level, the arm's own case effect, per-image noise);
# "ebhi" is sized like the EBHI held-out sweep (bench/results/ebhi_table1_cpu_heldout)
SCENARIOS = {
    "ebhi": (0.006, 0.018, 0.07),
    "images only": (0.0, 0.0, 0.08),
    "trials heavy": (0.015, 0.007, 0.04),
    "cases heavy": (0.0, 0.03, 0.03),
    "trials only": (0.015, 0.0, 0.005),
}


def simulated_study(
    rng: np.random.Generator,
    replicates: int,
    effect: float,
    components: tuple[float, float, float] = SCENARIOS["ebhi"],
    cases: int = 40,
) -> CaseScores:
    """Two arms over the same cases and seeds: a case effect and a seed effect shared by both,
    each trial's own level, each arm's own case effect, and per-image noise (1 to 9 images per
    case); arm b is better by `effect`."""
    trial, arm_case, image = components
    counts = rng.integers(1, 10, cases).astype(float)
    mean = (
        0.7
        + np.array([0.0, effect])[:, None, None]
        + rng.normal(0, 0.05, (1, 1, cases))  # case difficulty
        + rng.normal(0, 0.02, (1, replicates, 1))  # seed: split and initial weights
        + rng.normal(0, trial, (2, replicates, 1))
        + rng.normal(0, arm_case, (2, 1, cases))
        + rng.normal(0, image, (2, replicates, cases)) / np.sqrt(counts)
    )
    seeds = tuple((s, 0) for s in range(replicates))
    return CaseScores(("a", "b"), seeds, tuple(map(str, range(cases))), mean * counts, counts)


def pigeonhole(scores: CaseScores, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, K) draws resampling the cases and the replicates independently."""
    _, s, c = scores.totals.shape
    cases = rng.multinomial(c, np.full(c, 1 / c), size=resamples).astype(float)
    seeds = rng.multinomial(s, np.full(s, 1 / s), size=resamples).astype(float)
    per_replicate = (
        np.einsum("bc,ksc->bks", cases, scores.totals) / (cases @ scores.counts)[:, None, None]
    )
    return np.einsum("bks,bs->bk", per_replicate, seeds) / s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    for replicates in (3, 5):
        for name, components in SCENARIOS.items():
            rng = np.random.default_rng([replicates, len(rows)])
            hits = {"two-level": 0, "pigeonhole": 0}
            for study in range(args.studies):
                scores = simulated_study(rng, replicates, 0.0, components)
                for method, samples in (
                    ("two-level", draws(scores, args.resamples, seed=study)),
                    ("pigeonhole", pigeonhole(scores, args.resamples, rng)),
                ):
                    low, high = interval(samples[:, 1] - samples[:, 0])
                    hits[method] += low <= 0 <= high
            powered = 0
            for study in range(args.studies):
                samples = draws(
                    simulated_study(rng, replicates, 0.03, components), args.resamples, seed=study
                )
                powered += interval(samples[:, 1] - samples[:, 0])[0] > 0
            row = {
                "replicates": replicates,
                "scenario": name,
                "coverage_two_level": hits["two-level"] / args.studies,
                "coverage_pigeonhole": hits["pigeonhole"] / args.studies,
                "power_0.03": powered / args.studies,
            }
            rows.append(row)
            print(
                f"{replicates} replicates, {name:>13}: coverage two-level "
                f"{row['coverage_two_level']:.3f}, pigeonhole {row['coverage_pigeonhole']:.3f}; "
                f"power at +0.03 {row['power_0.03']:.3f}",
                flush=True,
            )
    seconds = time.perf_counter() - start
    print(f"{args.studies} studies per cell, {args.resamples} resamples, {seconds:.0f} s")
    save(
        "bootstrap_calibration",
        {"studies": args.studies, "resamples": args.resamples, "rows": rows},
    )


if __name__ == "__main__":
    main()
