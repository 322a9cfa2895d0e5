"""BoW: a causal bag of words, as in the reference makemore.

x = tok_emb + pos_emb; each block: x += avg_{s<=t}(ln(x)_s) (the bag: a plain average of all
positions up to t), then x += W_2 tanh(W_1 ln(x)) (an MLP); a final norm and a linear head.
The average has no weights to learn: what it cannot do (weigh some positions more) is what
attention adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from makemore.models.base import LanguageModel, ModelConfig


@dataclass(kw_only=True)
class BoWConfig(ModelConfig):
    n_layer: int = 2  # bag + MLP blocks
    n_embd: int = 64  # channels
    n_hidden: int = 256  # MLP hidden units

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("n_layer", "n_embd", "n_hidden")


def causal_average(x: torch.Tensor) -> torch.Tensor:
    """Position t gets the mean of positions 0..t: (B, T, C) -> (B, T, C)."""
    counts = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)  # (T,)
    return x.cumsum(dim=1) / counts[:, None]


class BoWBlock(nn.Module):
    def __init__(self, config: BoWConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, config.n_hidden), nn.Tanh(), nn.Linear(config.n_hidden, config.n_embd)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + causal_average(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class BoW(LanguageModel):
    default_lr = 3e-3  # peak learning rate when --lr is not given

    def __init__(self, config: BoWConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.Sequential(*(BoWBlock(config) for _ in range(config.n_layer)))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size)

    @property
    def max_context(self) -> int:
        return self.config.block_size  # learned positions

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # (B, T, C)
        return self.head(self.ln_f(self.blocks(x)))  # (B, T, V)
