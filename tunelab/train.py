"""The one training loop: `fit(cfg)` yields an `EpochResult` per epoch, with no Ray or MLflow.

The trainable, the benchmarks and the CLI (`python -m tunelab.train`) all drive this loop.

Evaluation: every decision (the convergence rule, the plateau schedule, the choice of the tested
checkpoint) sees the validation split only. The loop keeps the weights of the epoch with the
lowest validation loss, and the epoch a trial ends on with a trained model (completed, or
converged by the rule) also scores the test set once, with those weights (eval.checkpoint =
"best") or the last ones. The loop, not the Ray stopper, knows that epoch: it holds the rule's
state and max_epochs, reports "converged" when the rule fires, and the stopper ends the trial
there.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tunelab import metrics
from tunelab.config import TrialConfig
from tunelab.config_values import parse_overrides
from tunelab.data import PreparedData, prepare
from tunelab.data.cache import Fingerprints
from tunelab.device import resolve_device, resolve_dtype, resolve_memory_format
from tunelab.early_stop import ConvergenceRule
from tunelab.epoch_report import EpochResult, Status, TestScores
from tunelab.inference import autocast, logit_batches
from tunelab.losses import Sums, add_sums, class_weights_from_frequencies, get_loss
from tunelab.metric_names import IMAGE_METRICS
from tunelab.model import UNet


class Trainer:
    """Holds the model and optimiser of one trial; `epochs()` runs the loop.

    A class rather than a bare generator so a caller (the Ray trainable) can checkpoint and
    restore the state between epochs.
    """

    def __init__(
        self,
        cfg: TrialConfig,
        data: PreparedData | None = None,
        stop_on_convergence: bool = True,
        cpus: float | None = None,  # the trial's CPUs (see `data.prepare`)
        fingerprints: Fingerprints | None = None,  # the datasets' identities (`data.prepare`)
    ) -> None:
        self.created = time.perf_counter()
        self.cfg = cfg
        self.stop_on_convergence = stop_on_convergence
        self.data = data if data is not None else prepare(cfg, cpus, fingerprints)
        self.device = resolve_device(cfg)
        self.autocast_dtype = resolve_dtype(cfg, self.device)
        self.memory_format = resolve_memory_format(cfg, self.device)
        torch.manual_seed(cfg.seed)  # same seed, same initial weights: arms are paired by seed
        self.model = UNet(cfg.model, cfg.data.channels, cfg.out_channels)
        self.model.to(self.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        self.scheduler = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                factor=cfg.train.plateau_factor,
                patience=cfg.train.plateau_patience,
                min_lr=cfg.train.min_lr,
            )
            if cfg.train.lr_schedule == "plateau"
            else None
        )
        # fp16 needs loss scaling to keep small gradients; bf16 and fp32 do not
        self.scaler = torch.amp.GradScaler(enabled=self.autocast_dtype == torch.float16)
        self.loss_fn = get_loss(cfg.train.loss)
        self.class_weights = (
            class_weights_from_frequencies(self.data.pixel_class_frequencies).to(self.device)
            if cfg.train.loss == "wce"
            else None
        )
        self.rule = ConvergenceRule.from_config(cfg.stop)  # disabled: trend only, never stops
        self.epoch = 0
        self.loss_ema: float | None = None
        # the best-validation epoch; its weights are kept only when the test set will use them
        self.best_epoch = 0
        self.best_val_loss = math.inf
        self.keep_best = cfg.eval.checkpoint == "best" and len(self.data.test) > 0
        self.best_weights: dict[str, Tensor] | None = None
        self.tested = False
        # on the device while they fit eval.device_set_mb; above it, in host memory (pinned
        # where the device is a GPU, so each batch copies asynchronously), with their masks,
        # streamed and scored a batch at a time (`_predictions`): the same scores either way
        images, masks = self.data.val_images, self.data.val_masks
        self.val_streamed = self._over_device_limit(images)
        if not self.val_streamed:
            images = images.to(self.device, memory_format=self.memory_format)
            masks = masks.to(self.device)
        else:  # labels fit a byte: 8x less host memory and copying than int64
            masks = masks.to(torch.uint8)
            if self.device.type == "cuda":
                images, masks = images.pin_memory(), masks.pin_memory()
        self.val_images, self.val_masks = images, masks

    def _over_device_limit(self, images: Tensor) -> bool:
        return images.numel() * images.element_size() > self.cfg.eval.device_set_mb * 1e6

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        with autocast(self.device, self.autocast_dtype):
            logits = self.model(x)
        return self.loss_fn(logits.float(), y, self.class_weights)

    def _train_epoch(self) -> tuple[float, float]:
        """One pass over the training batches; returns (mean loss, seconds waiting for data)."""
        self.model.train()
        total = torch.zeros((), device=self.device)
        seen = 0
        data_seconds = 0.0
        batches = iter(self.data.train.epoch(self.epoch))
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            data_seconds += time.perf_counter() - start
            if batch is None:
                break
            x = batch[0].to(self.device, non_blocking=True, memory_format=self.memory_format)
            y = batch[1].to(self.device, non_blocking=True)
            loss = self._loss(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # accumulate on the device: one host sync per epoch instead of one per batch
            total += loss.detach() * len(x)
            seen += len(x)
        return total.item() / max(seen, 1), data_seconds

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this trial exactly: weights, optimiser, schedule, rule."""
        return {
            "epoch": self.epoch,
            "loss_ema": self.loss_ema,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "rule": self.rule.state_dict(),
            "rng": torch.get_rng_state(),
            "best": {
                "epoch": self.best_epoch,
                "val_loss": self.best_val_loss,
                "weights": self.best_weights,  # None unless the test set uses them
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.loss_ema = state["loss_ema"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.rule.load_state_dict(state["rule"])
        torch.set_rng_state(state["rng"])
        # a checkpoint from before held-out evaluation has no best epoch: start tracking anew
        best = state.get("best") or {"epoch": 0, "val_loss": math.inf, "weights": None}
        self.best_epoch, self.best_val_loss = best["epoch"], best["val_loss"]
        if best["weights"] is not None:
            self.best_weights = {k: v.to(self.device) for k, v in best["weights"].items()}

    def _predictions(
        self, images: Tensor, masks: Tensor, streamed: bool
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """(float32 logits, masks) on the device, for images and masks on any device (in tiles
        with eval.tile_size; see `tunelab.inference`). `streamed`: a prediction batch at a
        time, so that only one batch's logits are ever on the device, for callers that score
        each batch and keep the scores; else the whole set at once (fewer, larger kernels)."""
        size = 2 * self.cfg.train.batch_size  # no gradients: twice the training batch
        batches = logit_batches(
            self.model,
            images,
            device=self.device,
            batch_size=size,
            autocast_dtype=self.autocast_dtype,
            memory_format=self.memory_format,
            tile_size=self.cfg.eval.tile_size,
            tile_overlap=self.cfg.eval.tile_overlap,
        )
        if not streamed:
            yield torch.cat(list(batches)), masks.to(self.device).long()
            return
        for start, logits in zip(range(0, len(images), size), batches, strict=True):
            yield logits, masks[start : start + size].to(self.device, non_blocking=True).long()

    def _remember_if_best(self, val_loss: float) -> None:
        """Keep the epoch (and, when the test set uses them, the weights) of the lowest
        validation loss; ties keep the earlier epoch."""
        if val_loss >= self.best_val_loss:
            return
        self.best_epoch, self.best_val_loss = self.epoch, val_loss
        if self.keep_best:
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def score_test(self) -> TestScores:
        """Score the test set once, with the best-validation weights or the last ones."""
        start = time.perf_counter()
        test = self.data.test
        if self.best_weights is None:
            epoch, last = self.epoch, None
        else:
            epoch = self.best_epoch
            last = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.best_weights)
        streamed = self._over_device_limit(test.images)
        try:
            by_class, set_only = metrics.concat_image_scores(
                [
                    metrics.image_scores(
                        logits,
                        masks,
                        self.cfg.eval.thresholds,
                        self.cfg.eval.otsu,
                        boundary_tolerance=self.cfg.eval.boundary_tolerance,
                    )
                    for logits, masks in self._predictions(test.images, test.masks, streamed)
                ]
            )
        finally:  # the loop goes on with its last weights, whatever scoring raised
            if last is not None:
                self.model.load_state_dict(last)
        classes = test.classes.to(self.device)
        scores = metrics.summarise(by_class, set_only, classes, test.class_names)
        per_image = {name: by_class[name].tolist() for name in IMAGE_METRICS}
        images = {
            "image": list(test.files),
            "case": list(test.cases),
            "class": [test.class_names[k] for k in test.classes.tolist()],
            **per_image,
        }
        return TestScores(epoch, scores, images, time.perf_counter() - start)

    def preview(self) -> dict[str, np.ndarray]:
        """Input, truth and prediction of the first validation image of every tumour class.

        Small enough to save with every checkpoint, so a figure of a trial's last model can be
        drawn even when the scheduler stopped it. Arrays (npz-ready, no objects): `images` uint8
        (n, H, W, C), `masks` and `predictions` uint8 (n, H, W) (0/1, or the class index for
        multi-class; binary predictions at the primary threshold), `classes` str (n,).
        """
        classes = self.data.val_classes.numpy()
        picks = [int(np.flatnonzero(classes == k)[0]) for k in np.unique(classes)]
        logits, _ = next(self._predictions(self.val_images[picks], self.val_masks[picks], False))
        if logits.shape[1] == 1:
            predictions = logits[:, 0].sigmoid() > self.cfg.eval.thresholds[0]
        else:
            predictions = logits.argmax(dim=1)
        report = self.data.report
        mean = torch.tensor(report.normalize_mean)[:, None, None]
        std = torch.tensor(report.normalize_std)[:, None, None]
        images = (self.data.val_images[picks] * std + mean) * 255  # undo `normalize`
        return {
            "images": images.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy(),
            "masks": self.data.val_masks[picks].byte().numpy(),
            "predictions": predictions.byte().cpu().numpy(),
            "classes": np.array([self.data.class_names[classes[i]] for i in picks]),
        }

    def _validate(self) -> tuple[float, dict[str, float]]:
        """(validation loss, validation scores): one pass, scored a batch at a time when the set
        streams, else in one go."""
        sums: Sums = {}
        batch_scores = []
        for logits, masks in self._predictions(self.val_images, self.val_masks, self.val_streamed):
            sums = add_sums(sums, self.loss_fn.sums(logits, masks, self.class_weights))
            batch_scores.append(
                metrics.image_scores(logits, masks, self.cfg.eval.thresholds, self.cfg.eval.otsu)
            )
        val_loss = self.loss_fn.of_sums(sums).item()
        by_class, set_only = metrics.concat_image_scores(batch_scores)
        classes = self.data.val_classes.to(self.device)
        return val_loss, metrics.summarise(by_class, set_only, classes, self.data.class_names)

    def _step_schedule(self, train_loss: float) -> None:
        alpha = self.cfg.train.plateau_ema
        self.loss_ema = (
            train_loss
            if self.loss_ema is None
            else alpha * self.loss_ema + (1 - alpha) * train_loss
        )
        if self.scheduler is not None:
            self.scheduler.step(self.loss_ema)

    def epochs(self) -> Iterator[EpochResult]:
        """Train until max epochs, convergence or divergence, one result per epoch."""
        startup: float | None = time.perf_counter() - self.created
        while self.epoch < self.cfg.train.max_epochs:
            self.epoch += 1
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, data_seconds = self._train_epoch()
            if len(self.data.test):  # after the first epoch has started the loader's workers,
                # so no worker process is forked in the middle of an import
                metrics.import_boundary_metrics_in_background()
            if not math.isfinite(train_loss):
                yield self._diverged(train_loss, lr, start, data_seconds)
                return
            val_loss, scores = self._validate()
            if not math.isfinite(val_loss):
                yield self._diverged(train_loss, lr, start, data_seconds, val_loss)
                return
            self._step_schedule(train_loss)
            self._remember_if_best(val_loss)
            monitored = val_loss if self.cfg.stop.monitor == "val_loss" else train_loss
            trend = self.rule.update(monitored)
            status: Status = "running"
            if self.rule.converged:
                status = "converged"
            elif self.epoch == self.cfg.train.max_epochs:
                status = "completed"
            # once: a loop that goes on after converging (no stopper) does not test again
            ends_trained = status != "running" and len(self.data.test) > 0 and not self.tested
            self.tested = self.tested or ends_trained
            yield EpochResult(
                epoch=self.epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                metrics=scores,
                lr=lr,
                epoch_seconds=time.perf_counter() - start,
                data_seconds=data_seconds,
                trend=trend,
                streak=self.rule.streak,
                status=status,
                startup_seconds=startup,
                test=self.score_test() if ends_trained else None,
            )
            startup = None
            if status == "converged" and self.stop_on_convergence:
                return

    def _diverged(
        self,
        train_loss: float,
        lr: float,
        start: float,
        data_seconds: float,
        val_loss: float = math.nan,
    ) -> EpochResult:
        return EpochResult(
            epoch=self.epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            metrics={},
            lr=lr,
            epoch_seconds=time.perf_counter() - start,
            data_seconds=data_seconds,
            trend=None,
            streak=self.rule.streak,
            status="diverged",
        )


def fit(cfg: TrialConfig, data: PreparedData | None = None) -> Iterator[EpochResult]:
    """Train one trial; yields one `EpochResult` per epoch (the last one carries the status)."""
    return Trainer(cfg, data).epochs()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tunelab.train",
        description="Train one trial and print a line per epoch.",
    )
    parser.add_argument("--data", default="", help="dataset folder (default: synthetic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any TrialConfig key, e.g. --set model.base_channels=16",
    )
    args = parser.parse_intermixed_args(argv)  # options anywhere, as every CLI
    try:
        overrides = parse_overrides(args.set)
        cfg = TrialConfig.from_dict({"seed": args.seed, "data.root": args.data, **overrides})
        data = prepare(cfg)
    except (ValueError, OSError) as error:  # a bad dataset or an unwritable cache
        parser.exit(2, f"error: {error}\n")
    print(data.report.to_text())
    for result in fit(cfg, data):
        trend = "-" if result.trend is None else f"{result.trend:+.4f}"
        print(
            f"epoch {result.epoch:3d}  train_loss {result.train_loss:.4f}  "
            f"val_loss {result.val_loss:.4f}  iou {result.metrics.get('iou', math.nan):.4f}  "
            f"dice {result.metrics.get('dice', math.nan):.4f}  trend {trend}  "
            f"{result.epoch_seconds:.1f}s  {result.status}",
            flush=True,
        )
    if result.test is not None:
        scores = result.test.metrics
        print(
            f"test set ({len(result.test.images['image'])} images, model of epoch "
            f"{result.test.checkpoint_epoch}):  iou {scores['iou']:.4f}  dice {scores['dice']:.4f}"
            f"  hd95 {scores['hd95']:.2f}  nsd {scores['nsd']:.4f}"
        )
    return 0 if result.status != "diverged" else 1


if __name__ == "__main__":
    raise SystemExit(main())
