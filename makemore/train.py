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

from makemore.data import IGNORE, Split
from makemore.errors import MakemoreError


@dataclass(kw_only=True)
class TrainConfig:
    max_steps: int = 5000  # optimisation steps
    max_seconds: float | None = None  # wall-time budget; None = steps only
    batch_size: int = 32  # items per step
    lr: float | None = None  # peak learning rate; None = the model type's `default_lr`
    min_lr_ratio: float = 0.1  # the cosine ends at lr * this
    warmup_steps: int = 100  # linear warm-up from 0
    weight_decay: float = 0.1  # AdamW, matrices only
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    eval_interval: int = 500  # steps between evaluations of train and val loss
    eval_items: int = 1000  # items of each split used by those evaluations
    seed: int = 1337  # batch order (the split and the model's init are seeded by the caller)
    device: str = "cpu"  # resolved device, see `resolve_device`

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "eval_interval", "eval_items"):
            if getattr(self, name) <= 0:
                raise MakemoreError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.lr is not None and not self.lr > 0:
            raise MakemoreError(f"--lr {self.lr}: must be positive")
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
class TrainResult:
    steps: int
    best_val_loss: float
    best_step: int
    elapsed: float
    history: list[Eval] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.elapsed if self.elapsed else 0.0


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
def evaluate(model: nn.Module, split: Split, max_items: int | None = None, batch_size: int = 500) -> tuple[float, int]:
    """Mean loss per token (nats) over the first `max_items` items of `split`, and the token count."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(split) if max_items is None else min(max_items, len(split))
    total, count = 0.0, 0
    for i in range(0, n, batch_size):
        x, y = split.x[i : min(i + batch_size, n)].to(device), split.y[i : min(i + batch_size, n)].to(device)
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
    train_split: Split,
    val_split: Split,
    cfg: TrainConfig,
    on_event: Callable[[Step | Eval], None] | None = None,
    on_improved: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train `model` in place; `on_improved(step, val_loss)` is called whenever the best val loss improves.

    When it returns, `model` holds the weights of the best evaluation.
    """
    emit = on_event or (lambda event: None)
    if cfg.lr is None:
        cfg = dataclasses.replace(cfg, lr=type(model).default_lr)
    model.to(cfg.device).train()
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult(steps=0, best_val_loss=math.inf, best_step=0, elapsed=0.0)
    best_state = None
    start = time.perf_counter()
    step = 0

    def progress_at(step: int, elapsed: float) -> float:
        return max(step / cfg.max_steps, elapsed / cfg.max_seconds if cfg.max_seconds else 0.0)

    while True:
        progress = progress_at(step, time.perf_counter() - start)
        done = progress >= 1.0
        if done or (step > 0 and step % cfg.eval_interval == 0):
            train_loss, _ = evaluate(model, train_split, cfg.eval_items)
            val_loss, _ = evaluate(model, val_split, cfg.eval_items)
            improved = val_loss < result.best_val_loss
            if improved:
                result.best_val_loss, result.best_step = val_loss, step
                best_state = copy.deepcopy(model.state_dict())
            event = Eval(step, train_loss, val_loss, result.best_val_loss, improved, time.perf_counter() - start)
            result.history.append(event)
            emit(event)
            if improved and on_improved:
                on_improved(step, val_loss)
        if done:
            break
        lr = learning_rate(cfg, step, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = train_split.batch(cfg.batch_size, gen)
        loss = loss_fn(model(x.to(cfg.device)), y.to(cfg.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        opt.step()
        step += 1
        elapsed = time.perf_counter() - start
        emit(Step(step, loss.item(), lr, elapsed, min(progress_at(step, elapsed), 1.0)))
    result.steps = step
    result.elapsed = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result
