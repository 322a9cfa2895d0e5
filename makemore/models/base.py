"""What every model type shares: the config fields the code fills in from the data.

The contract: a model is an `nn.Module` built from its config alone, `model(idx)` maps token ids
(B, T) with T <= block_size to logits (B, T, vocab_size), and position t only sees ids <= t.
The loss, the training loop, sampling and checkpoints are shared and live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from makemore.errors import MakemoreError


@dataclass(kw_only=True)
class ModelConfig:
    vocab_size: int = 0  # filled in from the tokenizer, never typed by the user
    block_size: int = 0  # filled in from the data: longest item + 1

    def __post_init__(self):
        for name, value in vars(self).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise MakemoreError(f"model option {name}={value}: must not be negative")

    def require_positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) <= 0:
                raise MakemoreError(f"model option {name}={getattr(self, name)}: must be at least 1")
