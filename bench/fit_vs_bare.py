"""Epoch time and images/s of `train.fit` against a bare PyTorch loop of the same model and batch.

The bare loop is what a researcher would hand-write: pre-made float tensors on the device, a
randperm per epoch, forward / loss / backward / step, and a validation forward pass. Epochs of
the two alternate so both see the same machine state; the first epoch of each is a warm-up.

    python bench/fit_vs_bare.py [--data DIR] [--epochs 4] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench.common import save
from tunelab.config import TrialConfig, parse_overrides
from tunelab.data import PreparedData, prepare
from tunelab.model import UNet
from tunelab.train import Trainer

DEFAULTS = {
    "model.depth": 4,
    "model.base_channels": 16,
    "train.lr": 1e-3,
    "train.batch_size": 32,
    "stop.enabled": False,
}


def training_tensors(data: PreparedData) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training split as float tensors, made once (the bare loop's data)."""
    xs, ys = zip(*data.train.epoch(0), strict=True)
    return torch.cat(xs), torch.cat(ys)


def bare_epoch(model, optimizer, x, y, val_x, batch_size, device) -> float:
    start = time.perf_counter()
    model.train()
    for index in torch.randperm(len(x)).split(batch_size):
        xb, yb = x[index].to(device), y[index].to(device)
        loss = F.binary_cross_entropy(torch.sigmoid(model(xb)), yb[:, None].float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for chunk in val_x.split(2 * batch_size):
            model(chunk)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = TrialConfig.from_dict(
        {
            **DEFAULTS,
            "data.root": args.data,
            "train.max_epochs": args.epochs,
            **parse_overrides(args.set),
        }
    )
    data = prepare(cfg)
    trainer = Trainer(cfg, data)
    device = trainer.device
    torch.manual_seed(cfg.seed)
    model = UNet(cfg.model, cfg.data.channels, cfg.out_channels).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    x, y = training_tensors(data)
    x, y = x.to(device), y.to(device)
    val_x = data.val_images.to(device)
    fit_times, bare_times, data_times = [], [], []
    for result in trainer.epochs():
        bare_times.append(bare_epoch(model, optimizer, x, y, val_x, cfg.train.batch_size, device))
        fit_times.append(result.epoch_seconds)
        data_times.append(result.data_seconds)
    images = len(x)
    fit_s = statistics.median(fit_times[1:])
    bare_s = statistics.median(bare_times[1:])
    data_s = statistics.median(data_times[1:])
    rows = {
        "bare loop": (bare_s, images / bare_s),
        "train.fit": (fit_s, images / fit_s),
    }
    print(f"{images} training images, {len(val_x)} validation, batch {cfg.train.batch_size}")
    print(f"{'':12} {'epoch s':>9} {'images/s':>9}")
    for name, (seconds, rate) in rows.items():
        print(f"{name:12} {seconds:9.3f} {rate:9.1f}")
    overhead = fit_s / bare_s - 1
    print(f"fit overhead {overhead:+.1%}; fit's time waiting for data {data_s / fit_s:.1%}")
    path = save(
        "fit_vs_bare",
        {
            "config": cfg.to_flat(),
            "train_images": images,
            "fit_epoch_s": fit_times,
            "bare_epoch_s": bare_times,
            "fit_data_s": data_times,
            "overhead": overhead,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
