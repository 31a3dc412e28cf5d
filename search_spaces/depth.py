"""U-Net depth (levels including the bottleneck): study B compares 4 and 5 levels."""

from ray import tune

from tunelab import presets

NAME = "depth"
BASE = {**presets.SMALL_UNET, "train.max_epochs": 30}  # model.depth is the axis
SPACE = {"model.depth": tune.grid_search([3, 4, 5])}
SEEDS = [0, 1, 2]
