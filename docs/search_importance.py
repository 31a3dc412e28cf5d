"""Draw docs/search_importance.png, README's example of a search report's fANOVA importance.

    python docs/search_importance.py

A synthetic search, no training: 30 configurations x 3 seeds over the learning rate (log),
dropout and base channels; validation IoU peaks at lr 1e-3, falls a little with dropout, and
barely depends on the channels. Seeded: the figure is the same on every run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.search import (
    cast_to_domains,
    configuration_table,
    importance,
    read_search,
    trial_table,
)
from analysis.search_figures import importance_bars
from tunelab.tracking.figures import save_png

SPACE = {
    "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
    "model.base_channels": {"type": "categorical", "choices": [8, 16, 32]},
}
CHANNELS = {8: -0.01, 16: 0.0, 32: 0.005}


def synthetic_results(configurations: int = 30, seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for index in range(configurations):
        lr, dropout = 10 ** rng.uniform(-4, -2), rng.uniform(0, 0.5)
        channels = int(rng.choice(list(CHANNELS)))
        value = 0.8 - 0.04 * (math.log10(lr) + 3) ** 2 - 0.06 * dropout + CHANNELS[channels]
        for seed in range(seeds):
            rows.append(
                {
                    "arm": f"config_{index}",
                    "seed": seed,
                    "status": "completed",
                    "primary": True,
                    "train.lr": lr,
                    "model.dropout": dropout,
                    "model.base_channels": channels,
                    "iou": value + rng.normal(0, 0.01),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    identity = {"search": {"method": "tpe", "metric": "val_iou", "mode": "max", "space": SPACE}}
    space = read_search(identity)
    trials, domains, _ = cast_to_domains(trial_table(synthetic_results(), space), space)
    shares = importance(configuration_table(trials, domains, space), domains, space, seed=0)
    path = Path(__file__).parent / "search_importance.png"
    save_png(importance_bars(shares, "fANOVA importance for validation IoU (forest seed 0)"), path)
    print(shares.to_string(index=False))
    print(path)


if __name__ == "__main__":
    main()
