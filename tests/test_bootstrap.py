"""The two-level bootstrap (cases resampled, replicates through Student's t): golden values
recomputed here with plain NumPy from the documented RNG steps, and a simulation of its
calibration and power (studies sized like the EBHI held-out sweep; `bench/bootstrap_calibration.py`
runs more scenarios)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.bootstrap import case_interval, case_scores, draws, interval, rank_shares
from bench.bootstrap_calibration import simulated_study


def golden_images() -> pd.DataFrame:
    """3 arms x 3 seeds x 5 cases (1 to 3 images each), IoU made by hand."""
    rows = []
    images = {"c1": 1, "c2": 2, "c3": 3, "c4": 1, "c5": 2}
    level = {"base": 0.70, "better": 0.74, "same": 0.70}
    for arm, mean in level.items():
        for seed in (0, 1, 2):
            for case_index, (case, n) in enumerate(images.items()):
                for image in range(n):
                    iou = mean + 0.03 * seed - 0.02 * case_index + 0.01 * image
                    iou += 0.015 * ((seed * 7 + case_index * 3 + image + len(arm)) % 5 - 2)
                    rows.append(
                        {
                            "arm": arm,
                            "seed": seed,
                            "fold": 0,
                            "case": case,
                            "image": f"{case}_{image}",
                            "iou": iou,
                            "status": "completed",
                        }
                    )
    return pd.DataFrame(rows)


def plain_numpy_draws(frame: pd.DataFrame, arms: list[str], b: int, seed: int) -> np.ndarray:
    """The module's docstring, step by step, without its code."""
    cases = sorted(frame["case"].unique())
    seeds = sorted(frame["seed"].unique())
    totals = np.array(
        [
            [
                [
                    frame[(frame.arm == a) & (frame.seed == s) & (frame.case == c)].iou.sum()
                    for c in cases
                ]
                for s in seeds
            ]
            for a in arms
        ]
    )
    first = frame[(frame.arm == arms[0]) & (frame.seed == seeds[0])]
    counts = np.array([float((first.case == c).sum()) for c in cases])
    k, s, c = totals.shape
    rng = np.random.default_rng([seed, 0])
    w = rng.multinomial(c, [1 / c] * c, size=b).astype(float)
    per_rep = np.array(
        [[(w @ totals[i, j]) / (w @ counts) for j in range(s)] for i in range(k)]
    ).transpose(2, 0, 1)  # (B, K, S)
    case_level = per_rep.mean(-1)
    rep_scores = totals.sum(-1) / counts.sum()  # (K, S)
    observed = np.cov(rep_scores)
    dev = per_rep - per_rep.mean(-1, keepdims=True)
    noise = np.zeros((k, k))
    for j in range(s):
        noise += np.cov(dev[:, :, j].T)
    noise /= s - 1
    vals, vecs = np.linalg.eigh(observed - noise)
    between = vecs @ np.diag(np.clip(vals, 0, None)) @ vecs.T
    vals, vecs = np.linalg.eigh(between / s)
    root = vecs @ np.diag(np.sqrt(np.clip(vals, 0, None)))
    z = rng.standard_normal((b, k))
    t_scale = np.sqrt((s - 1) / rng.chisquare(s - 1, size=b))
    return case_level + (z @ root.T) * t_scale[:, None]


def test_draws_intervals_and_best_arm_shares_match_plain_numpy():
    frame = golden_images()
    arms = ["base", "better", "same"]
    expected = plain_numpy_draws(frame, arms, b=500, seed=7)
    actual = draws(case_scores(frame, "iou", arms), resamples=500, seed=7)
    np.testing.assert_allclose(actual, expected, rtol=1e-7)  # eigen-solver rounding only
    low, high = np.percentile(expected[:, 1] - expected[:, 0], [2.5, 97.5])
    assert interval(actual[:, 1] - actual[:, 0]) == pytest.approx((low, high))
    best = np.argmax(expected, axis=1)
    shares = rank_shares(actual, higher_is_better=True)
    np.testing.assert_allclose(shares[:, 0], [(best == i).mean() for i in range(3)])
    np.testing.assert_allclose(shares.sum(0), 1.0)  # every rank is someone's in every draw


def test_case_scores_sum_each_case_and_keep_shared_replicates():
    frame = golden_images()
    dropped = frame[~((frame.arm == "same") & (frame.seed == 2))]  # one arm lost a replicate
    scores = case_scores(dropped, "iou", ["base", "same"])
    assert scores.replicates == ((0, 0), (1, 0))
    assert scores.counts.tolist() == [1, 2, 3, 1, 2]
    c3 = frame[(frame.arm == "base") & (frame.seed == 1) & (frame.case == "c3")].iou.sum()
    assert scores.totals[0, 1, 2] == pytest.approx(c3)
    image_mean = frame[(frame.arm == "base") & (frame.seed <= 1)].groupby("seed").iou.mean()
    assert scores.replicate_scores[0] == pytest.approx(image_mean.to_numpy())
    with pytest.raises(ValueError, match="share no replicate"):
        case_scores(
            dropped[dropped.seed != 0].assign(seed=lambda f: f.seed + 10 * (f.arm == "same")),
            "iou",
            ["base", "same"],
        )


def test_rank_shares_of_hand_made_draws():
    samples = np.array([[0.9, 0.8, 0.7], [0.7, 0.8, 0.9], [0.9, 0.9, 0.1], [0.2, 0.3, 0.1]])
    shares = rank_shares(samples, higher_is_better=True)
    # arm 0: ranks 1, 3, 1 (tied best), 2; arm 1: 2, 2, 1, 1; arm 2: 3, 1, 3, 3
    np.testing.assert_allclose(shares[0], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(shares[1], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(shares[2], [0.25, 0.0, 0.75])
    lower = rank_shares(samples, higher_is_better=False)  # e.g. HD95: the lowest is best
    np.testing.assert_allclose(lower[2], [0.75, 0.0, 0.25])


def test_case_interval_agrees_with_a_plain_case_bootstrap():
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 6, 40).astype(float)
    totals = (0.6 + rng.normal(0, 0.1, 40)) * counts
    low, high = case_interval(totals, counts, resamples=4000, seed=1)
    picks = np.random.default_rng(2).integers(0, 40, (4000, 40))
    plain = totals[picks].sum(1) / counts[picks].sum(1)
    expected = np.percentile(plain, [2.5, 97.5])
    width = expected[1] - expected[0]
    assert low == pytest.approx(expected[0], abs=0.05 * width)  # Monte Carlo error only
    assert high == pytest.approx(expected[1], abs=0.05 * width)
    assert low < totals.sum() / counts.sum() < high


@pytest.mark.parametrize("replicates", [3, 5])
def test_interval_of_a_null_difference_covers_zero_95_percent_of_the_time(replicates):
    rng = np.random.default_rng(replicates)
    covered = []
    for study in range(200):
        samples = draws(simulated_study(rng, replicates, effect=0.0), 1000, seed=study)
        low, high = interval(samples[:, 1] - samples[:, 0])
        covered.append(low <= 0 <= high)
    coverage = float(np.mean(covered))
    assert 0.92 <= coverage <= 0.98, coverage


def test_a_real_difference_is_resolved_most_of_the_time(capsys):
    rng = np.random.default_rng(11)
    resolved = []
    for study in range(200):
        samples = draws(simulated_study(rng, 3, effect=0.03), 1000, seed=study)
        low, _ = interval(samples[:, 1] - samples[:, 0])
        resolved.append(low > 0)
    power = float(np.mean(resolved))
    with capsys.disabled():
        print(f"\npower to resolve a 0.03 IoU gain with 3 seeds and 40 test cases: {power:.2f}")
    assert power > 0.5
