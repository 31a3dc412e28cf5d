"""Input resolution: study A found 128x128 only cost time over 64x64."""

NAME = "input_size"
BASE = {
    "model.depth": 4,
    "model.base_channels": 16,
    "model.norm": "batch",
    "train.lr": 1e-3,
    "train.max_epochs": 30,
}
ARMS = {"64": {"data.input_size": 64}, "128": {"data.input_size": 128}}
SEEDS = [0, 1, 2]
