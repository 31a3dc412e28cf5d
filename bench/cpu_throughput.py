"""Training-step throughput of the U-Net on this CPU under each setting tunelab offers.

One step = forward, BCE loss, backward and Adam update of a batch, the work of an epoch without
data loading. Settings: fp32 eager (the default), channels_last, bf16 autocast, both, and
torch.compile, each at 1 and at all torch threads. Settings alternate in rounds so all of them
see the same machine state; the median over rounds is reported.

    python bench/cpu_throughput.py [--channels 16] [--rounds 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from bench.common import save
from tunelab.config import ModelConfig
from tunelab.losses import get_loss
from tunelab.model import UNet

SETTINGS = {  # name -> (channels_last, bf16 autocast, torch.compile)
    "fp32 eager": (False, False, False),
    "channels_last": (True, False, False),
    "bf16 autocast": (False, True, False),
    "channels_last + bf16": (True, True, False),
    "torch.compile": (False, False, True),
}


def make_step(
    channels: int, channels_last: bool, bf16: bool, compiled: bool, batch: int
) -> Callable[[], None]:
    torch.manual_seed(0)
    model = UNet(ModelConfig(depth=4, base_channels=channels), in_channels=1, out_channels=1)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = get_loss("bce")
    x = torch.randn(batch, 1, 64, 64).to(memory_format=memory_format)
    y = (torch.rand(batch, 64, 64) > 0.4).long()

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            logits = forward(x)
        loss = loss_fn(logits.float(), y, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    all_threads = torch.get_num_threads()
    thread_counts = sorted({1, all_threads})
    steps = {
        (name, threads): make_step(args.channels, *flags, batch=args.batch)
        for name, flags in SETTINGS.items()
        for threads in thread_counts
    }
    for (_, threads), step in steps.items():  # warm-up: compilation, allocator, caches
        torch.set_num_threads(threads)
        for _ in range(3):
            step()
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds):
        for (name, threads), step in steps.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[(name, threads)].append(args.steps * args.batch / (time.perf_counter() - start))
    torch.set_num_threads(all_threads)
    baseline = statistics.median(rates[("fp32 eager", all_threads)])
    print(f"| setting | threads | images/s | vs fp32 eager, {all_threads} threads |")
    print("|---|---|---|---|")
    rows = []
    for (name, threads), values in rates.items():
        median = statistics.median(values)
        rows.append({"setting": name, "threads": threads, "images_per_s": median})
        print(f"| {name} | {threads} | {median:.0f} | {median / baseline:.2f}x |")
    path = save("cpu_throughput", {"args": vars(args), "rows": rows})
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
