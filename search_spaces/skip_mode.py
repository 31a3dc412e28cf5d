"""Skip connections: concatenated (U-Net), removed, or smoothed by a 5x5 average pool (study A)."""

from tunelab import presets

NAME = "skip_mode"
BASE = {**presets.SMALL_UNET, "train.max_epochs": 30}
ARMS = {
    "concat": {},
    "none": {"model.skip_mode": "none"},
    "avgpool": {"model.skip_mode": "avgpool"},
}
SEEDS = [0, 1, 2]
