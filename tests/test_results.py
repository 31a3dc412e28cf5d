"""Results rows and the aggregated table, from hand-made reports."""

import math

import pandas as pd
import pytest

from tunelab.config import TrialConfig
from tunelab.results import class_names_in, final_status, trial_rows
from tunelab.summary import format_markdown, main_table


@pytest.mark.parametrize(
    ("last", "errored", "status"),
    [
        ({"status": "completed"}, False, "completed"),
        ({"status": "converged"}, False, "converged"),
        ({"status": "diverged"}, False, "diverged"),
        ({"status": "running"}, False, "pruned"),
        ({"status": "running"}, True, "failed"),
        ({}, True, "failed"),
    ],
)
def test_final_status(last, errored, status):
    assert final_status(last, errored) == status


def report(iou: float, thresholds=(0.5, 0.3)) -> dict:
    last = {"val_foreground_iou_all": 0.6, "val_foreground_dice_all": 0.75}
    for t in thresholds:
        last[f"val_iou_t{t:g}"] = iou + t / 10
        last[f"val_iou_t{t:g}/Normal"] = iou
    last["val_iou/Normal"] = iou  # the primary threshold also appears without its suffix
    last["val_iou_otsu"] = iou - 0.01
    return last


def test_one_row_per_threshold_with_config_and_classes():
    cfg = TrialConfig.from_dict({"eval.thresholds": [0.5, 0.3], "model.dropout": 0.1})
    identity = {"arm": "a", "seed": 0, "status": "completed"}
    last = report(0.8)
    rows = trial_rows(cfg, identity, last, class_names_in(last))
    assert [r["threshold"] for r in rows] == ["0.5", "0.3", "otsu"]
    assert [r["primary"] for r in rows] == [True, False, False]
    assert rows[0]["iou"] == pytest.approx(0.85) and rows[1]["iou"] == pytest.approx(0.83)
    assert rows[0]["iou/Normal"] == 0.8 and math.isnan(rows[2]["iou/Normal"])
    assert rows[0]["model.dropout"] == 0.1 and rows[0]["eval.thresholds"] == "0.5,0.3"
    assert rows[0]["foreground_iou_all"] == 0.6 and math.isnan(rows[0]["dice"])


def test_multiclass_has_one_argmax_row():
    cfg = TrialConfig.from_dict({"data.task": "multiclass", "train.loss": "ce"})
    rows = trial_rows(cfg, {}, {"val_iou": 0.5, "val_accuracy": 0.9}, [])
    assert len(rows) == 1 and rows[0]["threshold"] == "argmax"
    assert rows[0]["iou"] == 0.5 and rows[0]["accuracy"] == 0.9


def frame(records):
    base = {"primary": True, "threshold": "0.5", "dice": 0.9, "pixel_error": 0.1, "time_s": 10.0}
    base |= {"foreground_iou_all": 0.6, "foreground_dice_all": 0.75}
    base |= {"foreground_pixel_error_all": 0.4}
    return pd.DataFrame([{**base, **r} for r in records])


def test_main_table_averages_scored_trials_only_and_counts_the_rest():
    results = frame(
        [
            {"arm": "a", "seed": 0, "status": "completed", "iou": 0.8},
            {"arm": "a", "seed": 1, "status": "converged", "iou": 0.9},
            {"arm": "a", "seed": 2, "status": "diverged", "iou": float("nan")},
            {"arm": "b", "seed": 0, "status": "pruned", "iou": 0.1},
            {"arm": "b", "seed": 1, "status": "completed", "iou": 0.7},
        ]
    )
    table = main_table(results).set_index("arm")
    assert table.loc["a", "iou_mean"] == pytest.approx(0.85)
    assert table.loc["a", "iou_std"] == pytest.approx(math.sqrt(0.005))  # sample std, ddof 1
    assert table.loc["a", "n"] == 2 and "1 diverged" in table.loc["a", "statuses"]
    assert table.loc["b", "iou_mean"] == 0.7 and math.isnan(table.loc["b", "iou_std"])
    reference = table.loc["all foreground (reference)"]
    assert reference["iou_mean"] == 0.6 and reference["pixel_error_mean"] == pytest.approx(0.4)
    text = format_markdown(main_table(results))
    assert "| a | 0.8500 ± 0.0707 |" in text and "1 pruned, 1 completed" in text


def test_test_scores_sit_beside_the_validation_ones():
    cfg = TrialConfig.from_dict({"eval.thresholds": [0.5, 0.3]})
    last = report(0.8) | {"checkpoint_epoch": 7, "test_iou_t0.5": 0.7, "test_iou_t0.3": 0.65}
    last |= {"test_iou_t0.5/Polyp": 0.6, "test_iou/Polyp": 0.6, "test_hd95": 4.5, "test_nsd": 0.8}
    last |= {"test_hd95/Polyp": 5.0, "test_foreground_iou_all": 0.55}
    rows = trial_rows(cfg, {}, last, class_names_in(last))
    assert [r["test_iou"] for r in rows[:2]] == [0.7, 0.65] and math.isnan(rows[2]["test_iou"])
    assert rows[0]["iou"] == pytest.approx(0.85)  # the validation column is untouched
    assert rows[0]["test_iou/Polyp"] == 0.6 and "iou/Polyp" not in rows[0]  # the test's classes
    assert rows[0]["test_hd95"] == 4.5 and rows[0]["test_hd95/Polyp"] == 5.0
    assert math.isnan(rows[1]["test_hd95"])  # boundary metrics: the primary threshold only
    assert {r["checkpoint_epoch"] for r in rows} == {7}
    assert rows[0]["test_foreground_iou_all"] == 0.55
    untested = trial_rows(cfg, {}, report(0.8), [])
    assert math.isnan(untested[0]["test_iou"]) and math.isnan(untested[0]["checkpoint_epoch"])


def test_tables_lead_with_the_test_set_and_say_which_split_and_model():
    from tunelab.summary import default_split, on_split, split_caption

    rows = [
        {"arm": "a", "seed": 0, "status": "completed", "iou": 0.9, "test_iou": 0.7},
        {"arm": "a", "seed": 1, "status": "completed", "iou": 0.8, "test_iou": 0.6},
    ]
    results = frame(rows).assign(**{"eval.checkpoint": "best", "data.test_seed": 0})
    for column in ("dice", "pixel_error", "foreground_iou_all", "foreground_dice_all"):
        results[f"test_{column}"] = results[column]  # every score has its test twin
    results["data.test_root"] = ""
    results["iou/Normal"] = 0.5  # a class the test set lacks: never shown as a test score
    assert default_split(results) == "test"
    tested = main_table(on_split(results, "test")).set_index("arm")
    assert tested.loc["a", "iou_mean"] == pytest.approx(0.65)
    assert "iou/Normal" not in on_split(results, "test")
    validated = main_table(on_split(results, "validation")).set_index("arm")
    assert validated.loc["a", "iou_mean"] == pytest.approx(0.85)
    caption = split_caption(results, "test")
    assert caption.startswith("Test set (held-out cases, data.test_seed = 0)")
    assert "best-validation epoch's model (eval.checkpoint = best)" in caption
    assert "optimistic" in split_caption(results, "validation")
    untested = frame(rows).assign(test_iou=math.nan, **{"data.test_fraction": 0.0})
    assert default_split(untested) == "validation"
    assert "no test set: data.test_fraction = 0" in split_caption(untested, "validation")
    none_finished = untested.assign(**{"data.test_fraction": None})
    assert "(no trial scored the test set)" in split_caption(none_finished, "validation")
    assert "external: /b" in split_caption(results.assign(**{"data.test_root": "/b"}), "test")
