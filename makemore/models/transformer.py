"""Transformer: a GPT-style decoder (Vaswani et al. 2017; Radford et al. 2019).

x = tok_emb(idx) + pos_emb(t); each block is x += attn(ln(x)); x += mlp(ln(x)) (pre-norm),
with causal multi-head self-attention through `scaled_dot_product_attention` and a GELU MLP;
then a final layer norm and a linear head to logits. Dropout on the embeddings and on the attention
and MLP outputs (as GPT-2's code does; not on the attention weights). Text mode starts from GPT-2's
initialisation (`init=gpt2`), lines mode from torch's defaults.

GPT-2's own choices are options, so its weights load into this one class (`makemore/hf.py`):
biases off or on, the head tied to the token embedding (and without a bias), GELU's tanh
approximation, the layer norms' epsilon, and a positional table of `n_positions` rows, more than the
block the model trains on. Our defaults (biases, an untied head with a bias, exact GELU, 1e-5, a
table of block_size rows) are what every checkpoint saved before these options was trained with.

Incremental decoding keeps a key/value cache per block: each new id attends to the cached keys
and values of the ids before it, so a step costs one position, not the whole context. The
positions are learned and absolute, so the cache cannot slide past the block size: the shared
rule in `base.py` restarts the context from the last half block, and the cache is refilled then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from makemore.errors import MakemoreError
from makemore.models.base import LanguageModel, Linear, ModelConfig
from safeio.files import shown


@dataclass(kw_only=True)
class TransformerConfig(ModelConfig):
    n_layer: int = 4  # blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 64  # channels; must divide by n_head
    dropout: float = 0.2  # on the embeddings and the attention and MLP outputs; 0 = off (names overfit without it: docs/models.md)
    init: str = "torch"  # torch's default initialisation, or "gpt2" (N(0, 0.02): better for text, worse for names, docs/models.md)
    bias: bool = True  # biases in the blocks' linears and in every layer norm (GPT-2: on)
    head_bias: bool = True  # a bias on the output head (GPT-2: none)
    tie_head: bool = False  # the head's weight is the token embedding's (Press & Wolf 2017; GPT-2: tied)
    gelu: str = "exact"  # the MLP's GELU: "exact" (erf) or "tanh", the approximation GPT-2 was trained with
    ln_eps: float = 1e-5  # the layer norms' epsilon (GPT-2: 1e-5)
    n_positions: int = 0  # rows of the positional table: the longest context sampling can use; 0 = block_size (GPT-2: 1024)
    kind_defaults: ClassVar[dict] = {"text": {"n_embd": 128, "dropout": 0.0, "init": "gpt2"}}  # running text: more capacity, no overfitting in minutes

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise MakemoreError(f"model option n_embd={self.n_embd} must divide by n_head={self.n_head}")
        if not 0 <= self.dropout < 1:
            raise MakemoreError(f"model option dropout={self.dropout}: must be from 0 to below 1")
        if self.init not in ("torch", "gpt2"):
            raise MakemoreError(f"model option init={shown(self.init)}: choose torch or gpt2")
        if self.gelu not in ("exact", "tanh"):
            raise MakemoreError(f"model option gelu={shown(self.gelu)}: choose exact or tanh")
        if not 0 < self.ln_eps < 1:
            raise MakemoreError(f"model option ln_eps={self.ln_eps}: must be above 0 and below 1")
        if self.n_positions and self.n_positions < self.block_size:
            raise MakemoreError(f"model option n_positions={self.n_positions}: must be at least the block size ({self.block_size})")

    @property
    def positions(self) -> int:
        """Rows of the positional table: the longest context the model can see."""
        return self.n_positions or self.block_size


@dataclass
class KVCache:
    """Keys and values of the ids seen so far, for one block: a (2, B, H, block_size, hs) buffer, `n` filled."""

    kv: torch.Tensor
    n: int = 0

    def add(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys and values (B, H, t, hs) each; all of them so far, as (B, H, n, hs) each."""
        t = k.shape[2]
        self.kv[0, :, :, self.n : self.n + t] = k
        self.kv[1, :, :, self.n : self.n + t] = v
        self.n += t
        return self.kv[0, :, :, : self.n], self.kv[1, :, :, : self.n]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor, B: int, cache: KVCache | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B*T, C), the positions of B rows one after another; the same shape back."""
        T, C = x.shape[0] // B, x.shape[1]
        # unbind, not indexing: its backward is one stack into qkv's layout (indexing a permuted
        # view costs a zero fill, copies and an add per block)
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).unbind(2))  # (B, H, T, hs)
        past = 0 if cache is None else cache.n
        if cache is not None:
            k, v = cache.add(k, v)  # (B, H, past + T, hs)
        if mask is not None:  # packed rows: each id sees the ids of its own item up to itself
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hs)
        elif T == 1:  # one new query, after all the cached keys: it sees every one of them
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # new query i sits at position past + i and sees keys 0..past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B * T, C))  # (B*T, C)

    def written_out(self, x: torch.Tensor, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` without a cache or mask, with the attention written out (Vaswani et al. 2017, eq. 1):
        the output (B*T, C) and the weights (B, H, T, T) that the fast kernel never returns."""
        T, C = x.shape[0] // B, x.shape[1]
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).unbind(2))  # (B, H, T, hs)
        scores = q @ k.transpose(-2, -1) / (C // self.n_head) ** 0.5  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        y = weights @ v  # (B, H, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B * T, C)), weights


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        C, bias = config.n_embd, config.bias
        self.ln1 = nn.LayerNorm(C, eps=config.ln_eps, bias=bias)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(C, eps=config.ln_eps, bias=bias)
        gelu = nn.GELU(approximate="none" if config.gelu == "exact" else "tanh")
        self.mlp = nn.Sequential(Linear(C, 4 * C, bias=bias), gelu, Linear(4 * C, C, bias=bias))
        self.p = config.dropout  # on the attention and MLP outputs, not the attention weights: keeps SDPA's fast kernel

    def forward(self, x: torch.Tensor, B: int, cache: KVCache | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + dropout_while_training(self, self.attn(self.ln1(x), B, cache, mask), self.p)
        return x + dropout_while_training(self, self.mlp(self.ln2(x)), self.p)


def dropout_while_training(module: nn.Module, x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout while `module` trains; no call at all otherwise (a decoding step is a few dozen tiny ops)."""
    return dropout(x, p) if module.training and p > 0 else x


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout (Srivastava et al. 2014): each number is zeroed with probability p, the rest
    scaled by 1 / (1 - p). The mask comes from 16 random bits per number, four to each 64-bit draw
    of torch's generator; `F.dropout` draws a Bernoulli per number, which costs several times more on
    a CPU (bench/handwritten.py: 1.16x a names transformer step; tests/test_handwritten.py compares
    the two). p is kept to 1/65,536, and the expectation exactly."""
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    bits = bits.view(torch.int16)[:n].view(x.shape)  # uniform on -32,768..32,767
    cut = round(p * 65536) - 32768  # kept: bits >= cut
    mask = torch.ge(bits, cut, out=torch.empty_like(x))  # 1.0 kept, 0.0 dropped (a float result: faster than bool)
    return x * mask.mul_(65536 / (32768 - cut))


def gpt2_init(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights and embeddings, zero biases (torch's defaults give
    embeddings of unit size, which the small residual stream then has to unlearn)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class Transformer(LanguageModel):
    default_lr = 1e-3  # peak learning rate when --lr is not given (names: 1e-3 beat 2e-3 at 8,000 steps)
    kind_lr = {"text": 2e-3}  # running text (docs/performance.md, tinyshakespeare)
    packs = True  # trains on packed rows (see `forward`)
    onednn = False  # torch's own GELU: oneDNN's costs a fixed setup per call (docs/performance.md, oneDNN)

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.positions, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.ln_eps, bias=config.bias)
        self.head = Linear(config.n_embd, config.vocab_size, bias=config.head_bias)
        if config.tie_head:
            self.head.weight = self.tok_emb.weight  # one tensor: the state dict names it twice, a checkpoint stores it once
        if config.init == "gpt2":
            self.apply(gpt2_init)
            for block in self.blocks:  # residual projections scaled by depth (Radford et al. 2019, section 2.3)
                for proj in (block.attn.proj, block.mlp[2]):
                    nn.init.normal_(proj.weight, std=0.02 / (2 * config.n_layer) ** 0.5)

    @property
    def max_context(self) -> int:
        return self.config.positions  # learned positions

    def forward(self, idx: torch.Tensor, caches: list[KVCache] | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) of ids (B, T) after the cached ones; or, with `pos` (B, T), of packed rows
        where each id is at position `pos` of its own item (`data.Items.packed`)."""
        B, T = idx.shape
        past = caches[0].n if caches else 0
        if past + T > self.config.positions:
            raise ValueError(f"{past + T} positions; the model has {self.config.positions}")
        mask = None
        if pos is None:
            x = self.tok_emb(idx) + self.pos_emb.weight[past : past + T]  # (B, T, C): token + position
        else:
            x = self.tok_emb(idx) + self.pos_emb(pos)
            j = torch.arange(T, device=idx.device)
            first = j - pos  # where each id's item starts in its row
            seen = (j[None, None, :] >= first[:, :, None]) & (j[None, None, :] <= j[None, :, None])  # (B, T, T)
            mask = x.new_zeros(B, 1, T, T).masked_fill_(~seen[:, None], float("-inf"))  # additive: SDPA would convert a bool one per call
        x = dropout_while_training(self, x, self.config.dropout)  # on the embeddings too (better names test loss, docs/models.md)
        x = x.view(B * T, -1)  # the blocks work on positions one after another: 2-D linears take no reshapes
        for i, block in enumerate(self.blocks):
            x = block(x, B, caches[i] if caches else None, mask)  # (B*T, C)
        return self.head(self.ln_f(x)).view(B, T, -1)  # (B, T, V)

    @torch.no_grad()
    def attention(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B, T, V) of ids (B, T) and each block's attention weights (B, H, T, T), through the
        written-out attention (for `makemore show attention`; `forward` stays on the fast kernel).
        No dropout: call it in eval mode."""
        B, T = idx.shape
        x = (self.tok_emb(idx) + self.pos_emb.weight[:T]).view(B * T, -1)  # (B*T, C)
        weights = []
        for block in self.blocks:
            y, w = block.attn.written_out(block.ln1(x), B)
            x = x + y
            x = x + block.mlp(block.ln2(x))
            weights.append(w)
        return self.head(self.ln_f(x)).view(B, T, -1), weights

    def init_state(self, batch_size: int) -> list[KVCache]:
        c = self.config
        p = self.tok_emb.weight
        shape = (2, batch_size, c.n_head, c.positions, c.n_embd // c.n_head)
        return [KVCache(p.new_empty(shape)) for _ in range(c.n_layer)]

    def step(self, idx: torch.Tensor, state: list[KVCache]) -> tuple[torch.Tensor, list[KVCache]]:
        return self(idx, state), state
