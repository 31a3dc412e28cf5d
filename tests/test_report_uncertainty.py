"""The report on a sweep with per-image test scores: intervals over cases and replicates,
Holm-adjusted findings, ranks, worst cases, per-class intervals, figures, and reproducibility
from the recorded resample count and seed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import build_report, load_sweep
from analysis.__main__ import main as analysis_main
from analysis.report import findings
from tunelab.results import IDENTITY_FILE, RESULTS_FILE, TEST_IMAGES_FILE

ARMS = {"baseline": 0.0, "small": 0.004, "large": 0.05}  # true IoU gains over the baseline
CLASSES = ("Normal", "Polyp", "Adenocarcinoma")


def write_tested_sweep(folder: Path) -> Path:
    """A sweep folder whose 3 arms x 3 seeds scored 30 test cases (1 to 3 images each)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    case_effect = rng.normal(0, 0.05, 30)
    images, results = [], []
    for arm, gain in ARMS.items():
        for seed in range(3):
            trial_id = f"{arm}_{seed}"
            level = 0.75 + gain + rng.normal(0, 0.004)
            ious = []
            for case in range(30):
                for image in range(1 + case % 3):
                    iou = float(np.clip(level + case_effect[case] + rng.normal(0, 0.03), 0, 1))
                    ious.append(iou)
                    images.append(
                        {
                            "sweep": "s",
                            "arm": arm,
                            "seed": seed,
                            "fold": 0,
                            "trial_id": trial_id,
                            "status": "completed",
                            "checkpoint_epoch": 5,
                            "image": f"c{case}_{image}",
                            "case": f"c{case:02d}",
                            "class": CLASSES[case % 3],
                            "iou": iou,
                            "dice": 2 * iou / (1 + iou),
                            "pixel_error": 1 - iou,
                            "accuracy": iou,
                            "hd95": 10 * (1 - iou),
                            "nsd": iou,
                        }
                    )
            mean = float(np.mean(ious))
            results.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "fold": 0,
                    "trial_id": trial_id,
                    "status": "completed",
                    "threshold": "0.5",
                    "primary": True,
                    "epochs": 5,
                    "time_s": 1.0,
                    "iou": mean + 0.01,
                    "dice": 0.8,
                    "pixel_error": 0.2,
                    "test_iou": mean,
                    "test_dice": 2 * mean / (1 + mean),
                    "test_pixel_error": 1 - mean,
                    "test_hd95": 10 * (1 - mean),
                    "test_nsd": mean,
                    "eval.checkpoint": "best",
                    "data.test_seed": 0,
                }
            )
    pd.DataFrame(images).to_parquet(folder / TEST_IMAGES_FILE, index=False)
    pd.DataFrame(results).to_parquet(folder / RESULTS_FILE, index=False)
    (folder / IDENTITY_FILE).write_text(json.dumps({"baseline": "baseline"}))
    return folder


def test_test_split_tables_figures_and_recorded_resampling(tmp_path):
    sweep = load_sweep(write_tested_sweep(tmp_path / "s"))
    report = build_report(sweep, tmp_path / "out", resamples=500, seed=3)
    names = {path.name for path in report.files}
    for stem in ("arms", "ranks", "worst_cases", "classes_test", "comparison"):
        assert {f"{stem}.csv", f"{stem}.tex"} <= names
    assert {"forest.png", "ranks.png"} <= names
    assert "500 resamples, seed 3" in report.markdown
    comparison = report.comparison.set_index(["arm", "metric"])
    large = comparison.loc[("large", "iou")]
    assert large["boot_low"] > 0  # a 0.05 gain over 30 cases and 3 seeds is resolved
    assert large["boot_low"] < large["mean_diff"] < large["boot_high"]
    assert ("large", "hd95") in comparison.index  # boundary metrics are compared too
    arms = report.arms.set_index(["arm", "metric"])
    assert arms.loc[("large", "iou"), "p_best"] > 0.9
    assert arms.loc[("large", "hd95"), "p_best"] > 0.9  # lower HD95 is better
    assert report.ranks.set_index("arm").loc["large", "rank_1"] > 0.9
    worst = pd.read_csv(tmp_path / "out" / "worst_cases.csv", dtype={"case": str})
    assert worst.groupby("arm").size().tolist() == [10, 10, 10]
    base = worst[worst["arm"] == "baseline"]
    assert base["iou"].is_monotonic_increasing  # the worst first
    classes = pd.read_csv(tmp_path / "out" / "classes_test.csv")
    assert set(classes["class"]) == set(CLASSES) and (classes["cases"] == 10).all()
    assert (classes["case_boot_low"] < classes["iou_mean"]).all()


def test_arms_without_a_shared_replicate_are_not_ranked(tmp_path):
    # P(best) and the rank shares by value: tests/test_uncertainty_values.py
    sweep = load_sweep(write_tested_sweep(tmp_path / "s"))
    # "small" keeps only seed 0 and "large" only seeds 1 and 2: no replicate all arms share
    images = sweep.test_images
    small, large = images["arm"] == "small", images["arm"] == "large"
    keep = ~((small & (images["seed"] > 0)) | (large & (images["seed"] == 0)))
    apart = dataclasses.replace(sweep, test_images=images[keep])
    report = build_report(apart, tmp_path / "apart", resamples=300)
    assert report.ranks.empty and report.arms["p_best"].isna().all()
    assert "ranks.png" not in {path.name for path in report.files}


def test_the_same_seed_gives_the_same_report_and_another_seed_other_intervals(tmp_path):
    sweep = load_sweep(write_tested_sweep(tmp_path / "s"))
    first = build_report(sweep, tmp_path / "a", resamples=300, seed=1)
    again = build_report(sweep, tmp_path / "b", resamples=300, seed=1)
    other = build_report(sweep, tmp_path / "c", resamples=300, seed=2)
    pd.testing.assert_frame_equal(first.comparison, again.comparison)
    assert not first.comparison["boot_low"].equals(other.comparison["boot_low"])


def test_findings_call_significant_only_what_survives_holm():
    comparison = pd.DataFrame(
        {
            "arm": ["a", "b", "c"],
            "metric": ["iou"] * 3,
            "n": [3, 3, 3],
            "mean_diff": [0.03, 0.02, 0.001],
            "p_value": [0.01, 0.04, 0.6],
            "p_holm": [0.03, 0.08, 0.6],
            "note": ["", "", ""],
        }
    )
    text = findings(comparison, "base")
    lines = {line.split(":")[0].removeprefix("- "): line for line in text.splitlines()[2:]}
    assert lines["a"].endswith(": significant at 0.05")
    # raw p = 0.04 < 0.05, but not after Holm's adjustment for 3 comparisons
    assert lines["b"].endswith(": not significant at 0.05") and "p = 0.04" in lines["b"]
    assert "Holm-adjusted p = 0.08 (3 comparisons)" in lines["b"]


def test_cli_records_and_validates_the_resampling(tmp_path, capsys):
    folder = write_tested_sweep(tmp_path / "s")
    code = analysis_main(
        [str(folder), "--no-mlflow", "--bootstrap", "200", "--bootstrap-seed", "9"]
    )
    assert code == 0
    assert "200 resamples, seed 9" in (folder / "analysis" / "report.md").read_text()
    assert analysis_main([str(folder), "--no-mlflow", "--bootstrap", "10"]) == 2
    assert "--bootstrap 10: at least 100 resamples" in capsys.readouterr().err


def test_validation_split_has_no_case_tables(tmp_path):
    sweep = load_sweep(write_tested_sweep(tmp_path / "s"))
    report = build_report(sweep, tmp_path / "out", split="validation", resamples=200)
    names = {path.name for path in report.files}
    assert "arms.csv" not in names and "ranks.png" not in names
    assert "boot_low" not in report.comparison
    assert "forest.png" in names  # the t intervals alone
    assert report.arms.empty


def test_an_arm_without_test_scores_gets_no_interval_and_a_reason(tmp_path):
    folder = write_tested_sweep(tmp_path / "s")
    results = pd.read_parquet(folder / RESULTS_FILE)
    results.loc[results["arm"] == "small", ["status"]] = "pruned"
    results.loc[results["arm"] == "small", ["test_iou"]] = np.nan
    results.to_parquet(folder / RESULTS_FILE, index=False)
    images = pd.read_parquet(folder / TEST_IMAGES_FILE)
    images[images["arm"] != "small"].to_parquet(folder / TEST_IMAGES_FILE, index=False)
    report = build_report(load_sweep(folder), tmp_path / "out", resamples=100)
    row = report.comparison.set_index(["arm", "metric"]).loc[("small", "iou")]
    assert np.isnan(row["boot_low"]) and row["note"].startswith("no replicate scored in both")
    assert "small: no difference: no replicate scored in both" in report.markdown
    main = report.main.set_index("arm")
    assert main.loc["small", "unscored"].startswith("pruned")
