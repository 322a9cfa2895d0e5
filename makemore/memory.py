"""Memory estimates made before allocating, so an absurd size is one clear line, not a crash.

The estimates are rough upper bounds (float32 weights, gradients and AdamW's two moments; the
logits and a few activations per token); what they guard against is sizes off by orders of
magnitude, not a tight fit.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from makemore.errors import MakemoreError


def available() -> int:
    """Bytes of memory available now (Linux: MemAvailable; elsewhere: physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40  # unknown: do not refuse


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def require(n_bytes: float, what: str, fix: str) -> None:
    """Refuse work that needs more than 90% of the memory available now."""
    have = available()
    if n_bytes > 0.9 * have:
        raise MakemoreError(f"{what} needs about {human(n_bytes)} of memory; {human(have)} is available; {fix}")


def count_params(build) -> int:
    """Parameters of the model `build()` makes, counted on the meta device (nothing is allocated)."""
    return sum(p.numel() for p in on_meta(build).parameters())


def on_meta(build) -> nn.Module:
    """The model `build()` makes, on the meta device: shapes without memory or initialisation (its
    `to_empty` then allocates it once, for weights read from a file)."""
    with torch.device("meta"), _NoInit():
        return build()


class _NoInit(TorchFunctionMode):
    """Skips the random initialisation of parameters: on the meta device it would go through torch's
    reference kernels, whose first use imports torch._dynamo (a second of start-up)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init" or func in (torch.Tensor.uniform_, torch.Tensor.normal_):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def training_bytes(n_params: int, batch_size: int, block_size: int, vocab_size: int, width: int) -> float:
    """Weights, gradients, AdamW's moments; logits and their gradient; ~32 activations of `width` per token."""
    tokens = batch_size * block_size
    return 4 * (4 * n_params + tokens * (3 * vocab_size + 32 * width))
