"""A 12-configuration search: learning rate x dropout, 3 seeds each, pruned by ASHA.

Sized for a CPU (32x32 inputs, a 3-level U-Net with 8 base channels: under a second an epoch on
the synthetic data), this is the sweep `bench/sweep_efficiency.py` runs with and without pruning
to measure what ASHA and the convergence stopper save.
"""

from ray import tune

NAME = "lr_dropout"
BASE = {
    "data.input_size": 32,
    "model.depth": 3,
    "model.base_channels": 8,
    "model.norm": "batch",
    "train.max_epochs": 40,
}
SPACE = {
    "train.lr": tune.grid_search([1e-4, 3e-4, 1e-3, 3e-3]),
    "model.dropout": tune.grid_search([0.0, 0.2, 0.5]),
}
SEEDS = [0, 1, 2]
ASHA = {"grace_period": 3, "reduction_factor": 3}
