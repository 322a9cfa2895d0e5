"""The one training loop every model type shares.

AdamW with weight decay on matrices only, linear warm-up then cosine decay to `min_lr_ratio * lr`,
gradient-norm clipping, and an evaluation of train and val loss every `eval_interval` steps;
the best weights by val loss are kept and restored at the end. Training stops at `max_steps` or
after `max_seconds`, whichever comes first; the schedule follows whichever is further along.
The loop never prints: it reports `Step` and `Eval` events to a callback.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from makemore.data import IGNORE, Items, Stream
from makemore.errors import MakemoreError


@dataclass(kw_only=True)
class TrainConfig:
    max_steps: int = 5000  # optimisation steps
    max_seconds: float | None = None  # wall-time budget; None = steps only
    batch_size: int | None = None  # items or windows per step; None = the data's own default (`default_batch_size`)
    lr: float | None = None  # peak learning rate; None = the model type's `default_lr`
    min_lr_ratio: float = 0.1  # the cosine ends at lr * this
    warmup_steps: int = 100  # linear warm-up from 0
    weight_decay: float = 0.1  # AdamW, matrices only
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    eval_interval: int = 500  # steps between evaluations of train and val loss
    eval_items: int = 1000  # items (lines mode) or windows (text mode) of each split used by those evaluations
    seed: int = 1337  # batch order (the split and the model's init are seeded by the caller)
    device: str = "cpu"  # resolved device, see `resolve_device`

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "eval_interval", "eval_items"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise MakemoreError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise MakemoreError(f"--lr {self.lr}: must be a positive number")
        if not 0 <= self.seed < 2**63:
            raise MakemoreError(f"--seed {self.seed}: must be from 0 to 2**63 - 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise MakemoreError(f"--max-seconds {self.max_seconds}: must be positive")


@dataclass
class Step:
    step: int  # steps done
    loss: float  # this batch's training loss
    lr: float
    elapsed: float  # seconds
    progress: float  # 0..1, by steps or time


@dataclass
class Eval:
    step: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    improved: bool
    elapsed: float


@dataclass
class TrainState:
    """Everything the loop needs to continue: passed in (or made fresh) and returned by `train`."""

    step: int = 0  # optimisation steps done
    best_val_loss: float = math.inf
    best_step: int = 0
    elapsed: float = 0.0  # seconds of training so far
    optimizer: torch.optim.Optimizer | None = None  # made by `train` when None
    generator: torch.Generator | None = None  # the batch order; seeded by `train` when None
    history: list[Eval] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        return self.step / self.elapsed if self.elapsed else 0.0


def resolve(cfg: TrainConfig, model_cls: type, train_data: Items | Stream) -> TrainConfig:
    """`cfg` with its open defaults filled: the model type's learning rate, the data's batch size."""
    return dataclasses.replace(cfg, lr=cfg.lr or model_cls.default_lr, batch_size=cfg.batch_size or train_data.default_batch_size)


def resolve_device(name: str) -> str:
    """`auto` picks cuda, then mps, then cpu; a named device must be available."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if name == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if available[d])
    if name not in available:
        raise MakemoreError(f"--device {name!r}: choose one of auto, cpu, cuda, mps")
    if not available[name]:
        raise MakemoreError(f"--device {name}: not available on this machine")
    return name


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over all positions, skipping padding targets."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction=reduction)


@torch.no_grad()
def evaluate(model: nn.Module, split: Items | Stream, max_items: int | None = None) -> tuple[float, int]:
    """Mean loss per token (nats) over the first `max_items` items (or windows) of `split`, and the token count."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y in split.eval_batches(max_items):
        x, y = x.to(device), y.to(device)
        total += loss_fn(model(x), y, reduction="sum").item()
        count += int((y != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1), count


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices (embeddings, weights) decay, vectors (biases, norms) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = cfg.device in ("cpu", "cuda")  # one kernel for all parameters: the fastest step on small models
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=fused)


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def train(
    model: nn.Module,
    train_data: Items | Stream,
    val_data: Items | Stream,
    cfg: TrainConfig,
    state: TrainState | None = None,
    on_event: Callable[[Step | Eval], None] | None = None,
    on_improved: Callable[[int, float], None] | None = None,
) -> TrainState:
    """Train `model` in place from `state` (default: a fresh start) until `cfg`'s budget; return the state.

    `on_improved(step, val_loss)` is called whenever the best val loss improves. When it returns,
    `model` holds the weights of the best evaluation.
    """
    emit = on_event or (lambda event: None)
    cfg = resolve(cfg, type(model), train_data)
    model.to(cfg.device).train()
    state = state or TrainState()
    state.optimizer = state.optimizer or make_optimizer(model, cfg)
    state.generator = state.generator or torch.Generator().manual_seed(cfg.seed)
    opt, gen = state.optimizer, state.generator
    best_weights = None
    start = time.perf_counter() - state.elapsed

    def progress_at(step: int, elapsed: float) -> float:
        return max(step / cfg.max_steps, elapsed / cfg.max_seconds if cfg.max_seconds else 0.0)

    while True:
        progress = progress_at(state.step, time.perf_counter() - start)
        done = progress >= 1.0
        if done or (state.step > 0 and state.step % cfg.eval_interval == 0):
            train_loss, _ = evaluate(model, train_data, cfg.eval_items)
            val_loss, _ = evaluate(model, val_data, cfg.eval_items)
            improved = val_loss < state.best_val_loss
            if improved:
                state.best_val_loss, state.best_step = val_loss, state.step
                best_weights = copy.deepcopy(model.state_dict())
            event = Eval(state.step, train_loss, val_loss, state.best_val_loss, improved, time.perf_counter() - start)
            state.history.append(event)
            emit(event)
            if improved and on_improved:
                on_improved(state.step, val_loss)
        if done:
            break
        lr = learning_rate(cfg, state.step, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = train_data.batch(cfg.batch_size, gen)
        loss = loss_fn(model(x.to(cfg.device)), y.to(cfg.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        opt.step()
        state.step += 1
        elapsed = time.perf_counter() - start
        emit(Step(state.step, loss.item(), lr, elapsed, min(progress_at(state.step, elapsed), 1.0)))
    state.elapsed = time.perf_counter() - start
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    return state
