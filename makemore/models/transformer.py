"""Transformer: a GPT-style decoder (Vaswani et al. 2017; Radford et al. 2019).

x = tok_emb(idx) + pos_emb(t); each block is x += attn(ln(x)); x += mlp(ln(x)) (pre-norm),
with causal multi-head self-attention through `scaled_dot_product_attention` and a GELU MLP;
then a final layer norm and a linear head to logits. No weight tying; dropout 0.2 on block outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from makemore.models.base import ModelConfig
from makemore.errors import MakemoreError


@dataclass(kw_only=True)
class TransformerConfig(ModelConfig):
    n_layer: int = 4  # blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 64  # channels; must divide by n_head
    dropout: float = 0.2  # on the attention and MLP outputs; 0 = off (names overfit without it: see README)

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise MakemoreError(f"model option n_embd={self.n_embd} must divide by n_head={self.n_head}")
        if not 0 <= self.dropout < 1:
            raise MakemoreError(f"model option dropout={self.dropout}: must be from 0 to below 1")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.drop = nn.Dropout(config.dropout)  # on the output, not the attention weights: keeps SDPA's fast kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hs)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        C = config.n_embd
        self.ln1 = nn.LayerNorm(C)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(C)
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    default_lr = 1e-3  # peak learning rate when --lr is not given

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.Sequential(*(Block(config) for _ in range(config.n_layer)))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # (B, T, C)
        x = self.blocks(x)  # (B, T, C)
        return self.head(self.ln_f(x))  # (B, T, V)
