"""Golden test: a fixed results table (tests/data/golden_results.csv) gives exactly the means,
stds, confidence intervals and p-values computed here by hand, with the standard library.

The table has 4 arms x 3 seeds: `baseline` and `dropout` complete on every seed, `augmentation`
has one pruned seed (its 0.600 must not enter any mean or pairing), `bce_logits` failed or
diverged on every seed. p-values use the closed forms of Student's t distribution for 1 and 2
degrees of freedom, so nothing here shares code with `analysis.stats`.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from analysis import class_tables, comparison_table, main_table, threshold_table
from analysis.stats import holm
from tunelab.summary import REFERENCE_ARM

GOLDEN = Path(__file__).parent / "data" / "golden_results.csv"
T_975 = {1: 12.706204736174707, 2: 4.302652729911275}  # Student's t, 97.5th percentile


def two_sided_p(t: float, df: int) -> float:
    if df == 1:  # Cauchy
        return 1 - 2 / math.pi * math.atan(abs(t))
    if df == 2:
        return 1 - abs(t) / math.sqrt(2 + t * t)
    raise ValueError(df)


def load_frame() -> pd.DataFrame:
    return pd.read_csv(GOLDEN, dtype={"threshold": str, "error": str})


def golden_rows(threshold: str = "0.5") -> list[dict[str, str]]:
    with GOLDEN.open() as file:
        return [row for row in csv.DictReader(file) if row["threshold"] == threshold]


def scored(arm: str, column: str, threshold: str = "0.5") -> dict[int, float]:
    return {
        int(row["seed"]): float(row[column])
        for row in golden_rows(threshold)
        if row["arm"] == arm and row["status"] in ("completed", "converged")
    }


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return load_frame()


@pytest.mark.parametrize("arm", ["baseline", "dropout", "augmentation"])
@pytest.mark.parametrize("metric", ["iou", "dice", "pixel_error", "time_s"])
def test_main_table_means_and_stds(frame: pd.DataFrame, arm: str, metric: str) -> None:
    values = list(scored(arm, metric).values())
    row = main_table(frame).set_index("arm").loc[arm]
    assert row[f"{metric}_mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
    assert row[f"{metric}_std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert row["n"] == len(values)


def test_main_table_counts_every_trial_and_averages_only_scored_ones(frame: pd.DataFrame) -> None:
    table = main_table(frame).set_index("arm")
    assert list(table.index) == [REFERENCE_ARM, "baseline", "dropout", "augmentation", "bce_logits"]
    assert table.loc["augmentation", "n"] == 2  # the pruned seed is shown, not averaged
    assert table.loc["augmentation", "statuses"] == "2 converged, 1 pruned"
    assert table.loc["bce_logits", "n"] == 0
    assert math.isnan(table.loc["bce_logits", "iou_mean"])
    assert table.loc["bce_logits", "statuses"] == "2 failed, 1 diverged"
    assert "accuracy_mean" not in table  # binary: accuracy is 1 - pixel error


def test_reference_row_is_the_all_foreground_score_per_seed(frame: pd.DataFrame) -> None:
    per_seed = {}
    for row in golden_rows():
        if row["foreground_iou_all"]:
            per_seed.setdefault(int(row["seed"]), float(row["foreground_iou_all"]))
    reference = main_table(frame).iloc[0]
    assert reference["iou_mean"] == pytest.approx(statistics.mean(per_seed.values()), abs=1e-12)
    assert reference["iou_std"] == pytest.approx(statistics.stdev(per_seed.values()), abs=1e-12)
    assert reference["n"] == 3


@pytest.mark.parametrize("arm", ["dropout", "augmentation"])
@pytest.mark.parametrize("metric", ["iou", "dice", "pixel_error"])
def test_paired_comparisons(frame: pd.DataFrame, arm: str, metric: str) -> None:
    base, other = scored("baseline", metric), scored(arm, metric)
    diffs = [other[seed] - base[seed] for seed in sorted(base.keys() & other.keys())]
    n, mean, sd = len(diffs), statistics.mean(diffs), statistics.stdev(diffs)
    half = T_975[n - 1] * sd / math.sqrt(n)
    t = mean / (sd / math.sqrt(n))
    row = comparison_table(frame, "baseline").set_index(["arm", "metric"]).loc[(arm, metric)]
    assert row["n"] == n == (3 if arm == "dropout" else 2)
    assert row["mean_diff"] == pytest.approx(mean, abs=1e-12)
    assert row["ci_low"] == pytest.approx(mean - half, abs=1e-9)
    assert row["ci_high"] == pytest.approx(mean + half, abs=1e-9)
    assert row["p_value"] == pytest.approx(two_sided_p(t, n - 1), abs=1e-9)


def test_comparison_with_no_shared_seed_says_why(frame: pd.DataFrame) -> None:
    row = (
        comparison_table(frame, "baseline").set_index(["arm", "metric"]).loc[("bce_logits", "iou")]
    )
    assert row["n"] == 0
    assert math.isnan(row["p_value"])
    # the statuses that left no pair are named
    assert row["note"] == (
        "no replicate scored in both (bce_logits: 2 failed, 1 diverged; "
        "baseline: 2 converged, 1 completed)"
    )
    assert math.isnan(row["p_holm"])  # not in the family of tested comparisons


def test_threshold_table(frame: pd.DataFrame) -> None:
    table = threshold_table(frame, "dropout").set_index("threshold")
    assert list(table.index) == ["0.5", "otsu"]
    for label in ("0.5", "otsu"):
        values = list(scored("dropout", "iou", label).values())
        assert table.loc[label, "iou_mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
        assert table.loc[label, "iou_std"] == pytest.approx(statistics.stdev(values), abs=1e-12)


def test_class_tables(frame: pd.DataFrame) -> None:
    tables = class_tables(frame)
    assert list(tables) == ["baseline", "dropout", "augmentation", "bce_logits"]
    for name in ("Normal", "Polyp"):
        values = list(scored("augmentation", f"iou/{name}").values())
        row = tables["augmentation"].set_index("class").loc[name]
        assert row["iou_mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
        assert row["n"] == 2


def test_holm_matches_a_hand_worked_family():
    # m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04;
    # made non-decreasing: 0.02, 0.03, 0.06, 0.06; back in the input's order:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a NaN is not in the family (m = 2 here), and nothing exceeds 1
    adjusted = holm([0.6, math.nan, 0.7])
    assert adjusted[0] == pytest.approx(1.0) and adjusted[2] == pytest.approx(1.0)
    assert math.isnan(adjusted[1])
    assert holm([]) == []
