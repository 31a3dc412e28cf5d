"""`--register NAME`: an arm's ensemble in the MLflow Model Registry, as a pyfunc model whose
`predict` takes an image batch and returns the ensemble's probabilities.

Input: (N, H, W, C) uint8 images of one size (C = the trials' channels). Output: (N, K, H, W)
float32 probabilities at that size (K = 1 for binary: the foreground's). The model holds each
member's tested weights (loaded only with `weights_only=True`), its config and its
normalisation; predicting runs the same `Ensemble` as the CLI, so the masks are the CLI's.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from tunelab.config import TrialConfig
from tunelab.predict.ensemble import Ensemble
from tunelab.predict.models import TrialModel
from tunelab.tracking.layout import experiment_id

MANIFEST = "manifest.json"


class EnsembleModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of an `Ensemble`."""

    def load_context(self, context: Any) -> None:
        manifest = json.loads(Path(context.artifacts["manifest"]).read_text())
        members = [
            TrialModel(
                trial_id=entry["trial_id"],
                arm=entry["arm"],
                seed=entry["seed"],
                fold=entry["fold"],
                cfg=TrialConfig.from_dict(entry["config"]),
                mean=np.asarray(entry["mean"]),
                std=np.asarray(entry["std"]),
                weights=torch.load(
                    context.artifacts[entry["weights"]], map_location="cpu", weights_only=True
                ),
                checkpoint=Path(context.artifacts[entry["weights"]]),
            )
            for entry in manifest["members"]
        ]
        self.ensemble = Ensemble(members, "auto")

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict | None = None
    ) -> np.ndarray:
        images = [np.asarray(image, dtype=np.uint8) for image in model_input]
        return np.stack(self.ensemble.probabilities(images)).astype(np.float32)


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API on `uri` for the block only: its global URI (and the
    MLFLOW_TRACKING_URI it sets) are put back afterwards, so a caller in the same process
    keeps its own store."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # back to resolving from the environment
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def register(ensemble: Ensemble, name: str, experiment: str, uri: str) -> str:
    """Log the ensemble as an MLflow model in a run of `experiment` in the store `uri` and
    register it as `name`; returns the new model version."""
    members = ensemble.members
    with tempfile.TemporaryDirectory() as folder:
        artifacts = {"manifest": str(Path(folder) / MANIFEST)}
        entries = []
        for index, member in enumerate(members):
            key = f"weights_{index}"
            artifacts[key] = str(Path(folder) / f"{key}.pt")
            torch.save({k: v.cpu() for k, v in member.weights.items()}, artifacts[key])
            entries.append(
                {
                    "trial_id": member.trial_id,
                    "arm": member.arm,
                    "seed": member.seed,
                    "fold": member.fold,
                    "config": member.cfg.to_flat(),
                    "mean": member.mean.tolist(),
                    "std": member.std.tolist(),
                    "weights": key,
                }
            )
        Path(artifacts["manifest"]).write_text(json.dumps({"members": entries}, indent=1))
        size, channels = ensemble.cfg.data.input_size, ensemble.cfg.data.channels
        example = np.zeros((1, size, size, channels), np.uint8)
        # any batch, any image size: only the channels and classes are fixed
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, channels))]),
            outputs=Schema(
                [TensorSpec(np.dtype(np.float32), (-1, ensemble.cfg.out_channels, -1, -1))]
            ),
        )
        arm = members[0].arm
        with (
            _tracking_uri(uri),
            mlflow.start_run(
                experiment_id=experiment_id(MlflowClient(uri), experiment),
                run_name=f"{arm} ensemble ({len(members)} models)",
            ),
        ):
            mlflow.log_params({"arm": arm, "members": ",".join(m.trial_id for m in members)})
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=EnsembleModel(),
                artifacts=artifacts,
                signature=signature,
                input_example=example,
                registered_model_name=name,
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"mlflow=={mlflow.__version__}",
                    "numpy",
                    "pillow",
                ],
            )
    return str(info.registered_model_version)
