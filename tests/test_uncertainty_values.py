"""analysis.uncertainty's tables by value, on hand-made test scores whose answers are known:
arms that differ by a constant on every image keep their order in every draw (the draws
resample the same cases and replicates for all arms), so P(best) and the rank shares are 0 or
1 exactly, and tied arms share their rank; the worst cases are checked against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.uncertainty import Resampling, arm_table, joint_ranks, rank_table, worst_cases

CLASSES = ("Normal", "Polyp", "Adenocarcinoma")
HOW = Resampling(resamples=1000, seed=0)


def image_row(arm: str, seed: int, case: int, image: int, iou: float) -> dict[str, object]:
    """One test image's row of test_images.parquet (HD95 falls as IoU rises)."""
    return {
        "arm": arm,
        "seed": seed,
        "fold": 0,
        "case": f"c{case:02d}",
        "image": f"c{case:02d}_{image}",
        "class": CLASSES[case % 3],
        "status": "completed",
        "iou": iou,
        "hd95": 10 * (1 - iou),
    }


def shifted_arms(shifts: dict[str, float], cases: int = 12, seeds: int = 3) -> pd.DataFrame:
    """Arms that share every case effect, seed effect and image's noise, and differ only by
    `shifts[arm]` added to each image's IoU."""
    rng = np.random.default_rng(0)
    case_effect = rng.normal(0, 0.05, cases)
    rows = []
    for seed in range(seeds):
        seed_effect = rng.normal(0, 0.02)
        for case in range(cases):
            for image in range(1 + case % 3):
                iou = 0.7 + seed_effect + case_effect[case] + rng.normal(0, 0.03)
                rows += [image_row(arm, seed, case, image, iou + s) for arm, s in shifts.items()]
    return pd.DataFrame(rows)


def test_an_arm_better_on_every_image_is_best_in_every_draw() -> None:
    images = shifted_arms({"poor": 0.0, "good": 0.1})
    table = arm_table(images, ["poor", "good"], ("iou", "hd95"), HOW).set_index(["arm", "metric"])
    # lower HD95 is better: "good" is best on both metrics
    assert table["p_best"].to_dict() == {
        ("poor", "iou"): 0.0,
        ("good", "iou"): 1.0,
        ("poor", "hd95"): 0.0,
        ("good", "hd95"): 1.0,
    }
    replicate_means = images.groupby(["arm", "seed"])["iou"].mean()  # image-mean per replicate
    expected = replicate_means.groupby("arm").mean()
    iou = table.xs("iou", level="metric")
    np.testing.assert_allclose(iou["mean"], expected[iou.index], rtol=1e-12)
    assert (iou["interval_low"] < iou["mean"]).all() and (iou["mean"] < iou["interval_high"]).all()
    assert (table["replicates"] == 3).all() and (table["cases"] == 12).all()
    for metric in ("iou", "hd95"):
        ranks = rank_table(images, ["poor", "good"], metric, HOW).set_index("arm")
        assert ranks.loc["good", ["rank_1", "rank_2"]].tolist() == [1.0, 0.0]
        assert ranks.loc["poor", ["rank_1", "rank_2"]].tolist() == [0.0, 1.0]
        assert (ranks["replicates"] == 3).all()


@pytest.mark.parametrize(
    ("c_shift", "expected"),
    [
        # c better: it is first in every draw, the tied a and b share second, no one is third
        (0.05, {"a": [0.0, 1.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [1.0, 0.0, 0.0]}),
        # c worse: a and b share first in every draw (both are best), c is third
        (-0.05, {"a": [1.0, 0.0, 0.0], "b": [1.0, 0.0, 0.0], "c": [0.0, 0.0, 1.0]}),
    ],
)
def test_tied_arms_share_the_better_rank(c_shift: float, expected: dict[str, list[float]]) -> None:
    images = shifted_arms({"a": 0.0, "b": 0.0, "c": c_shift})  # a and b: the same scores
    for metric in ("iou", "hd95"):
        ranks = rank_table(images, ["a", "b", "c"], metric, HOW).set_index("arm")
        assert ranks[["rank_1", "rank_2", "rank_3"]].T.to_dict("list") == expected, metric
        table = arm_table(images, ["a", "b", "c"], (metric,), HOW).set_index("arm")
        assert table["p_best"].to_dict() == {arm: shares[0] for arm, shares in expected.items()}


def test_joint_ranks_on_the_shared_replicates_only() -> None:
    images = shifted_arms({"a": 0.0, "b": 0.0, "c": 0.05})
    lost = images[~((images["arm"] == "a") & (images["seed"] == 2))]  # a lost a replicate
    ranked = joint_ranks(lost, ["a", "b", "c"], "iou", HOW)
    assert ranked is not None
    shares, replicates = ranked
    assert replicates == 2
    np.testing.assert_array_equal(shares, [[0, 1, 0], [0, 1, 0], [1, 0, 0]])
    assert joint_ranks(images, ["a"], "iou", HOW) is None  # one arm: nothing to rank
    apart = images.assign(seed=images["seed"] + 10 * (images["arm"] == "c"))  # no shared seed
    assert joint_ranks(apart, ["a", "b", "c"], "iou", HOW) is None
    assert rank_table(apart, ["a", "b", "c"], "iou", HOW).empty


# each image's offset from its case's mean, by the case's image count: they sum to zero, and
# unevenly, so a median is not the mean
IMAGE_OFFSETS = {1: [0.0], 2: [0.01, -0.01], 3: [0.03, -0.01, -0.02]}


def ranked_cases(ranks: dict[str, list[int]]) -> pd.DataFrame:
    """Arms over 14 cases whose mean IoU (over its 1 to 3 images and 2 replicates) is exactly
    0.30 + 0.04 * ranks[arm][case]: the replicates' and the images' offsets cancel."""
    rows = []
    for arm, order in ranks.items():
        for seed, offset in ((0, -0.01), (1, 0.01)):
            for case, rank in enumerate(order):
                for image, spread in enumerate(IMAGE_OFFSETS[1 + case % 3]):
                    iou = 0.30 + 0.04 * rank + offset + spread
                    rows.append(image_row(arm, seed, case, image, iou))
    return pd.DataFrame(rows)


def test_the_worst_cases_are_the_lowest_iou_cases() -> None:
    rng = np.random.default_rng(4)
    ranks = {arm: rng.permutation(14).tolist() for arm in ("a", "b")}
    images = ranked_cases(ranks)
    table = worst_cases(images, ["a", "missing", "b"], "iou")
    assert table["arm"].tolist() == ["a"] * 10 + ["b"] * 10  # no rows for an arm with no scores
    for arm, order in ranks.items():
        worst = table[table["arm"] == arm]
        by_hand = sorted(range(14), key=order.__getitem__)[:10]  # ranks 0..9, the lowest first
        assert worst["case"].tolist() == [f"c{case:02d}" for case in by_hand]
        assert worst["iou"].tolist() == pytest.approx([0.30 + 0.04 * r for r in range(10)])
        assert worst["class"].tolist() == [CLASSES[case % 3] for case in by_hand]
        assert worst["images"].tolist() == [1 + case % 3 for case in by_hand]
        # pandas, another way round: each replicate's case means first, then their mean
        one = images[images["arm"] == arm]
        lowest = one.groupby(["seed", "case"])["iou"].mean().groupby("case").mean().nsmallest(10)
        assert worst["case"].tolist() == lowest.index.tolist()
        # lower is better for HD95: its worst are the highest, the same cases here
        highest = one.groupby("case")["hd95"].mean().nlargest(10)
        hd95 = worst_cases(images, [arm], "hd95")
        assert hd95["case"].tolist() == highest.index.tolist() == worst["case"].tolist()
        assert hd95["hd95"].tolist() == pytest.approx(highest.tolist())
