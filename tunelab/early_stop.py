"""Study A's convergence rule (`../shared/reference/early_stopping.md`): stop once the loss trend
has stopped falling.

The trend index of the last `window` losses is the slope, at the newest point, of a quadratic
pinned to the window's first and last losses and least-squares fitted to the points between. It
is divided by the window's mean absolute loss, so it is a relative change per epoch (-0.01: the
loss still falls by about 1% of its level per epoch) and the same for any loss scale.
`trend_index` and `has_converged` are the pure pieces; `ConvergenceRule` keeps one trial's state
in the training loop, and `tunelab.stopper.ConvergenceStopper` ends a Ray trial where it fired.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from tunelab.config import StopConfig


def trend_index(window: Sequence[float]) -> float:
    """Scale-free slope at the last point of the pinned quadratic fit to `window` (>= 3 losses).

    With x = 0..L and q(x) = y_0 + s x + a (x^2 - L x), s = (y_L - y_0) / L, the two ends are
    met exactly and a is the least-squares fit of the interior residuals u_i = y_i - y_0 - s x_i
    on v_i = x_i^2 - L x_i: a = sum(u v) / sum(v^2). The slope q'(L) = a L + s is divided by the
    mean absolute loss of the window rather than by |y_0|, which a single spike or a loss near
    zero would distort. An all-zero window is flat: 0.
    """
    y = [float(value) for value in window]
    if len(y) < 3:
        raise ValueError(f"trend_index needs at least 3 losses (2 pinned ends + 1), got {len(y)}")
    last = len(y) - 1
    chord = (y[-1] - y[0]) / last
    uv = vv = 0.0
    for x in range(1, last):  # u = v = 0 at both ends
        v = x * x - last * x
        uv += (y[x] - y[0] - chord * x) * v
        vv += v * v
    slope = uv / vv * last + chord
    scale = math.fsum(abs(value) for value in y) / len(y)
    return slope / scale if scale > 0 else 0.0


def has_converged(epoch: int, streak: int, patience: int, min_epochs: int) -> bool:
    """The stopping decision: the trend stopped falling for more than `patience` epochs in a row
    and the run is past `min_epochs`. Pure: numbers in, decision out."""
    return streak > patience and epoch > min_epochs


class ConvergenceRule:
    """One trial's convergence state: feed one loss per epoch to `update`, then read `converged`.

    Converged once the trend index has been above -threshold for more than `patience`
    consecutive epochs (a falling trend resets the count) and the epoch is greater than
    `min_epochs`. With the defaults the earliest possible stop is epoch window + patience = 15.
    A disabled rule still reports the trend (to plot it) but never converges.
    """

    def __init__(
        self,
        window: int = StopConfig.window,
        patience: int = StopConfig.patience,
        min_epochs: int = StopConfig.min_epochs,
        threshold: float = StopConfig.threshold,
        enabled: bool = True,
    ) -> None:
        if window < 3:
            raise ValueError(f"window = {window} is invalid: expected >= 3")
        if patience < 0 or min_epochs < 0:
            raise ValueError(f"patience = {patience}, min_epochs = {min_epochs}: expected >= 0")
        if not threshold >= 0 or math.isinf(threshold):
            raise ValueError(f"threshold = {threshold} is invalid: expected a finite value >= 0")
        self.window = window
        self.patience = patience
        self.min_epochs = min_epochs
        self.threshold = threshold
        self.enabled = enabled
        self.epoch = 0  # number of losses seen: the current 1-based epoch
        self.streak = 0  # consecutive epochs with trend index > -threshold
        self.trend: float | None = None  # the latest trend index
        self._losses: deque[float] = deque(maxlen=window)

    @classmethod
    def from_config(cls, cfg: StopConfig) -> ConvergenceRule:
        return cls(cfg.window, cfg.patience, cfg.min_epochs, cfg.threshold, cfg.enabled)

    def update(self, loss: float) -> float | None:
        """Record one epoch's monitored loss; its trend index, or None before `window` epochs.

        A NaN or infinite loss raises ValueError: divergence is the caller's to handle first.
        """
        if not math.isfinite(loss):
            raise ValueError(f"loss = {loss} at epoch {self.epoch + 1}: handle divergence first")
        self._losses.append(float(loss))
        self.epoch += 1
        if len(self._losses) < self.window:
            return None
        self.trend = trend_index(self._losses)
        self.streak = self.streak + 1 if self.trend > -self.threshold else 0
        return self.trend

    @property
    def converged(self) -> bool:
        """Whether the rule holds after the latest update."""
        return self.enabled and has_converged(
            self.epoch, self.streak, self.patience, self.min_epochs
        )

    def state_dict(self) -> dict[str, object]:
        """What a checkpoint needs to resume the rule exactly where it was."""
        return {"epoch": self.epoch, "streak": self.streak, "losses": list(self._losses)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.epoch = int(state["epoch"])  # type: ignore[arg-type]
        self.streak = int(state["streak"])  # type: ignore[arg-type]
        self._losses = deque((float(v) for v in state["losses"]), maxlen=self.window)  # type: ignore[union-attr]
        self.trend = trend_index(self._losses) if len(self._losses) == self.window else None
