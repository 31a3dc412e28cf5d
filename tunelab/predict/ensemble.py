"""An arm's models as one predictor: every model's probabilities (sigmoid or softmax) for a
batch of images, averaged, at each image's own size.

Each image is prepared as training prepared it: resized to the trials' `data.input_size`
(PIL bilinear) and normalised with each trial's own training-split statistics. The models
predict it whole (the U-Net reflect-pads a size that is not a multiple of 2**depth) or in
MONAI sliding-window tiles (`eval.tile_size`), in the precision the trials trained in, and the
averaged probabilities are resized back to the image's original size (bilinear).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tunelab.data.batches import normalize
from tunelab.device import resolve_device, resolve_dtype, resolve_memory_format
from tunelab.inference import logit_batches
from tunelab.model import UNet
from tunelab.predict.images import resize
from tunelab.predict.models import PredictError, TrialModel

# what must agree between an ensemble's members for their probabilities to be averaged
SHARED = ("data.input_size", "data.channels", "data.task", "data.num_classes")


class Ensemble:
    def __init__(self, members: list[TrialModel], device: str = "auto") -> None:
        if not members:
            raise PredictError("no model to predict with")
        first = members[0].cfg.to_flat()
        for member in members[1:]:
            flat = member.cfg.to_flat()
            differing = [k for k in SHARED if flat[k] != first[k]]
            if differing:
                raise PredictError(
                    f"trials {members[0].trial_id} and {member.trial_id} differ in "
                    f"{', '.join(differing)}: their probabilities cannot be averaged; use --single"
                )
        self.members = members
        cfg = members[0].cfg.replace(**{"train.device": device})
        self.cfg = cfg
        try:
            self.device = resolve_device(cfg)
        except ValueError as error:  # --device cuda where no GPU is visible
            raise PredictError(f"--device {device}: {error}") from None
        self.autocast_dtype = resolve_dtype(cfg, self.device)  # the trials' own precision
        self.memory_format = resolve_memory_format(cfg, self.device)
        self.models = []
        for member in members:
            model = UNet(member.cfg.model, cfg.data.channels, cfg.out_channels)
            model.load_state_dict(member.weights)
            self.models.append(model.to(self.device, memory_format=self.memory_format).eval())

    @property
    def binary(self) -> bool:
        return self.cfg.out_channels == 1

    @property
    def threshold(self) -> float:
        """The trials' primary decision threshold (binary tasks)."""
        return self.cfg.eval.thresholds[0]

    def probabilities(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per image (H, W, C) uint8: (K, H, W) float32 probabilities at its own size (K = 1
        for binary: the foreground's), the mean over the ensemble's models."""
        size = self.cfg.data.input_size
        batch = np.stack([resize(image, size) for image in images]).transpose(0, 3, 1, 2)
        total = None
        for member, model in zip(self.members, self.models, strict=True):
            x = normalize(batch, member.mean, member.std)
            batches = logit_batches(
                model,
                x,
                device=self.device,
                batch_size=len(x),
                autocast_dtype=self.autocast_dtype,
                memory_format=self.memory_format,
                tile_size=member.cfg.eval.tile_size,
                tile_overlap=member.cfg.eval.tile_overlap,
            )
            logits = torch.cat(list(batches))
            probs = logits.sigmoid() if self.binary else logits.softmax(dim=1)
            total = probs if total is None else total + probs
        mean = total / len(self.models)
        return [
            F.interpolate(p[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
            .cpu()
            .numpy()
            for p, image in zip(mean, images, strict=True)
        ]

    def masks(self, probabilities: np.ndarray) -> np.ndarray:
        """(K, H, W) probabilities -> (H, W) uint8 mask: 0/1 at the primary threshold, or the
        class index (argmax) for multi-class."""
        if self.binary:
            return (probabilities[0] >= self.threshold).astype(np.uint8)
        return probabilities.argmax(0).astype(np.uint8)


def as_logits(probabilities: np.ndarray) -> torch.Tensor:
    """(K, H, W) probabilities -> (1, K, H, W) logits that `tunelab.metrics` reads back to the
    same probabilities (binary) or the same argmax (multi-class)."""
    p = torch.from_numpy(probabilities).double().clamp(1e-12, 1 - 1e-12)
    return (p.logit() if p.shape[0] == 1 else p.log())[None]
