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

import functools
import math
import platform
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


class Linear(nn.Linear):
    """`nn.Linear` with two faster products for float32 on a CPU, each measured on a 2-core EPYC
    against torch's own, which is MKL's (docs/performance.md, GPT-2):

    - one row (a decoding step: one position of one sequence) runs as a batched product of row
      chunks. A decoding step reads every weight from memory for a single row, and for that shape
      MKL's kernel (gemv) streams memory at about half the speed of its batched product, which also
      shares the chunks among threads where gemv stays on one. GB/s, one thread: GPT-2's 768 ->
      2,304 12.5 against 24, 3,072 -> 768 16 against 23; two threads: 12-17 against 34-45.
    - more rows (training, evaluation, a prompt) run through oneDNN's product (`OneDNNProduct`),
      5-20% faster than MKL's on products of 2^24 multiply-adds or more (`ONEDNN_FROM`; below, its
      fixed cost per call outweighs that), 40% on GPT-2's head (50,257 outputs, an odd row length
      MKL is slow to write). A GPT-2 fine-tuning step: 9.2 against 10.1 s on one thread, 4.5 against
      5.1 on two; the char transformer's step (text defaults) 1.06x.

    Both are the same sums in another order: equal up to rounding. bfloat16, autocast (whose
    products are bfloat16 ones), `torch.compile`, `torch.func` and other devices keep the plain
    product, as does a one-row product whose weight is small or whose row count is prime; the
    parameters and their names are `nn.Linear`'s."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.chunks = row_chunks(out_features) if in_features * out_features >= SPLIT_FROM else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (x.dtype != torch.float32 or w.dtype != torch.float32 or not x.is_cpu or not w.is_contiguous()
                or x.dim() < 2 or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling()):
            return super().forward(x)  # compiled, the compiler picks its own kernels
        rows = math.prod(x.shape[:-1])
        if rows > 1 and rows * w.numel() >= ONEDNN_FROM and onednn_product() and not transformed():
            return OneDNNProduct.apply(x.reshape(rows, -1), w, self.bias).view(*x.shape[:-1], -1)
        if rows != 1 or self.chunks == 1:
            return super().forward(x)
        k, (out, n) = self.chunks, w.shape
        chunks, column = w.view(k, out // k, n), x.reshape(1, n).t().expand(k, n, 1)  # k products of (out/k, n) by (n, 1), strides (0, 1, n): as (0, 1, 1) torch left MKL for a kernel 5x slower
        y = torch.bmm(chunks, column) if self.bias is None else torch.baddbmm(self.bias.view(k, out // k, 1), chunks, column)
        return y.view(*x.shape[:-1], out)


class OneDNNProduct(torch.autograd.Function):
    """`F.linear(x, w, b)` for float32 rows `x` (N, in) on a CPU through oneDNN's product, the one torch
    uses for bfloat16 and inside compiled graphs (`torch.ops.mkldnn._linear_pointwise`), with its
    gradients: the input's through oneDNN too where the CPU has AVX-512 (5-15% faster than MKL's;
    `onednn_input_gradient`), the weight's through torch's `mm` (as fast either way). A gradient of
    the gradient (`create_graph=True`) takes torch's own product, which has one; oneDNN's has none."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, w)  # x only for the weight's gradient, as nn.Linear
        ctx.bias = b is not None
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        grad = grad.contiguous()
        dx = None
        if ctx.needs_input_grad[0] and onednn_input_gradient() and not torch.is_grad_enabled():
            dx = torch.ops.mkldnn._linear_pointwise(grad, w.t(), None, "none", [], "")
        elif ctx.needs_input_grad[0]:
            dx = grad @ w
        dw = grad.t() @ x if ctx.needs_input_grad[1] else None
        db = grad.sum(0) if ctx.bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


@functools.cache
def onednn_input_gradient() -> bool:
    """Whether `OneDNNProduct` takes the input's gradient through oneDNN: where torch's kernels use
    AVX-512. With both libraries held to AVX2 on the EPYC (ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS)
    oneDNN's product by the transposed weight ran 60-90 GFLOP/s against MKL's 90-100, while its
    forward product kept its lead (100-104 against 94-99; GPT-2's head 90 against 66)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def transformed() -> bool:
    """Whether `torch.func` transforms or forward-mode gradients are on: `OneDNNProduct` has neither
    rule, so `Linear` takes torch's own product then."""
    return torch._C._are_functorch_transforms_active() or torch.autograd.forward_ad._current_level >= 0


@functools.cache
def onednn_product() -> bool:
    """Whether `OneDNNProduct` is used: on x86-64 CPUs, where it was measured (elsewhere, such as an
    ARM laptop, torch's own product uses the vendor's library), and where this torch has oneDNN's
    product as it is called there (an operator of torch's compiler, not a public function): checked
    once, on a product whose answer is known, so a torch that lacks or changed it keeps the plain one."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    if not (hasattr(torch._C, "_are_functorch_transforms_active") and hasattr(torch.autograd.forward_ad, "_current_level")):
        return False  # `transformed` could not tell when to keep out of the way
    try:
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 3), torch.ones(4, 3), torch.ones(4), "none", [], "")
        return torch.equal(y, torch.full((2, 4), 4.0))
    except (AttributeError, RuntimeError, TypeError):
        return False


ONEDNN_FROM = 1 << 24  # multiply-adds: below, oneDNN's fixed cost per product (about 0.1 ms with its gradients) outweighs its speed
# (forward and backward, one thread: names' 512 x 64 -> 256 0.9x, 1,024 x 128 -> 128 0.98x, 2,048 x 64 -> 256 1.3x)
SPLIT_FROM = 1 << 17  # weights of fewer numbers (512 KB) stay in the cache, where the plain product is as fast or faster (names' 64 -> 256: 0.9x split)


def row_chunks(rows: int, fewest: int = 16, least_rows: int = 16) -> int:
    """Chunks for `Linear`'s one-row product: the fewest, at least `fewest`, that divide `rows` into
    parts of `least_rows` or more (16 chunks or more keep every thread of a laptop busy; from 2 to
    32 one thread runs as fast); 1, no split, where none does (a small or prime output)."""
    for k in range(fewest, rows // least_rows + 1):
        if rows % k == 0:
            return k
    return 1
