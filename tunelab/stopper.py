"""The convergence rule as a Ray Tune Stopper.

The rule's state (the loss window and the streak) lives in the trial and its checkpoints, so a
resumed trial continues exactly; the trial reports `epoch` and `streak` every epoch and this
stopper applies the pure decision to them. It is stateless, so a restored sweep needs nothing
from the driver that was killed.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Stopper

from tunelab.config import StopConfig
from tunelab.early_stop import has_converged


class ConvergenceStopper(Stopper):
    def __init__(self, patience: int, min_epochs: int) -> None:
        self.patience = patience
        self.min_epochs = min_epochs

    @classmethod
    def from_config(cls, cfg: StopConfig) -> ConvergenceStopper:
        return cls(cfg.patience, cfg.min_epochs)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return has_converged(
            int(result.get("epoch", 0)),
            int(result.get("streak", 0)),
            self.patience,
            self.min_epochs,
        )

    def stop_all(self) -> bool:
        return False
