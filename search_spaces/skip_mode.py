"""Skip connections: concatenated (U-Net), removed, or smoothed by a 5x5 average pool (study A)."""

NAME = "skip_mode"
BASE = {
    "model.depth": 4,
    "model.base_channels": 16,
    "model.norm": "batch",
    "train.lr": 1e-3,
    "train.max_epochs": 30,
}
ARMS = {
    "concat": {},
    "none": {"model.skip_mode": "none"},
    "avgpool": {"model.skip_mode": "avgpool"},
}
SEEDS = [0, 1, 2]
