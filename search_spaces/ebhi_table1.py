"""Study A's Table 1: baseline, BCEWithLogits, class-balancing augmentation, dropout on top.

Study A's protocol: 64x64 greyscale, U-Net with 64 base channels and 5 levels, Adam lr 1e-4,
batch 32, BCE on sigmoid outputs, 3 seeds, no pruning, the convergence rule on, and no separate
test set: the last epoch's validation scores, as study A reports them. Held-out evaluation is
`--set data.test_fraction=0.2 --set eval.checkpoint=best`. Run it on the real data with
`--data ../shared/data/ebhi-seg`; on a CPU, shrink the model with
`--set model.base_channels=16 --set train.lr=1e-3` (see README for the scale used).
"""

NAME = "ebhi_table1"
BASE = {
    "train.max_epochs": 100,
    "data.split": "image",  # study A split images at random
    "data.test_fraction": 0,  # study A has no test set
    "eval.checkpoint": "last",
}
augmentation = {"data.balance": True}
ARMS = {
    "baseline": {},
    "bce_logits": {"train.loss": "bce_logits"},
    "augmentation": augmentation,
    "dropout": {**augmentation, "model.dropout": 0.2},
}
SEEDS = [0, 1, 2]
SCHEDULER = "none"
