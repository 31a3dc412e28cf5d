"""A model-based search: learning rate, dropout and width sampled by Optuna's TPE, pruned by ASHA.

TPE learns from the configurations that finished: the first 10 are drawn at random (Optuna's
default start-up), the rest where good ones were. Each configuration runs every seed, and the
sampler is told their mean (README, "Searching"). Sized for a CPU like `lr_dropout.py` (32x32
inputs, a 3-level U-Net); on real data, raise the input size and NUM_SAMPLES.
"""

from ray import tune

NAME = "lr_dropout_width"
BASE = {
    "data.input_size": 32,
    "model.depth": 3,
    "model.norm": "batch",
    "train.max_epochs": 20,
}
SPACE = {
    "train.lr": tune.loguniform(1e-4, 1e-2),
    "model.dropout": tune.uniform(0.0, 0.5),
    "model.base_channels": tune.choice([4, 8, 16]),
}
SEARCH = "tpe"
NUM_SAMPLES = 20  # configurations; each runs every seed
SEEDS = [0, 1, 2]
ASHA = {"grace_period": 3, "reduction_factor": 3}
