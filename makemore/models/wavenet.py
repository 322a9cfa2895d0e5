"""WaveNet: dilated causal convolutions with gated residual units (van den Oord et al. 2016).

As in the makemore lecture, level l fuses each position with its neighbour 2^l steps back, so
the receptive field doubles per level; unlike the lecture, every position of the block is
predicted (a causal convolution of width 2 and dilation 2^l), not only the last one:
    h = [x_{t-d}; x_t],  z = tanh(W_f h) ⊙ σ(W_g h)  (the paper's gated unit, eq. 2),  x_t += W_r z
Positions before the start read zeros. Skip connections and the softmax over audio levels are
left out: the head reads the last level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from makemore.models.base import LanguageModel, ModelConfig


@dataclass(kw_only=True)
class WaveNetConfig(ModelConfig):
    n_embd: int = 64  # channels
    n_layer: int = 0  # levels; 0 = just enough to see the whole block (ceil(log2(block_size)))

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("n_embd")

    @property
    def levels(self) -> int:
        return self.n_layer or max(1, math.ceil(math.log2(max(self.block_size, 2))))


class GatedLevel(nn.Module):
    def __init__(self, n_embd: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.ln = nn.LayerNorm(n_embd)
        self.fuse = nn.Linear(2 * n_embd, 2 * n_embd)  # filter and gate together
        self.res = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln(x)  # (B, T, C)
        T = y.shape[1]
        d = min(self.dilation, T)  # a level that reaches further back than T sees only zeros
        past = F.pad(y[:, : T - d], (0, 0, d, 0))  # (B, T, C): y_{t-d}, zeros before the start
        f, g = self.fuse(torch.cat([past, y], dim=-1)).chunk(2, dim=-1)  # 2 x (B, T, C)
        return x + self.res(torch.tanh(f) * torch.sigmoid(g))


class WaveNet(LanguageModel):
    default_lr = 3e-3  # peak learning rate when --lr is not given

    def __init__(self, config: WaveNetConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.levels = nn.Sequential(*(GatedLevel(config.n_embd, 2**l) for l in range(config.levels)))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size)

    @property
    def receptive_field(self) -> int:
        return 2 ** self.config.levels  # dilations 1, 2, ..., 2^(L-1) reach 2^L - 1 steps back

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.levels(self.wte(idx))  # (B, T, C)
        return self.head(self.ln_f(x))  # (B, T, V)
