"""The figures of one trial that its MLflow run holds (matplotlib, no pyplot state): its
learning curve and its prediction preview. Analysis draws a sweep's figures with these too."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def learning_curve(history: pd.DataFrame, title: str = "") -> Figure:
    """Train and validation loss by epoch, with the convergence trend on a second axis."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(history["epoch"], history["train_loss"], label="train loss")
    ax.plot(history["epoch"], history["val_loss"], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    trend = fig.axes[0].twinx()
    trend.plot(history["epoch"], history["trend"], color="grey", ls="--", label="trend")
    trend.set_ylabel("trend index")
    lines = ax.get_lines() + trend.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize="small")
    ax.set_title(title, fontsize="medium")
    return fig


def prediction_grid(preview: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """One row per sample (labelled with its class): input, ground truth, prediction."""
    n = len(preview["images"])
    fig = Figure(figsize=(6, 2 * n), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    # one fixed scale for labels: an all-foreground prediction must show white, not rescaled
    top = max(1, int(preview["masks"].max()), int(preview["predictions"].max()))
    for row, image in enumerate(preview["images"]):
        panels = [image.squeeze(-1) if image.shape[-1] == 1 else image]
        panels += [preview["masks"][row], preview["predictions"][row]]
        names = ("input", "truth", "prediction")
        for col, (panel, name) in enumerate(zip(panels, names, strict=True)):
            scale = {"vmin": 0, "vmax": 255 if col == 0 else top}
            axes[row, col].imshow(panel, cmap="gray", **scale)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(name)
        axes[row, 0].set_ylabel(str(preview["classes"][row]))
    fig.suptitle(title)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=100)
