"""U-Net depth (levels including the bottleneck): study B compares 4 and 5 levels."""

from ray import tune

NAME = "depth"
BASE = {"model.base_channels": 16, "model.norm": "batch", "train.lr": 1e-3, "train.max_epochs": 30}
SPACE = {"model.depth": tune.grid_search([3, 4, 5])}
SEEDS = [0, 1, 2]
