"""What the training loop reports each epoch, flat for Ray and MLflow, and which reported keys
are the trial's own values (the rest is Ray's bookkeeping).

The names come from the dataclasses' fields and `metric_names`; nothing here is a hand-kept
list that could drift from what the loop reports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from tunelab.metric_names import TEST_PREFIX, VAL_PREFIX

Status = Literal["running", "completed", "converged", "diverged"]


@dataclass(frozen=True)
class TestScores:
    """The test set's scores, by the model of `checkpoint_epoch`."""

    checkpoint_epoch: int
    metrics: dict[str, float]  # as `metrics.score` names them, plus hd95 and nsd
    images: dict[str, list[Any]]  # one row per test image: file, case, class, primary scores
    seconds: float  # what scoring the test set cost

    def to_flat(self) -> dict[str, float | int]:
        """`checkpoint_epoch`, `test_seconds` and every score as `test_<name>`."""
        return {
            "checkpoint_epoch": self.checkpoint_epoch,
            f"{TEST_PREFIX}seconds": self.seconds,
            **{f"{TEST_PREFIX}{name}": value for name, value in self.metrics.items()},
        }


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    metrics: dict[str, float]  # validation metrics, names from `metrics.score`
    lr: float
    epoch_seconds: float
    data_seconds: float  # time spent waiting for training batches
    trend: float | None  # the convergence trend index; None before the window fills
    streak: int  # consecutive epochs the trend has not been falling (the rule's state)
    status: Status
    # the first epoch a Trainer runs: seconds from its construction (data load included) to
    # the start of training, what a trial pays before its first step
    startup_seconds: float | None = None
    test: TestScores | None = None  # the last epoch of a completed or converged trial

    def to_flat(self) -> dict[str, float | int | str]:
        """One flat dict of everything, the form Ray reports and MLflow logs: every number
        field under its own name (None ones left out), `status`, the validation metrics as
        `val_<name>` and, on the tested epoch, the test scores (`TestScores.to_flat`)."""
        flat: dict[str, float | int | str] = {
            name: value for name in EPOCH_VALUES if (value := getattr(self, name)) is not None
        }
        flat["status"] = self.status
        flat.update({f"{VAL_PREFIX}{name}": value for name, value in self.metrics.items()})
        if self.test is not None:
            flat.update(self.test.to_flat())
        return flat


# the per-epoch numbers of `EpochResult.to_flat`, besides the validation metrics
EPOCH_VALUES = tuple(
    f.name for f in dataclasses.fields(EpochResult) if f.name not in ("metrics", "status", "test")
)


def is_epoch_value(key: str) -> bool:
    """Whether a reported key is one of the trial's own per-epoch values, not Ray's bookkeeping."""
    return key in EPOCH_VALUES or key.startswith(VAL_PREFIX)


def is_test_value(key: str) -> bool:
    """Whether a reported key is one of the test set's values, reported once at a trial's end."""
    return key == "checkpoint_epoch" or key.startswith(TEST_PREFIX)


def logged_values(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of one report that MLflow logs: the epoch's values (and, at the tested
    epoch, the test scores), without Ray's bookkeeping or the text `status`."""
    return {
        key: float(value)
        for key, value in result.items()
        if (is_epoch_value(key) or is_test_value(key))
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }
