"""Which loss trains the best binary segmenter? Study A's losses plus soft Dice.

An ablation over a grid: every loss x every seed runs to its end (the convergence stopper may
end a trial early, by its own rule, never by comparison with other trials). No ASHA here: a
loss study compares arms, and ASHA's asynchronous rungs compare each trial with whichever trials
reached the rung before it, so which arm got pruned would depend on arrival order (measured:
`bce` and `bce_logits`, the same function, once ran 0.955 to its end against 0.781 pruned at
its first rung on the same seed). Searches (`lr_dropout.py`) keep ASHA.

The base is a small U-Net with batch norm that trains in minutes on a CPU (without normalisation
it needs about twice the epochs to leave the all-foreground plateau); on a GPU, drop the BASE
model overrides to train study A's full-size model (64 base channels, 5 levels, no norm).
"""

from ray import tune

from tunelab import presets

NAME = "losses"
BASE = {**presets.SMALL_UNET, "train.max_epochs": 12}
SPACE = {"train.loss": tune.grid_search(["bce", "bce_logits", "smooth_l1", "dice"])}
SEEDS = [0, 1]
SCHEDULER = "none"
