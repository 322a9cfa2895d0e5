"""Bigram: a learned V x V table of next-token logits, indexed by the current token.

The simplest language model (Shannon 1948): P(x_t+1 | x_t) = softmax(W[x_t]). It sees only
one token of context, which makes it the baseline every other model must beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from makemore.models.base import LanguageModel, ModelConfig


@dataclass(kw_only=True)
class BigramConfig(ModelConfig):
    pass  # nothing to choose: the table is vocab_size x vocab_size


class Bigram(LanguageModel):
    default_lr = 0.1  # peak learning rate when --lr is not given

    def __init__(self, config: BigramConfig):
        super().__init__()
        self.config = config
        self.logits = nn.Parameter(torch.zeros(config.vocab_size, config.vocab_size))

    @property
    def receptive_field(self) -> int:
        return 1

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits[idx]  # (B, T, V)
