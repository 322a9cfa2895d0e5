"""What every model type shares: the config fields the code fills in, and the incremental interface.

The contract: a model is an `nn.Module` built from its config alone, `model(idx)` maps token ids
(B, T) to logits (B, T, vocab_size), and position t only sees ids <= t.

Incremental decoding, one interface for all types: `state = model.init_state(B)`, then
`logits, state = model.step(idx, state)` feeds new ids (B, t) and returns their logits (B, t, V).
The default here slides a window: the state is the last `receptive_field` ids (all of them when
None) and each step reruns `forward` on the window; it is exact because a position's logits
depend on no more than that. The transformer (key/value cache) and the recurrent types (hidden
state) override `init_state` and `step`.

Context past the block size: types with learned absolute positions (transformer, bow) set
`max_context`; `context_length` says how many of the last ids they see next. Up to the block
size, all; past it the context drops to the last half block and grows again (so a cache is
rebuilt once per half block, not at every token). The uncached reference uses the same rule.
The loss, the training loop, sampling and checkpoints are shared and live elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from makemore.errors import MakemoreError

MAX_SIZE = 1 << 24  # any single size option above this is surely a typo


@dataclass(kw_only=True)
class ModelConfig:
    vocab_size: int = 0  # filled in from the tokenizer, never typed by the user
    block_size: int = 0  # filled in from the data: longest item + 1 (lines), or --block-size (text)
    kind_defaults: ClassVar[dict[str, dict]] = {}  # defaults that differ for a data kind, by its name (running text wants more capacity)

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

    @property
    def width(self) -> int:
        """The widest activation per position, for the memory estimate: the largest n_* size."""
        return max((v for k, v in vars(self).items() if k.startswith("n_") and isinstance(v, int)), default=64)

    def require_positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) <= 0:
                raise MakemoreError(f"model option {name}={getattr(self, name)}: must be at least 1")


class LanguageModel(nn.Module):
    default_lr = 1e-3  # peak learning rate when --lr is not given
    kind_lr: dict[str, float] = {}  # the same for a data kind, by its name, where it differs
    onednn = True  # trains and evaluates with torch's oneDNN CPU kernels (see `onednn`)
    packs = False  # `forward(idx, pos=...)` takes packed rows of several items (`data.Items.packed`)

    @classmethod
    def lr_for(cls, kind: str) -> float:
        return cls.kind_lr.get(kind, cls.default_lr)

    @property
    def max_context(self) -> int | None:
        """Ids the model can see at once (learned positions); None: any number."""
        return None

    @property
    def receptive_field(self) -> int | None:
        """How many of the last ids the last position's logits depend on; None: all of them."""
        return None

    def context_length(self, n: int) -> int:
        """How many of the last `n` ids the next prediction sees (see the module docstring)."""
        m = self.max_context
        if m is None or n <= m:
            return n
        keep = m // 2
        return keep + (n - m - 1) % (m - keep) + 1

    def init_state(self, batch_size: int):
        """The state before any id: here, an empty window."""
        return torch.zeros(batch_size, 0, dtype=torch.long, device=next(self.parameters()).device)

    def step(self, idx: torch.Tensor, state) -> tuple[torch.Tensor, object]:
        """Logits (B, t, V) of the new ids `idx` (B, t) after `state`, and the state after them."""
        window = torch.cat([state, idx], dim=1)  # (B, w + t)
        logits = self(window)[:, -idx.shape[1] :]
        r = self.receptive_field
        return logits, window if r is None else window[:, -r:]


@contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    """Torch's oneDNN CPU kernels on (if they were) or off for a while. They are much faster for
    `nn.LSTM`, but their GELU has a fixed setup cost per call that small transformer steps and
    one-position decoding steps feel (docs/performance.md, oneDNN). Same function either way: the
    results differ in rounding only."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled and before
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def lay_out_for_decoding(model: nn.Module) -> None:
    """Store each `nn.Linear` weight that does not narrow (as many outputs as inputs, or more) column
    by column: the same (out, in) tensor with transposed strides, its memory as (in, out). Decoding
    multiplies one row by every weight, reading them all from memory per token, and a one-row
    product streams memory fastest along the longer side. On a 2-core EPYC, one thread, float32,
    in GB/s column by column against row by row: 768 -> 3072 18-19 against 12, GPT-2's head
    768 -> 50,257 25 against 12.5, 768 -> 768 15 against 13; 3072 -> 768 is faster row by row (17
    against 14), so narrowing weights stay. Larger products (training, evaluation) run as fast
    either way, and the training loop's optimizer lays its parameters out again anyway
    (`optim.AdamW`). A tied embedding goes with its head: a lookup reads its columns. Float32 only:
    bfloat16 products of a weight laid out so take a slow kernel (GPT-2 decoding fell from 33 to
    3.3 tokens/s). Call it on an allocated CPU model before its weights are read into it."""
    moved: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features >= module.in_features and module.weight.dtype == torch.float32:
            w = module.weight
            if id(w) not in moved:
                moved[id(w)] = nn.Parameter(w.new_empty(w.shape[::-1]).t(), requires_grad=w.requires_grad)
    for module in model.modules():  # every holder of a moved weight, so a tied one stays tied
        for name, p in list(module.named_parameters(recurse=False)):
            if id(p) in moved:
                setattr(module, name, moved[id(p)])
