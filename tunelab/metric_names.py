"""Every score tunelab reports, by name: the one list that the metrics code, the per-epoch
reports, MLflow keys, results columns and tables derive theirs from.

Plain Python (no torch), so analysis reads the names without loading the training stack.
`tunelab.metrics` maps each count metric to its function; a registry test checks that the two
agree and that a new name reaches every table and log.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricName:
    label: str  # how tables and figures title it
    higher_is_better: bool


# computed from confusion counts, at every threshold, on the validation and test splits
COUNT_METRICS: dict[str, MetricName] = {
    "iou": MetricName("IoU", higher_is_better=True),
    "dice": MetricName("Dice", higher_is_better=True),
    "pixel_error": MetricName("Pixel error", higher_is_better=False),
    "accuracy": MetricName("Accuracy", higher_is_better=True),
}
# computed from boundary distances (MONAI), on the test set only, at the primary threshold
BOUNDARY_METRICS: dict[str, MetricName] = {
    "hd95": MetricName("HD95 (px)", higher_is_better=False),
    "nsd": MetricName("NSD", higher_is_better=True),
}
ALL_METRICS: dict[str, MetricName] = {**COUNT_METRICS, **BOUNDARY_METRICS}
# what each test image's row holds: every metric of its primary prediction
IMAGE_METRICS = tuple(ALL_METRICS)

# a split's scores in a report: `val_iou`, `test_iou/Normal`; results columns drop `val_`
VAL_PREFIX = "val_"
TEST_PREFIX = "test_"
