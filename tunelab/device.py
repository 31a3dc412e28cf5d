"""Where and in which precision a trial runs: device, autocast dtype and memory format.

Resolved from `train.device`, `train.precision` and `train.channels_last`; "auto" picks by
hardware (see `config.TrainConfig.precision`).
"""

from __future__ import annotations

import torch

from tunelab.config import TrialConfig


def resolve_device(cfg: TrialConfig) -> torch.device:
    if cfg.train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device = 'cuda' but no CUDA device is visible to this process")
    return torch.device(cfg.train.device)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 autocast runs natively. Elsewhere (AVX2, or AVX-512 without
    BF16) it is emulated and about 20x slower than fp32 (BENCHMARKS.md)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_dtype(cfg: TrialConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    precision = cfg.train.precision
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision = 'fp16' needs a CUDA device; use 'bf16' on CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def resolve_memory_format(cfg: TrialConfig, device: torch.device) -> torch.memory_format:
    """channels_last when asked, or under auto precision on a CPU with native bf16, where it
    is 1.5x faster (it is slower on AVX2 CPUs, and unmeasured on GPUs)."""
    auto_on_bf16_cpu = cfg.train.precision == "auto" and device.type == "cpu"
    fast = cfg.train.channels_last or (auto_on_bf16_cpu and cpu_has_native_bf16())
    return torch.channels_last if fast else torch.contiguous_format
