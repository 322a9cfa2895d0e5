"""Sampling: draw new items from any model, all samples of a call in one batch.

Every sample starts from the boundary token (plus an optional prompt) and ends at the next
boundary token or when it reaches the model's block size. `temperature` 0 means greedy decoding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from makemore.errors import MakemoreError
from tokenizer import TokenizerError


MAX_SAMPLES = 100_000  # per call: more is surely a typo


def check_options(n: int, temperature: float, top_k: int | None) -> None:
    if not 1 <= n <= MAX_SAMPLES:
        raise MakemoreError(f"-n {n}: must be from 1 to {MAX_SAMPLES:,}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise MakemoreError(f"--temperature {temperature}: must be 0 (greedy) or more")
    if top_k is not None and top_k < 1:
        raise MakemoreError(f"--top-k {top_k}: must be at least 1")


@torch.no_grad()
def generate(
    model: nn.Module,
    tok,
    n: int = 20,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    prompt: str = "",
) -> list[str]:
    """`n` new items; each begins with `prompt`."""
    check_options(n, temperature, top_k)
    block_size = model.config.block_size
    device = next(model.parameters()).device
    try:
        start = [tok.eot_id, *tok.encode(prompt)]
    except TokenizerError as e:
        raise MakemoreError(f"--prompt {prompt!r}: {e}") from None
    if len(start) >= block_size + 1:
        raise MakemoreError(f"--prompt is {len(start) - 1} tokens; the model's items are at most {block_size - 1}")
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    model.eval()
    idx = torch.tensor([start] * n, device=device)  # (n, t)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    while idx.shape[1] <= block_size and not done.all():
        logits = model(idx[:, -block_size:])[:, -1, :]  # (n, V)
        if temperature == 0:
            nxt = logits.argmax(dim=-1)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (n, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).squeeze(1)
        nxt = torch.where(done, tok.eot_id, nxt)
        done |= nxt == tok.eot_id
        idx = torch.cat([idx, nxt[:, None]], dim=1)
    out = []
    for row in idx[:, 1:].tolist():
        if tok.eot_id in row:
            row = row[: row.index(tok.eot_id)]
        out.append(tok.decode(row))
    return out
