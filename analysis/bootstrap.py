"""Uncertainty from the test cases and the replicates together: a two-level bootstrap.

A test-set score has two sources of chance: which training runs (seeds x folds, "replicates")
the study happened to make, and which test cases it happened to draw. The images of one case are
near-duplicates, so the case, not the image, is the unit that is resampled.

Each draw of an arm's score is the sum of two independent parts:

1. **Cases, resampled.** The cases are drawn with replacement (one multinomial draw per
   resample, shared by every arm, so comparisons stay paired); each arm's score is the image-mean
   over the drawn cases (a case drawn twice counts twice), averaged over the arm's replicates.
2. **Replicates, through Student's t.** 3 to 5 replicates are too few to resample (3 seeds give
   10 distinct resamples, and a bootstrap of 3 values covers far less than 95%). Their part is
   drawn from a multivariate t with S - 1 degrees of freedom, scaled by the covariance of the
   arms' replicate scores across replicates, less what the case-level noise already puts into
   that covariance (estimated from the same case resamples; otherwise it would be counted twice).

Percentile intervals of these draws cover a true difference of 0 in 94-98% of simulated studies
with case effects, seed effects and noise in any proportion, for 3 or 5 replicates
(`bench/bootstrap_calibration.py`); resampling both levels (the "pigeonhole" bootstrap) covered
74-100%, depending on the proportion. SciPy's `scipy.stats.bootstrap` resamples one level, so
it serves the per-class case-level intervals (`case_interval`), not this design.

The RNG use is fixed, so a test can redo every draw with plain NumPy: `np.random.default_rng(
[seed, stream])`, then `multinomial(C, [1/C] * C, size=B)` for the cases,
`standard_normal((B, K))` and `chisquare(S - 1, size=B)` for the replicates, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

DEFAULT_RESAMPLES = 4000  # Monte Carlo error of a 95% bound: about 1% of the interval's width
DEFAULT_SEED = 0
MIN_CASES = 5  # for a case-level interval (3 cases have 10 distinct resamples)
TIE_TOLERANCE = 1e-12  # relative: draws closer than this are equal (round-off)


@dataclass(frozen=True)
class CaseScores:
    """One metric's test scores of some arms, per case: `totals[k, s, c]` is the sum of the
    metric over case c's images for arm k's replicate s, `counts[c]` the case's image count."""

    arms: tuple[str, ...]
    replicates: tuple[tuple[int, int], ...]  # (seed, fold)
    cases: tuple[str, ...]
    totals: np.ndarray  # (K, S, C)
    counts: np.ndarray  # (C,)

    @property
    def replicate_scores(self) -> np.ndarray:
        """(K, S): each arm's image-mean score per replicate."""
        return self.totals.sum(-1) / self.counts.sum()

    @property
    def estimate(self) -> np.ndarray:
        """(K,): each arm's score, the mean over its replicates."""
        return self.replicate_scores.mean(-1)


def case_scores(
    test_images: pd.DataFrame, metric: str, arms: list[str] | None = None
) -> CaseScores:
    """The per-case table of `metric` for `arms` (default: every arm), on the replicates that
    every one of them scored. Raises ValueError when they share none."""
    frame = test_images.dropna(subset=[metric])
    arms = arms if arms is not None else [str(a) for a in dict.fromkeys(frame["arm"])]
    frame = frame[frame["arm"].isin(arms)]
    replicate = list(zip(frame["seed"].astype(int), frame["fold"].astype(int), strict=True))
    frame = frame.assign(replicate=replicate)
    shared = set.intersection(*(set(frame.loc[frame["arm"] == a, "replicate"]) for a in arms))
    if not shared:
        raise ValueError(f"arms {arms} share no replicate (seed, fold) with test scores")
    replicates = sorted(shared)
    frame = frame[frame["replicate"].isin(shared)]
    cases = sorted(str(c) for c in frame["case"].unique())
    sums = frame.groupby(["arm", "replicate", "case"])[metric].sum()
    index = pd.MultiIndex.from_product([arms, replicates, cases], names=sums.index.names)
    totals = sums.reindex(index, fill_value=0.0).to_numpy().reshape(len(arms), -1, len(cases))
    # every trial scores the same test images: the counts of any one trial are the counts
    first = frame[(frame["arm"] == arms[0]) & (frame["replicate"] == replicates[0])]
    counts = first.groupby("case").size().reindex(cases, fill_value=0).to_numpy(float)
    return CaseScores(tuple(arms), tuple(replicates), tuple(cases), totals, counts)


def draws(scores: CaseScores, resamples: int, seed: int, stream: int = 0) -> np.ndarray:
    """(B, K) bootstrap draws of each arm's score (see the module's docstring)."""
    rng = np.random.default_rng([seed, stream])
    k, s, c = scores.totals.shape
    weights = rng.multinomial(c, np.full(c, 1 / c), size=resamples).astype(float)  # (B, C)
    drawn_counts = weights @ scores.counts  # (B,)
    # (B, K, S): every replicate's image-mean over the drawn cases
    per_replicate = np.einsum("bc,ksc->bks", weights, scores.totals) / drawn_counts[:, None, None]
    case_level = per_replicate.mean(-1)  # (B, K)
    if s < 2:
        return case_level
    observed = np.cov(scores.replicate_scores, ddof=1).reshape(k, k)  # across replicates
    # the case-level noise inside each replicate's deviation from the replicates' mean
    deviations = per_replicate - per_replicate.mean(-1, keepdims=True)  # (B, K, S)
    deviations = deviations - deviations.mean(0)
    noise = np.einsum("bks,bls->kl", deviations, deviations) / (resamples - 1) / (s - 1)
    between = _clip_to_psd(observed - noise)  # the replicates' own covariance
    root = _psd_root(between / s)  # covariance of the mean over s replicates
    normal = rng.standard_normal((resamples, k))
    scale = np.sqrt((s - 1) / rng.chisquare(s - 1, size=resamples))  # t: normal / sqrt(chi2/df)
    return case_level + (normal @ root.T) * scale[:, None]


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of draws (NaN ones left out)."""
    values = values[~np.isnan(values)]
    if not len(values):
        return (np.nan, np.nan)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def rank_shares(samples: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """(K, K): the share of draws in which arm k has rank r + 1 (1 = best; ties share the
    better rank)."""
    ordered = samples if higher_is_better else -samples
    # arms equal up to round-off tie: identical arms' draws differ in their last bits
    tolerance = TIE_TOLERANCE * np.abs(ordered).max(-1, keepdims=True)[:, :, None]  # (B, 1, 1)
    better = ordered[:, None, :] > ordered[:, :, None] + tolerance
    ranks = better.sum(-1)  # (B, K): arms strictly better
    k = samples.shape[1]
    return np.stack([(ranks == r).mean(0) for r in range(k)], axis=1)


def case_interval(
    case_totals: np.ndarray, case_counts: np.ndarray, resamples: int, seed: int, stream: int = 0
) -> tuple[float, float]:
    """95% percentile interval of an image-mean score when only the cases are resampled
    (`scipy.stats.bootstrap`, one level); case_totals and case_counts are (C,). None (NaN) for
    fewer than MIN_CASES cases, whose few distinct resamples make no interval."""
    if len(case_totals) < MIN_CASES:
        return (np.nan, np.nan)

    def image_mean(totals: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
        return totals.sum(axis) / counts.sum(axis)

    result = stats.bootstrap(
        (case_totals, case_counts),
        image_mean,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng([seed, stream]),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _clip_to_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clip(min=0)) @ vectors.T


def _psd_root(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    # an eigenvalue that is zero up to round-off (more arms than replicates, or arms that move
    # together) must stay zero: its square root (1e-20 -> 1e-10) would set identical arms apart
    values[values <= values.max(initial=0.0) * len(values) * np.finfo(float).eps] = 0.0
    return vectors * np.sqrt(values)
