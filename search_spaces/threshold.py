"""Evaluation thresholds: scored on the same predictions, so one training per seed.

Every trial reports IoU, Dice and pixel error at each threshold and at each image's own Otsu
threshold; the results table has one row per trial x threshold.
"""

from tunelab import presets

NAME = "threshold"
BASE = {**presets.SMALL_UNET, "train.max_epochs": 30}
ARMS = {"baseline": {}}
THRESHOLDS = [0.5, 0.3, 0.4, 0.6, 0.7]
SEEDS = [0, 1, 2]
