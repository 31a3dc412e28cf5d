"""Named groups of config overrides that several search spaces share."""

# A U-Net that trains in minutes on a CPU: 16 base channels, 4 levels, batch norm (without
# normalisation it needs about twice the epochs to leave the all-foreground plateau), lr 1e-3.
SMALL_UNET: dict[str, object] = {
    "model.depth": 4,
    "model.base_channels": 16,
    "model.norm": "batch",
    "train.lr": 1e-3,
}
