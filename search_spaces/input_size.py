"""Input resolution: study A found 128x128 only cost time over 64x64."""

from tunelab import presets

NAME = "input_size"
BASE = {**presets.SMALL_UNET, "train.max_epochs": 30}
ARMS = {"64": {"data.input_size": 64}, "128": {"data.input_size": 128}}
SEEDS = [0, 1, 2]
