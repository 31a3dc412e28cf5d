"""Which loss trains the best binary segmenter? Study A's losses plus soft Dice.

A search: every loss x every seed, pruned by ASHA and the convergence stopper. The base is a
small U-Net with batch norm that trains in minutes on a CPU (without normalisation it needs about
twice the epochs to leave the all-foreground plateau); on a GPU, drop the BASE model overrides to
train study A's full-size model (64 base channels, 5 levels, no norm).
"""

from ray import tune

from tunelab import presets

NAME = "losses"
BASE = {**presets.SMALL_UNET, "train.max_epochs": 12}
SPACE = {"train.loss": tune.grid_search(["bce", "bce_logits", "smooth_l1", "dice"])}
SEEDS = [0, 1]
ASHA = {"grace_period": 4, "reduction_factor": 2}
