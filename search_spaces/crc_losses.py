"""Study B's loss comparison in protocol, on a multi-class dataset (background/tissue/tumour).

BN + LeakyReLU, 5 levels of 32 .. 512 channels, dropout 0.5 after every conv, Adam lr 5e-4 with
weight decay 3e-5, batch 16, ReduceLROnPlateau on the EMA of the training loss, random crops and
flips, per-channel normalisation from the training split. The CRC data is not public: without
--data this runs on the synthetic generator's multi-class mode.
"""

from ray import tune

NAME = "crc_losses"
BASE = {
    "data.task": "multiclass",
    "data.num_classes": 3,
    "data.channels": 3,
    "data.input_size": 64,
    "data.normalize": "dataset",
    "data.augment": "crop_flip",
    "data.crop_size": 32,
    "data.min_foreground": 0.01,
    "model.depth": 5,
    "model.base_channels": 32,
    "model.norm": "batch",
    "model.activation": "leaky_relu",
    "model.dropout": 0.5,
    "model.dropout_placement": "all",
    "train.lr": 5e-4,
    "train.weight_decay": 3e-5,
    "train.batch_size": 16,
    "train.lr_schedule": "plateau",
    "train.max_epochs": 250,
}
SPACE = {"train.loss": tune.grid_search(["ce", "wce", "dice", "dice_ce", "logdice_ce"])}
SEEDS = [0, 1, 2]
SCHEDULER = "none"
METRIC = "val_dice"
