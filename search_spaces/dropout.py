"""Dropout after each decoder conv (study A) or after every conv (study B), at several rates."""

from ray import tune

NAME = "dropout"
BASE = {
    "model.depth": 4,
    "model.base_channels": 16,
    "model.norm": "batch",
    "train.lr": 1e-3,
    "train.max_epochs": 30,
}
SPACE = {
    "model.dropout": tune.grid_search([0.0, 0.1, 0.25, 0.5]),
    "model.dropout_placement": tune.grid_search(["decoder", "all"]),
}
SEEDS = [0, 1, 2]
