"""One registry per concept: every other list of loss or metric names is derived from it. These
tests iterate over the registries, so a loss or metric added to one is checked everywhere it
must appear: the config, the reports, MLflow's values, the results columns and the tables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
import torch

from tunelab import epoch_report, metrics, summary
from tunelab.config import BINARY_ONLY_LOSSES, LossName, TrialConfig
from tunelab.epoch_report import EpochResult, is_epoch_value, is_test_value
from tunelab.losses import LOSSES
from tunelab.metric_names import (
    ALL_METRICS,
    BOUNDARY_METRICS,
    COUNT_METRICS,
    IMAGE_METRICS,
    MetricName,
)
from tunelab.results import trial_rows

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_loss_registry_and_the_config_name_the_same_losses():
    assert tuple(LOSSES) == get_args(LossName)
    assert set(BINARY_ONLY_LOSSES) < set(LOSSES)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_registered_loss_is_accepted_and_documented(name):
    assert TrialConfig.from_dict({"train.loss": name}).train.loss == name
    assert f"`{name}`" in README.split("**Losses**")[1].split("**Metrics**")[0]
    multiclass = {"train.loss": name, "data.task": "multiclass"}
    if name in BINARY_ONLY_LOSSES:
        with pytest.raises(ValueError, match="binary-only") as refused:
            TrialConfig.from_dict(multiclass)
        offered = set(re.findall(r"'(\w+)'", str(refused.value).split("use one of")[1]))
        assert offered == set(LOSSES) - set(BINARY_ONLY_LOSSES)
    else:
        assert TrialConfig.from_dict(multiclass).train.loss == name


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_registered_loss_gives_its_true_gradient_on_the_task_it_accepts(name):
    # Training follows the autograd gradient, so it must be the loss's derivative: checked along
    # a random direction v against a central difference (L(x + h v) - L(x - h v)) / 2h. The
    # losses compute in float32, so h is large enough for float32 rounding to stay below 1e-3.
    k = 1 if name in BINARY_ONLY_LOSSES else 3
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(2, k, 8, 8, generator=gen).requires_grad_(True)
    target = torch.randint(0, max(k, 2), (2, 8, 8), generator=gen)
    weights = torch.linspace(1.0, 2.0, max(k, 2))  # unequal, so wce's weights matter
    loss = LOSSES[name]
    loss(logits, target, weights).backward()
    direction, h = torch.randn(logits.shape, generator=gen), 1e-2
    with torch.no_grad():
        ahead = loss(logits + h * direction, target, weights).double()
        behind = loss(logits - h * direction, target, weights).double()
    slope = (logits.grad * direction).sum().item()
    assert slope == pytest.approx(((ahead - behind) / (2 * h)).item(), rel=1e-3)
    assert slope != pytest.approx(0, abs=1e-3)  # a zero gradient would pass trivially


def test_the_metric_functions_are_the_registry_s_count_metrics_in_order():
    assert tuple(metrics.REDUCTIONS) == tuple(COUNT_METRICS)
    assert (*COUNT_METRICS, *BOUNDARY_METRICS) == IMAGE_METRICS


def header(metric: MetricName) -> str:
    """A table's header: the label, marked where lower is better."""
    return metric.label + ("" if metric.higher_is_better else " ↓")


def binary_scores() -> dict[str, float]:
    logits = torch.tensor([[[[2.0, -2.0], [1.0, -1.0]]]]).repeat(2, 1, 1, 1)
    target = torch.tensor([[[1, 0], [0, 0]]]).repeat(2, 1, 1)
    return metrics.score(logits, target, torch.tensor([0, 1]), ["A", "B"], (0.5,), otsu=True)


@pytest.mark.parametrize("name", list(COUNT_METRICS))
def test_every_count_metric_is_scored_reported_logged_and_tabled(name):
    scores = binary_scores()
    assert {name, f"{name}_t0.5", f"{name}_otsu", f"{name}/A", f"foreground_{name}_all"} <= set(
        scores
    )
    test = epoch_report.TestScores(3, dict(scores), {}, 0.1)
    flat = EpochResult(3, 0.5, 0.4, scores, 1e-3, 1.0, 0.1, None, 0, "completed", test=test)
    report = flat.to_flat()
    assert is_epoch_value(f"val_{name}") and report[f"val_{name}"] == scores[name]
    assert is_test_value(f"test_{name}") and report[f"test_{name}"] == scores[name]
    row = trial_rows(TrialConfig(), {}, report, ["A", "B"])[0]
    for column in (name, f"{name}/A", f"test_{name}", f"test_{name}/B", f"foreground_{name}_all"):
        assert column in row, column
    assert summary.HEADERS[name] == header(COUNT_METRICS[name])


@pytest.mark.parametrize("name", list(BOUNDARY_METRICS))
def test_every_boundary_metric_is_scored_on_the_test_set_and_tabled(name):
    logits = torch.tensor([[[[2.0, -2.0], [1.0, -1.0]]]])
    target = torch.tensor([[[1, 0], [0, 0]]])
    by_class, _ = metrics.image_scores(logits, target, (0.5,), False, boundary_tolerance=1.0)
    assert name in by_class
    report = {f"test_{name}": 1.0, "test_iou/A": 0.5}
    row = trial_rows(TrialConfig(), {}, report, [])[0]
    assert row[f"test_{name}"] == 1.0
    assert summary.HEADERS[name] == header(BOUNDARY_METRICS[name])


def test_every_metric_has_a_label_and_a_direction():
    for name, metric in ALL_METRICS.items():
        assert metric.label and isinstance(metric.higher_is_better, bool), name
    assert not ALL_METRICS["pixel_error"].higher_is_better
    assert not ALL_METRICS["hd95"].higher_is_better


def test_epoch_values_are_the_numbers_epoch_result_reports():
    result = EpochResult(2, 0.5, 0.4, {"iou": 0.7}, 1e-3, 1.0, 0.1, -0.02, 1, "running", 3.0)
    report = result.to_flat()
    assert {k for k in report if is_epoch_value(k)} == set(report) - {"status"}
    # a field added to EpochResult is reported and counted as a per-epoch value without a list
    assert {"epoch", "train_loss", "trend", "streak", "startup_seconds", "val_iou"} <= set(report)
