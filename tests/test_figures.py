"""Figures hold the data they were given: bar heights, error bars, curves, bands and panels are
read back from the drawn figure (and pixels from the saved PNG), against hand-made inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from PIL import Image

from analysis.figures import forest, learning_curves, metric_bars, rank_blobs
from tunelab.summary import REFERENCE_ARM
from tunelab.tracking.figures import learning_curve, prediction_grid, save_png

BAR_BLUE = (31, 119, 180)  # matplotlib's tab:blue, the colour of every bar


def bar_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "arm": [REFERENCE_ARM, "baseline", "dropout"],
            "iou_mean": [0.30, 0.80, 0.20],
            "iou_std": [np.nan, 0.05, np.nan],  # one seed: no spread, drawn as none
            "dice_mean": [0.45, 0.85, 0.30],
            "dice_std": [np.nan, 0.02, 0.04],
        }
    )


def test_metric_bars_draw_each_mean_its_std_and_the_reference():
    fig = metric_bars(bar_table(), ["iou", "dice"], {"iou": "IoU"})
    iou, dice = fig.axes
    assert [bar.get_height() for bar in iou.patches] == pytest.approx([0.80, 0.20])
    assert [bar.get_height() for bar in dice.patches] == pytest.approx([0.85, 0.30])
    assert [label.get_text() for label in iou.get_xticklabels()] == ["baseline", "dropout"]
    assert iou.get_title() == "IoU" and dice.get_title() == "dice"
    # error bars: one vertical segment per bar, mean - std to mean + std
    (segments,) = [c for c in dice.collections if hasattr(c, "get_segments")]
    spans = [(seg[0][1], seg[1][1]) for seg in segments.get_segments()]
    assert np.allclose(spans, [(0.83, 0.87), (0.26, 0.34)])
    (reference,) = [line for line in iou.get_lines() if line.get_linestyle() == "--"]
    assert reference.get_ydata()[0] == pytest.approx(0.30)


def test_saved_png_has_the_figure_s_size_and_shows_the_bars(tmp_path):
    fig = metric_bars(bar_table(), ["iou", "dice"], {})
    path = tmp_path / "bars.png"
    save_png(fig, path)
    image = np.asarray(Image.open(path).convert("RGB"))
    width, height = fig.get_size_inches() * 100  # saved at 100 dpi
    assert image.shape == (round(height), round(width), 3)
    blue = np.all(np.abs(image.astype(int) - BAR_BLUE) <= 2, axis=-1)
    # the bars of 0.80 and 0.20 IoU: the first, four times as tall, has about 4x the pixels
    columns = np.flatnonzero(blue[:, : image.shape[1] // 2].any(axis=0))
    left, right = columns[: len(columns) // 2], columns[len(columns) // 2 :]
    tall, short = blue[:, left].sum(), blue[:, right].sum()
    assert 3.5 < tall / short < 4.5


def test_learning_curves_plot_the_mean_over_seeds_and_their_range():
    epochs = pd.DataFrame(
        {
            "arm": ["a"] * 4 + ["b"] * 2,
            "seed": [0, 0, 1, 1, 0, 0],
            "epoch": [1, 2, 1, 2, 1, 2],
            "val_loss": [1.0, 0.6, 3.0, 1.0, 0.5, 0.4],
            "trend": [-0.2, -0.1, -0.4, -0.3, -0.05, -0.01],
        }
    )
    fig = learning_curves(epochs, threshold=0.01)
    loss_ax, trend_ax = fig.axes[:2]
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert list(lines["a"].get_ydata()) == pytest.approx([2.0, 0.8])  # (1 + 3) / 2, (0.6 + 1) / 2
    assert list(lines["b"].get_ydata()) == pytest.approx([0.5, 0.4])
    band = next(c for c in loss_ax.collections if isinstance(c, PolyCollection))
    # arm a's seeds span 1.0 to 3.0 at epoch 1 and 0.6 to 1.0 at epoch 2
    assert sorted(set(band.get_paths()[0].vertices[:, 1].round(6))) == [0.6, 1.0, 3.0]
    trends = {line.get_label(): line for line in trend_ax.get_lines()}
    assert list(trends["a"].get_ydata()) == pytest.approx([-0.3, -0.2])
    assert trends["convergence threshold"].get_ydata()[0] == pytest.approx(-0.01)


def test_learning_curve_of_one_trial_plots_its_history():
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [0.9, 0.5, 0.4],
            "val_loss": [1.0, 0.7, 0.65],
            "trend": [np.nan, -0.2, -0.05],
        }
    )
    fig = learning_curve(history, title="a seed 0")
    loss_ax, trend_ax = fig.axes
    train, val = loss_ax.get_lines()
    assert list(train.get_ydata()) == [0.9, 0.5, 0.4] and list(val.get_ydata()) == [1.0, 0.7, 0.65]
    assert list(trend_ax.get_lines()[0].get_ydata())[1:] == [-0.2, -0.05]
    assert loss_ax.get_title() == "a seed 0"


def test_prediction_grid_shows_input_truth_and_prediction_per_class():
    rng = np.random.default_rng(0)
    preview = {
        "images": rng.integers(0, 255, (2, 8, 8, 1), dtype=np.uint8),
        "masks": rng.integers(0, 2, (2, 8, 8), dtype=np.uint8),
        "predictions": np.ones((2, 8, 8), np.uint8),  # all foreground: must show white
        "classes": np.array(["Normal", "Polyp"]),
    }
    fig = prediction_grid(preview)
    (ax,) = fig.axes
    shown = np.asarray(ax.images[0].get_array())  # one mosaic: 8 px panels, 1 px grey frames
    assert shown.shape == (2 * 9 + 1, 3 * 9 + 1, 3)
    for row in range(2):
        y = 1 + 9 * row
        panels = [shown[y : y + 8, 1 + 9 * col : 9 + 9 * col] for col in range(3)]
        for panel in panels:  # grey in, grey out: the 3 channels agree
            assert (panel == panel[..., :1]).all()
        assert np.array_equal(panels[0][..., 0], preview["images"][row, ..., 0])
        assert np.array_equal(panels[1][..., 0], preview["masks"][row] * 255)
        assert (panels[2] == 255).all()  # 1 is white, not rescaled
    frame = np.ones(shown.shape[:2], bool)
    frame[1:9, 1:9] = frame[1:9, 10:18] = frame[1:9, 19:27] = False
    frame[10:18, 1:9] = frame[10:18, 10:18] = frame[10:18, 19:27] = False
    assert (shown[frame] == [176, 196, 222]).all()  # blue-grey: a white panel keeps its edges
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Normal", "Polyp"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["input", "truth", "prediction"]


def test_prediction_grid_keeps_colour_and_spreads_class_labels_from_black_to_white():
    rng = np.random.default_rng(1)
    preview = {
        "images": rng.integers(0, 255, (1, 16, 16, 3), dtype=np.uint8),
        "masks": np.tile(np.array([0, 1, 2, 2], np.uint8), (1, 16, 4)),  # classes 0..2
        "predictions": np.zeros((1, 16, 16), np.uint8),
        "classes": np.array(["Polyp"]),
    }
    shown = np.asarray(prediction_grid(preview).axes[0].images[0].get_array())
    assert np.array_equal(shown[1:17, 1:17], preview["images"][0])  # RGB as it is
    truth = shown[1:17, 18:34, 0]
    assert np.array_equal(truth[0, :4], [0, 128, 255, 255])  # 0 black, 1 mid-grey, 2 white
    assert (shown[1:17, 35:51] == 0).all()


def test_learning_curves_put_each_loss_function_on_its_own_axis_and_epochs_on_integers():
    epochs = pd.DataFrame(
        {
            "arm": ["a", "a", "b", "b"],
            "seed": [0, 0, 0, 0],
            "epoch": [1, 2, 1, 2],
            "val_loss": [0.5, 0.4, 0.02, 0.01],  # BCE and smooth L1: scales 25x apart
            "val_iou": [0.6, 0.7, 0.65, 0.72],
            "trend": [-0.1, -0.05, -0.2, -0.1],
        }
    )
    fig = learning_curves(epochs, 0.01, losses={"a": "bce", "b": "smooth_l1"})
    iou_ax, bce_ax, l1_ax, trend_ax = fig.axes
    assert trend_ax.get_ylabel() == "trend index"
    assert iou_ax.get_ylabel() == "validation IoU"
    assert {line.get_label() for line in iou_ax.get_lines()} == {"a", "b"}  # one shared axis
    assert [line.get_label() for line in bce_ax.get_lines()] == ["a"]
    assert [line.get_label() for line in l1_ax.get_lines()] == ["b"]
    assert bce_ax.get_ylabel() == "validation loss (bce)"
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes:
        ticks = ax.get_xticks()
        assert np.allclose(ticks, np.round(ticks)), ticks  # no epoch 1.25


def test_forest_draws_both_intervals_and_the_zero_line():
    comparison = pd.DataFrame(
        {
            "arm": ["b", "c"],
            "metric": ["iou", "iou"],
            "mean_diff": [0.02, -0.01],
            "ci_low": [0.00, -0.05],
            "ci_high": [0.04, 0.03],
            "boot_low": [0.01, -0.03],
            "boot_high": [0.03, 0.01],
        }
    )
    (ax,) = forest(comparison, ["iou"], {"iou": "IoU"}).axes
    segments = [c for c in ax.collections if hasattr(c, "get_segments")]
    spans = sorted(tuple(np.round(seg[:, 0], 6)) for col in segments for seg in col.get_segments())
    assert spans == [(-0.05, 0.03), (-0.03, 0.01), (0.0, 0.04), (0.01, 0.03)]
    zero = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert zero and zero[0].get_xdata()[0] == 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "c"]


def test_rank_blobs_size_each_dot_by_its_share():
    ranks = pd.DataFrame({"arm": ["a", "b"], "rank_1": [0.75, 0.25], "rank_2": [0.25, 0.75]})
    (ax,) = rank_blobs(ranks).axes
    sizes = [size for col in ax.collections for size in col.get_sizes()]
    offsets = [tuple(o) for col in ax.collections for o in col.get_offsets()]
    by_point = dict(zip(offsets, sizes, strict=True))
    assert by_point[(1.0, 0.0)] == pytest.approx(3 * by_point[(2.0, 0.0)])  # a: rank 1 3x rank 2
    assert by_point[(2.0, 1.0)] == pytest.approx(by_point[(1.0, 0.0)])
