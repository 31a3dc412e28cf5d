"""Dropout after each decoder conv (study A) or after every conv (study B), at several rates."""

from ray import tune

from tunelab import presets

NAME = "dropout"
BASE = {**presets.SMALL_UNET, "train.max_epochs": 30}
SPACE = {
    "model.dropout": tune.grid_search([0.0, 0.1, 0.25, 0.5]),
    "model.dropout_placement": tune.grid_search(["decoder", "all"]),
}
SEEDS = [0, 1, 2]
