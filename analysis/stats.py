"""Paired comparison of two arms over the replicates they share: seeds, or (seed, fold) pairs.

Why a paired t-test: trials of one seed share the data split and the initial weights, so most of
the seed-to-seed spread is common to both arms and cancels in the per-seed difference. With the
3 to 5 seeds a study affords, Student's t (not the normal) gives an honest interval, and a
signed-rank test cannot reach p < 0.05 at all below 6 pairs (its smallest p for 3 pairs is 0.25).
The test assumes the per-seed differences are roughly normal; with n this small that is an
assumption, not a check, which is why the table always shows n.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

TEST_NAME = "paired t-test (two-sided), 95% CI of the mean difference"


@dataclass(frozen=True)
class Comparison:
    n: int  # replicates scored in both arms
    mean_diff: float  # arm minus baseline
    ci_low: float
    ci_high: float
    p_value: float
    note: str = ""  # why a number is missing


def paired_comparison(
    arm: Mapping[Hashable, float], baseline: Mapping[Hashable, float]
) -> Comparison:
    """Arm vs baseline over the replicates both scored (replicate -> metric, a replicate being a
    seed or a (seed, fold) pair); NaN values are not scored."""
    seeds = sorted(s for s in arm.keys() & baseline.keys() if _scored(arm[s], baseline[s]))
    diffs = np.array([arm[s] - baseline[s] for s in seeds], dtype=float)
    n = len(diffs)
    if n == 0:
        return Comparison(0, math.nan, math.nan, math.nan, math.nan, "no seed scored in both")
    mean = float(diffs.mean())
    if n == 1:
        return Comparison(1, mean, math.nan, math.nan, math.nan, "one shared seed: no spread")
    standard_error = float(diffs.std(ddof=1)) / math.sqrt(n)
    if standard_error <= 1e-12 * max(1.0, abs(mean)):  # identical differences: t is undefined
        p_value = 1.0 if mean == 0.0 else 0.0
        return Comparison(n, mean, mean, mean, p_value, "differences identical on every seed")
    half_width = float(stats.t.ppf(0.975, df=n - 1)) * standard_error
    p_value = 2 * float(stats.t.sf(abs(mean) / standard_error, df=n - 1))
    return Comparison(n, mean, mean - half_width, mean + half_width, p_value)


def _scored(*values: float) -> bool:
    return all(not math.isnan(v) for v in values)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN ones are not in the family and
    stay NaN): the i-th smallest of m is multiplied by m - i + 1, and the adjusted values are
    made non-decreasing in that order, capped at 1."""
    finite = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[index] = running
    return adjusted
