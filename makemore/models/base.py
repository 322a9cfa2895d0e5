"""What every model type shares: the config fields the code fills in from the data.

The contract: a model is an `nn.Module` built from its config alone, `model(idx)` maps token ids
(B, T) with T <= block_size to logits (B, T, vocab_size), and position t only sees ids <= t.
The loss, the training loop, sampling and checkpoints are shared and live elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from makemore.errors import MakemoreError

MAX_SIZE = 1 << 24  # any single size option above this is surely a typo


@dataclass(kw_only=True)
class ModelConfig:
    vocab_size: int = 0  # filled in from the tokenizer, never typed by the user
    block_size: int = 0  # filled in from the data: longest item + 1 (lines), or --block-size (text)
    text_defaults: ClassVar[dict] = {}  # defaults that differ in text mode (running text wants more capacity)

    def __post_init__(self):
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise MakemoreError(f"model option {name}={value}: must be a finite number")
            if value < 0:
                raise MakemoreError(f"model option {name}={value}: must not be negative")
            if isinstance(value, int) and value > MAX_SIZE:
                raise MakemoreError(f"model option {name}={value}: absurdly large (at most {MAX_SIZE:,})")

    def require_positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) <= 0:
                raise MakemoreError(f"model option {name}={getattr(self, name)}: must be at least 1")
