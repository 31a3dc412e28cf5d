import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunelab.config import StopConfig
from tunelab.early_stop import ConvergenceRule, trend_index

Curve = Callable[[int], float]


def fast(e: int) -> float:
    return 0.1 + 0.9 * math.exp(-e / 8)


def slow(e: int) -> float:
    return 0.3 + math.exp(-e / 15)


def reference_trend(window: list[float]) -> float:
    """The trend index re-derived as a constrained least-squares problem with NumPy.

    Parameters p = (a, b, c) of q(x) = a x^2 + b x + c. The two end constraints q(0) = y_0,
    q(L) = y_L leave the line p0 + null * z (null: null space of the constraint rows); z is
    the ordinary least-squares fit of the interior points along it.
    """
    y = np.asarray(window, dtype=float)
    last = len(y) - 1
    x = np.arange(last + 1, dtype=float)
    design = np.stack([x**2, x, np.ones_like(x)], axis=1)  # (L + 1, 3): q(x_i) = design_i @ p
    ends = design[[0, last]]
    p0 = np.linalg.lstsq(ends, y[[0, last]], rcond=None)[0]
    null = np.linalg.svd(ends)[2][2:].T  # (3, 1)
    interior = design[1:last]
    z = np.linalg.lstsq(interior @ null, y[1:last] - interior @ p0, rcond=None)[0]
    a, b, _ = p0 + null @ z
    return (2 * a * last + b) / np.mean(np.abs(y))


def reference_stop(curve: Curve, threshold: float, epochs: int = 500) -> int | None:
    """The rule of early_stopping.md applied by hand with `reference_trend`, defaults 10/5/10."""
    losses: list[float] = []
    streak = 0
    for epoch in range(1, epochs + 1):
        losses.append(curve(epoch))
        if len(losses) >= 10:
            streak = streak + 1 if reference_trend(losses[-10:]) > -threshold else 0
            if streak > 5 and epoch > 10:
                return epoch
    return None


def stop_epoch(rule: ConvergenceRule, losses: list[float]) -> int | None:
    for epoch, loss in enumerate(losses, start=1):
        rule.update(loss)
        if rule.converged:
            return epoch
    return None


def stop_epoch_of(curve: Curve, threshold: float, epochs: int = 500, scale: float = 1.0):
    losses = [scale * curve(e) for e in range(1, epochs + 1)]
    return stop_epoch(ConvergenceRule(threshold=threshold), losses)


def test_trend_index_matches_constrained_least_squares():
    rng = np.random.default_rng(0)
    for length in range(3, 16):
        window = list(rng.uniform(0.1, 2.0, length))
        assert trend_index(window) == pytest.approx(reference_trend(window), rel=1e-9)


def test_trend_index_of_a_quadratic_is_its_slope_over_mean():
    # q(x) = 2x^2 - 30x + 200 at x = 0..9: 200 172 148 128 112 100 92 88 88 92, sum 1220,
    # mean 122; the fit is exact, so the index is q'(9) / 122 = (4 * 9 - 30) / 122 = 6 / 122
    window = [2 * x * x - 30 * x + 200 for x in range(10)]
    assert trend_index(window) == pytest.approx(6 / 122, rel=1e-12)
    # falling branch: -q at x = 0..9 has the same mean |y| and slope -6
    assert trend_index([-v for v in window]) == pytest.approx(-6 / 122, rel=1e-12)


def test_trend_index_edge_cases():
    assert trend_index([0.0] * 10) == 0.0
    assert trend_index([3.0] * 10) == 0.0
    with pytest.raises(ValueError, match="at least 3"):
        trend_index([1.0, 0.5])


@pytest.mark.parametrize("threshold", [0.002, 0.005, 0.01, 0.02, 0.05])
@pytest.mark.parametrize("curve", [fast, slow])
def test_exponential_decay_stops_where_the_reference_predicts(curve, threshold):
    expected = reference_stop(curve, threshold)
    assert expected is not None
    assert stop_epoch_of(curve, threshold) == expected


def test_exponential_decay_default_stop_epoch():
    # the fast curve's index first rises above -0.01 at epoch 35 (1.3% of the initial excess
    # over the 0.1 floor left), then 5 more epochs of patience
    assert reference_stop(fast, 0.01) == stop_epoch_of(fast, 0.01) == 40


def test_steadily_falling_line_never_stops():
    # the index of a line is -slope / level: 300 - e over 200 epochs has levels 295..105 and
    # indices -0.0034..-0.0096, all below -0.002
    assert stop_epoch_of(lambda e: 300.0 - e, threshold=0.002, epochs=200) is None
    # a pure exponential decay is a straight line in log space and has a constant index,
    # about -0.04 at 5% per epoch, so it never stops under the default 0.01 either
    assert stop_epoch_of(lambda e: math.exp(-0.05 * e), threshold=0.01, epochs=200) is None


@pytest.mark.parametrize("scale", [1000.0, 0.001])
@pytest.mark.parametrize("threshold", [0.005, 0.01, 0.02])
@pytest.mark.parametrize("curve", [fast, slow])
def test_scaled_curve_stops_at_the_same_epoch(curve, threshold, scale):
    expected = stop_epoch_of(curve, threshold)
    assert expected is not None
    assert stop_epoch_of(curve, threshold, scale=scale) == expected


def test_flat_curve_stops_at_first_allowed_epoch():
    # defaults: first index at epoch 10 (window), streak 6 > patience 5 at epoch 15
    assert stop_epoch(ConvergenceRule(), [1.0] * 30) == 15
    # window 3, patience 0 would allow epoch 3; min_epochs 10 holds it back to epoch 11
    assert stop_epoch(ConvergenceRule(window=3, patience=0), [1.0] * 30) == 11


@given(st.lists(st.floats(0.0, 1e3), min_size=10, max_size=10))
def test_never_stops_before_epoch_11(losses):
    # the most permissive rule: only min_epochs (10) holds it back
    rule = ConvergenceRule(window=3, patience=0, threshold=1e9)
    for loss in losses:
        rule.update(loss)
        assert not rule.converged
    rule.update(0.0)
    assert rule.converged


@given(
    st.lists(st.floats(1e-3, 1e3), min_size=3, max_size=30),
    st.floats(1e-3, 1e3),
)
def test_trend_index_is_scale_invariant(losses, factor):
    scaled = trend_index([factor * v for v in losses])
    assert scaled == pytest.approx(trend_index(losses), rel=1e-9, abs=1e-12)


def test_update_returns_trend_once_the_window_is_full():
    rule = ConvergenceRule()
    trends = [rule.update(fast(e)) for e in range(1, 12)]
    assert trends[:9] == [None] * 9
    assert trends[9] == pytest.approx(trend_index([fast(e) for e in range(1, 11)]))
    assert trends[10] == rule.trend == pytest.approx(trend_index([fast(e) for e in range(2, 12)]))
    assert rule.epoch == 11


def test_falling_trend_resets_the_count():
    rule = ConvergenceRule()
    for _ in range(14):
        rule.update(1.0)
    assert rule.streak == 5 and not rule.converged
    rule.update(0.5)  # a sudden drop: the trend falls again
    assert rule.streak == 0 and not rule.converged
    losses = [0.5] * 30
    assert stop_epoch(rule, losses) is not None and rule.epoch > 15


@pytest.mark.parametrize("loss", [math.nan, math.inf])
def test_non_finite_loss_raises(loss):
    rule = ConvergenceRule()
    rule.update(1.0)
    with pytest.raises(ValueError, match="epoch 2"):
        rule.update(loss)


def test_from_config_and_disabled_rule():
    cfg = StopConfig(window=4, patience=2, min_epochs=3, threshold=0.05)
    rule = ConvergenceRule.from_config(cfg)
    assert (rule.window, rule.patience, rule.min_epochs, rule.threshold) == (4, 2, 3, 0.05)
    assert stop_epoch(rule, [1.0] * 10) == 6  # first index at 4, streak 3 > 2 at epoch 6
    disabled = ConvergenceRule.from_config(StopConfig(enabled=False))
    assert stop_epoch(disabled, [1.0] * 30) is None
    assert disabled.trend == 0.0  # still reported, to plot beside the losses


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 2},
        {"patience": -1},
        {"min_epochs": -1},
        {"threshold": -0.1},
        {"threshold": math.nan},
    ],
)
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        ConvergenceRule(**kwargs)
