"""A trial's tested weights (best-validation or last, as eval.checkpoint says) as an MLflow
PyTorch model, exported (pt2): a graph, not a pickle."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import torch

from tunelab import checkpoint
from tunelab.config import TrialConfig
from tunelab.model import UNet


def log_tested_model(run_id: str, cfg: TrialConfig, checkpoint_folder: Path) -> None:
    """Log the model of a trial's last checkpoint folder to its run, as `model`."""
    model = UNet(cfg.model, cfg.data.channels, cfg.out_channels)
    model.load_state_dict(checkpoint.tested_weights(checkpoint.load_state(checkpoint_folder)))
    size = cfg.data.input_size
    # two images: with one, torch.export fixes the batch size to 1 (0/1 specialisation)
    example = np.zeros((2, cfg.data.channels, size, size), np.float32)
    # stated, not inferred: MLflow's inference imports the model in a subprocess (about 10 s a
    # model on 2 cores) only to find what an exported graph needs, torch and numpy; torch
    # without its local label (+cpu, +cu126), which no index serves under that name
    torch_release = torch.__version__.split("+")[0]
    requirements = [f"torch=={torch_release}", f"numpy=={np.__version__}"]
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(
            model.eval(), name="model", input_example=example, pip_requirements=requirements
        )
