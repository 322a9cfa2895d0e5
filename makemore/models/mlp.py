"""MLP: the neural probabilistic language model of Bengio et al. 2003.

Each position t sees the embeddings of the last k tokens x_{t-k+1..t} (a padding token before
an item starts), concatenated: logits_t = W_o tanh(W_h [e_{t-k+1}; ...; e_t] + b_h) + b_o.
Bengio's optional direct input-to-output connections are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from makemore.models.base import LanguageModel, ModelConfig


@dataclass(kw_only=True)
class MLPConfig(ModelConfig):
    context: int = 8  # k: how many tokens (the current one included) each prediction sees
    n_embd: int = 32  # embedding size per token
    n_hidden: int = 256  # tanh hidden units

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("context", "n_embd", "n_hidden")

    @property
    def width(self) -> int:
        return max(super().width, self.context * self.n_embd)  # the concatenated embeddings


class MLP(LanguageModel):
    default_lr = 3e-3  # peak learning rate when --lr is not given

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.pad = config.vocab_size  # one extra embedding row: "before the start"
        self.wte = nn.Embedding(config.vocab_size + 1, config.n_embd)
        self.hidden = nn.Linear(config.context * config.n_embd, config.n_hidden)
        self.act = nn.Tanh()  # a module, so `--diagnostics` sees the activations
        self.out = nn.Linear(config.n_hidden, config.vocab_size)

    @property
    def receptive_field(self) -> int:
        return self.config.context

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        k = self.config.context
        padded = F.pad(idx, (k - 1, 0), value=self.pad)  # (B, T + k - 1)
        windows = padded.unfold(1, k, 1)  # (B, T, k): the k tokens ending at each t
        x = self.wte(windows).flatten(2)  # (B, T, k * E)
        return self.out(self.act(self.hidden(x)))  # (B, T, V)
