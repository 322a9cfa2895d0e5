"""What each piece of code written by hand, where a library has one, buys: an A/B in one process, in turns.

Each timed row trains a model on names (lines mode, batch 32) by the trainer's step (forward, loss,
backward, gradient norm, clipping to 1.0, AdamW) with the hand-written piece and with the library's,
from the same weights on the same batches (drawn before timing; constant learning rate), in
alternating chunks: `--rounds` chunks of `--steps` steps each way after a warm-up, the order swapped
every round, torch's RNG seeded alike before each chunk. It reports each side's median ms per step
and the median and range of the rounds' ratios, library / hand-written: 1.05 or more, the piece
buys at least 5%. The pieces and what stands in for them:
- `makemore.optim.AdamW` (flat buffers, the private `torch._fused_adamw_`, clipping folded in, the
  weights' moving average as one lerp): `torch.optim.AdamW(fused=True)` after `clip_grad_norm_`,
  the average by `torch._foreach_lerp_` over the parameters (the kernel `AveragedModel`'s EMA uses,
  without its Python: the fastest library way); transformer and mlp, with the trainer's average
  (0.999) and without (--ema 0). One model per side, the same initial weights.
- `makemore.models.transformer.dropout`: `F.dropout`, swapped in as the module's attribute.
- rnn's and gru's written-out backpropagation through time (`through_time`): torch's fused `nn.RNN`
  / `nn.GRU` under autograd (`through_time` returning None; `fused=True` throughout).
  These share one model and optimizer between the sides.
Then `checkpoint.serialize` against `safetensors.torch.save` on a names transformer's weights and a
checkpoint's six metadata entries: how many different outputs repeated calls give, and the time.

    python bench/handwritten.py [--rounds 5] [--steps 100] [--threads N] [--data PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import safetensors.torch
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.nn import functional as F

from machine import describe
from makemore import checkpoint, data, models
from makemore.models import transformer
from makemore.models.base import onednn
from makemore.train import TrainConfig, loss_fn, make_optimizer

NAMES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "names.txt"
BATCH = 32  # the trainer's default for lines mode
CLIP = 1.0  # the trainer's default --grad-clip
WARMUP = 10  # steps each way before timing


@dataclasses.dataclass
class Row:
    piece: str
    model: str
    ours_ms: list[float]  # ms per step of each round
    library_ms: list[float]

    @property
    def ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.ours_ms, self.library_ms)]


def build(name: str, prep: data.Dataset) -> nn.Module:
    torch.manual_seed(0)
    return models.build(name, models.make_config(name, prep.tokenizer.vocab_size, prep.block_size)).train()


def draw(model: nn.Module, prep: data.Dataset, n: int) -> list:
    """`n` training batches as the trainer draws them (packed rows for the transformer)."""
    gen = torch.Generator().manual_seed(1337)
    return [prep.splits["train"].batch(BATCH, gen, pack=model.packs) for _ in range(n)]


def backward(model: nn.Module, batch, zero_grad: Callable[[], None]) -> torch.Tensor:
    x, y, pos = batch
    with onednn(model.onednn):
        loss = loss_fn(model(x) if pos is None else model(x, pos=pos), y)
        zero_grad()
        loss.backward()
    return loss


def ours(model: nn.Module, ema: float) -> Callable:
    """The trainer's step: its AdamW (`make_optimizer`), clipping inside the update."""
    opt = make_optimizer(model, TrainConfig(lr=model.lr_for("lines"), ema=ema))

    def step(batch) -> None:
        loss = backward(model, batch, opt.zero_grad)
        norm = opt.grad_norm()
        float(norm), loss.item()  # the trainer reads both (the divergence check, the progress event)
        opt.step(norm, CLIP)

    return step


def library(model: nn.Module, ema: float) -> Callable:
    """The same step by torch.optim: fused AdamW after clip_grad_norm_, then the average's lerp."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=model.lr_for("lines"), betas=(0.9, 0.99), fused=True)
    average = [p.detach().clone() for p in params] if ema else None
    done = 0

    def step(batch) -> None:
        nonlocal done
        loss = backward(model, batch, opt.zero_grad)
        norm = nn.utils.clip_grad_norm_(params, CLIP)
        float(norm), loss.item()
        opt.step()
        done += 1
        if average is not None:
            with torch.no_grad():
                torch._foreach_lerp_(average, params, 1 - min(ema, (1 + done) / (10 + done)))  # the trainer's warm-up

    return step


@contextmanager
def swapped(obj, name: str, value) -> Iterator[None]:
    """`obj.name` is `value` inside the block."""
    before = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, before)


def race(piece: str, name: str, sides: list[tuple[Callable, Callable]], batches: list, rounds: int) -> Row:
    """ms per step of two sides, each (step, context to run it in), in alternating chunks over `batches`."""
    def chunk(side: int, items: list, seed: int) -> float:
        step, context = sides[side]
        torch.manual_seed(seed)  # dropout draws the same numbers on both sides
        with context():
            start = time.perf_counter()
            for batch in items:
                step(batch)
            return 1000 * (time.perf_counter() - start) / len(items)

    for side in (0, 1):
        chunk(side, batches[:WARMUP], 0)
    times: list[list[float]] = [[], []]
    for r in range(rounds):
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            times[side].append(chunk(side, batches, r))
    return Row(piece, name, *times)


def step_rows(prep: data.Dataset, rounds: int, steps: int) -> list[Row]:
    rows = []
    for name in ("transformer", "mlp"):
        for ema in (0.999, 0.0):
            a, b = build(name, prep), build(name, prep)  # the same initial weights
            piece = "AdamW + clip" + (" + average" if ema else "")
            rows.append(race(piece, name, [(ours(a, ema), nullcontext), (library(b, ema), nullcontext)], draw(a, prep, steps), rounds))
    model = build("transformer", prep)
    step = ours(model, 0.999)
    library_dropout = lambda: swapped(transformer, "dropout", F.dropout)  # noqa: E731
    rows.append(race("dropout", "transformer", [(step, nullcontext), (step, library_dropout)], draw(model, prep, steps), rounds))
    for name in ("rnn", "gru"):
        model = build(name, prep)
        step = ours(model, 0.999)
        torch_kernel = lambda: swapped(model, "through_time", lambda idx, state: None)  # noqa: E731
        rows.append(race("through time", name, [(step, nullcontext), (step, torch_kernel)], draw(model, prep, steps), rounds))
    return rows


def writers(prep: data.Dataset, repeats: int = 30) -> dict[str, tuple[int, float]]:
    """Per writer: how many different outputs `repeats` calls gave, and the median ms of a call."""
    model = build("transformer", prep)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": checkpoint.FORMAT, "format_version": str(checkpoint.FORMAT_VERSION), "model_type": "transformer",
                "model_config": json.dumps(dataclasses.asdict(model.config)), "tokenizer": json.dumps(prep.tokenizer.to_dict()),
                "training": json.dumps({"step": 5000, "best_val_loss": 1.9})}  # what `checkpoint.save` writes
    calls = {"checkpoint.serialize": lambda: checkpoint.serialize(tensors, metadata),
             "safetensors.torch.save": lambda: safetensors.torch.save(tensors, metadata)}
    outputs: dict[str, set] = {k: set() for k in calls}
    times: dict[str, list] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            data = call()
            times[name].append(1000 * (time.perf_counter() - start))
            outputs[name].add(hashlib.sha256(data).digest())
            back = safetensors.torch.load(data)
            assert all(torch.equal(back[k], t) for k, t in tensors.items())  # both write the same tensors
    return {k: (len(outputs[k]), statistics.median(times[k])) for k in calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100, help="steps per chunk")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--data", default=str(NAMES) if NAMES.exists() else None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prep = data.prepare(args.data, seed=1337)
    started = time.perf_counter()
    rows = step_rows(prep, args.rounds, args.steps)
    written = writers(prep)
    machine = (f"{describe(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())}, torch {torch.__version__}, "
               f"Python {platform.python_version()}")
    table = Table(title=f"Hand-written vs library, one training step; {prep.name}, batch {BATCH}, {args.rounds} rounds "
                        f"of {args.steps} steps each way; {machine}")
    for col in ("piece", "model", "ours ms/step", "library ms/step", "speed-up", "rounds' range", ">= 5%"):
        table.add_column(col, justify="left" if col in ("piece", "model") else "right")
    for r in rows:
        ratio = statistics.median(r.ratios)
        table.add_row(r.piece, r.model, f"{statistics.median(r.ours_ms):.3f}", f"{statistics.median(r.library_ms):.3f}",
                      f"{ratio:.3f}x", f"{min(r.ratios):.3f}-{max(r.ratios):.3f}", "yes" if ratio >= 1.05 else "no")
    console = Console(width=200)
    console.print(table)
    files = Table(title="Checkpoint writer: names transformer weights + six metadata entries, 30 calls each, in turns")
    for col in ("writer", "different outputs", "median ms"):
        files.add_column(col, justify="left" if col == "writer" else "right")
    for name, (distinct, ms) in written.items():
        files.add_row(name, str(distinct), f"{ms:.3f}")
    console.print(files)
    console.print(f"{time.perf_counter() - started:.0f} s", highlight=False)


if __name__ == "__main__":
    main()
