"""Test-set tables with uncertainty from cases and replicates (see `analysis.bootstrap`): each
arm's interval and chance of being best, its rank distribution, each paired difference against
the baseline, its worst cases, and per-class intervals.

All of them read `test_images.parquet` (one row per trial x test image), which only trials that
ended with a trained model have. Every random draw comes from `np.random.default_rng([seed,
stream])` with a fixed stream per table, metric and arm, so a report is reproduced exactly from
its recorded resample count and seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.bootstrap import case_interval, case_scores, draws, interval, rank_shares
from tunelab.metric_names import ALL_METRICS
from tunelab.results import SCORED_STATUSES

WORST_CASES = 10  # per arm, in the worst-cases table


@dataclass(frozen=True)
class Resampling:
    """How the intervals were drawn; recorded in the report."""

    resamples: int
    seed: int

    def describe(self) -> str:
        return (
            "two-level bootstrap (test cases resampled, replicates through Student's t; "
            f"analysis/bootstrap.py), {self.resamples} resamples, seed {self.seed}"
        )


def scored_images(test_images: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """The per-image test scores of the arms' completed and converged trials."""
    frame = test_images[test_images["status"].isin(SCORED_STATUSES)]
    return frame[frame["arm"].isin(arms)]


def arm_table(
    images: pd.DataFrame, arms: list[str], metrics: tuple[str, ...], how: Resampling
) -> pd.DataFrame:
    """Arm x metric: the mean over replicates, its 95% interval (cases x replicates), and the
    share of resamples in which the arm is the best of all arms on that metric (the `rank_1`
    of `rank_table`, from the same draws)."""
    rows = []
    for m_index, metric in enumerate(metrics):
        present = [a for a in arms if (images["arm"] == a).any()]
        ranked = joint_ranks(images, present, metric, how)
        best = dict(zip(present, ranked[0][:, 0].tolist(), strict=True)) if ranked else {}
        for a_index, arm in enumerate(present):
            scores = case_scores(images, metric, [arm])
            samples = draws(scores, how.resamples, how.seed, stream=m_index * 100 + a_index)
            low, high = interval(samples[:, 0])
            rows.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "mean": float(scores.estimate[0]),
                    "interval_low": low,
                    "interval_high": high,
                    "p_best": best.get(arm, np.nan),
                    "replicates": len(scores.replicates),
                    "cases": len(scores.cases),
                }
            )
    columns = [
        "arm",
        "metric",
        "mean",
        "interval_low",
        "interval_high",
        "p_best",
        "replicates",
        "cases",
    ]
    return pd.DataFrame(rows, columns=columns)


def joint_ranks(
    images: pd.DataFrame, arms: list[str], metric: str, how: Resampling
) -> tuple[np.ndarray, int] | None:
    """(`rank_shares` of the arms on `metric`, the replicates they share), from joint draws on
    those replicates; one stream per metric, so every table that ranks on it agrees. None for
    fewer than 2 arms or no replicate that every arm scored."""
    if len(arms) < 2:
        return None
    try:
        scores = case_scores(images, metric, arms)
    except ValueError:  # no replicate shared by every arm: no joint ranking
        return None
    stream = 1000 + list(ALL_METRICS).index(metric)
    samples = draws(scores, how.resamples, how.seed, stream)
    return rank_shares(samples, ALL_METRICS[metric].higher_is_better), len(scores.replicates)


def rank_table(images: pd.DataFrame, arms: list[str], metric: str, how: Resampling) -> pd.DataFrame:
    """Arm x rank (1 = best): the share of resamples in which the arm has that rank, on
    `metric`; challengeR's ranking stability, for an ablation's arms. Empty where the arms
    cannot be ranked jointly (see `joint_ranks`)."""
    present = [a for a in arms if (images["arm"] == a).any()]
    ranked = joint_ranks(images, present, metric, how)
    if ranked is None:
        return pd.DataFrame(columns=["arm", "replicates"])
    shares, replicates = ranked
    frame = pd.DataFrame(shares, columns=[f"rank_{r + 1}" for r in range(len(present))])
    frame.insert(0, "arm", present)
    frame["replicates"] = replicates
    return frame


def difference_intervals(
    images: pd.DataFrame, arms: list[str], baseline: str, metrics: tuple[str, ...], how: Resampling
) -> dict[tuple[str, str], tuple[float, float]]:
    """(arm, metric) -> 95% interval of the arm's score minus the baseline's, from draws that
    resample the same cases and replicates for both (on the replicates both scored)."""
    intervals = {}
    for m_index, metric in enumerate(metrics):
        for a_index, arm in enumerate(arms):
            if arm == baseline:
                continue
            try:
                scores = case_scores(images, metric, [arm, baseline])
            except ValueError:  # no replicate both scored: the comparison says why
                continue
            stream = 3000 + m_index * 100 + a_index
            samples = draws(scores, how.resamples, how.seed, stream)
            intervals[(arm, metric)] = interval(samples[:, 0] - samples[:, 1])
    return intervals


def worst_cases(images: pd.DataFrame, arms: list[str], metric: str = "iou") -> pd.DataFrame:
    """Per arm, the WORST_CASES cases with the lowest `metric` (highest where lower is better),
    averaged over the case's images and the arm's replicates, with the case's class."""
    higher_is_better = ALL_METRICS[metric].higher_is_better
    frames = []
    for arm in arms:
        one = images[images["arm"] == arm]
        if one.empty:
            continue
        by_case = one.groupby("case").agg(
            **{
                "class": ("class", "first"),
                metric: (metric, "mean"),
                "images": ("image", "nunique"),
            }
        )
        worst = by_case.sort_values(metric, ascending=higher_is_better).head(WORST_CASES)
        frames.append(worst.reset_index().assign(arm=arm))
    columns = ["arm", "case", "class", metric, "images"]
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


def class_table(
    images: pd.DataFrame, arms: list[str], metric: str, how: Resampling
) -> pd.DataFrame:
    """Arm x tumour class: the metric's image-mean over the class's test cases (averaged over
    replicates) and its 95% interval when only the cases are resampled (`case_interval`)."""
    rows = []
    for a_index, arm in enumerate(arms):
        one = images[images["arm"] == arm]
        replicates = one.groupby(["seed", "fold"]).ngroups
        for c_index, (name, of_class) in enumerate(one.groupby("class", sort=True)):
            per_case = of_class.groupby("case")[metric].agg(["sum", "count"])
            # the same images in every replicate: a case's total over them, per replicate
            totals = per_case["sum"].to_numpy() / replicates
            counts = per_case["count"].to_numpy(float) / replicates
            stream = 4000 + a_index * 100 + c_index
            low, high = case_interval(totals, counts, how.resamples, how.seed, stream)
            rows.append(
                {
                    "arm": arm,
                    "class": name,
                    f"{metric}_mean": float(totals.sum() / counts.sum()),
                    "case_boot_low": low,
                    "case_boot_high": high,
                    "cases": len(per_case),
                    "replicates": replicates,
                }
            )
    return pd.DataFrame(rows)
