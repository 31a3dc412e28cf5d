"""The convergence rule as a Ray Tune Stopper.

The rule runs in the trial (`ConvergenceRule`, with the trial's own `stop.*` settings), whose
state lives in the trial and its checkpoints, so a resumed trial continues exactly. Its report
says `status = "converged"` at the epoch the rule fires, and this stopper ends the trial there.
The trial and Ray therefore agree on its last epoch, the one that scores the test set, whatever
stop settings an arm has. The stopper is stateless, so a restored sweep needs nothing from the
driver that was killed.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Stopper


class ConvergenceStopper(Stopper):
    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return result.get("status") == "converged"

    def stop_all(self) -> bool:
        return False
