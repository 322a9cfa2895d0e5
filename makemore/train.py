"""The one training loop every model type shares.

AdamW with weight decay on matrices only, linear warm-up then cosine decay to `min_lr_ratio * lr`,
gradient-norm clipping, and an evaluation of train and val loss every `eval_interval` steps;
the best weights by val loss are kept and restored at the end. With `ema`, the optimizer keeps a
moving average of the weights, and the evaluations, the best weights and the checkpoints use it.
Training stops at `max_steps` or after `max_seconds` (the schedule follows whichever is further
along), after `early_stop` evaluations without improvement, or when `should_stop()` says so (a
signal); a non-finite loss or gradient norm stops it before the optimizer step with `Diverged`.

Everything needed to continue lives in the `TrainState` that `train` takes and returns (step,
optimizer, batch generator, torch's RNG, best loss and weights, elapsed time), so an interrupted
run resumes exactly, and with a step budget bit for bit. Under torchrun each rank draws its own
batches, gradients are averaged by DDP, and every stop decision is agreed by all ranks at once.
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

from makemore.data import IGNORE, Dataset, Items, Stream
from makemore.distributed import SINGLE, Rank
from makemore.errors import MakemoreError
from makemore.models import n_params
from makemore.models.base import LanguageModel, onednn
from makemore.optim import AdamW
from makemore.threads import Tuner
from safeio.files import shown


EVAL_ITEMS = 1000  # windows (or items) of train and val that each evaluation during training measures: a bounded cost
TEST_ITEMS = 2000  # of a test split, for the final figure and `makemore eval`
EVAL_WORK = 1 << 38  # parameters x positions an evaluation may cost by default: about 0.5 TFLOP, seconds on a CPU core
FEWEST_ITEMS = 16  # however large the model


def items_for(model: LanguageModel, most: int) -> int:
    """How many windows (or items) an evaluation of `model` measures by default: `most`, or fewer where
    that many would take minutes. GPT-2 124M at block 256 costs 3.2e10 parameters x positions a
    window, 1 s of a CPU core: 16 windows, not the 1,000 that cost a small model (1M parameters)
    seconds; every model trained from scratch on a CPU keeps `most`."""
    return max(FEWEST_ITEMS, min(most, EVAL_WORK // max(1, n_params(model) * model.config.block_size)))


class Diverged(Exception):
    """The loss or the gradient norm stopped being a finite number."""

    def __init__(self, step: int, what: str):
        super().__init__(f"training diverged at step {step}: the {what} is not a finite number; "
                         f"try a lower learning rate (--lr); the last good checkpoint is unchanged")
        self.step = step


def check_seed(seed: int) -> int:
    """A seed torch's generators take."""
    if not 0 <= seed < 2**63:
        raise MakemoreError(f"`seed` {seed}: must be from 0 to 2**63 - 1")
    return seed


@dataclass(kw_only=True)
class TrainConfig:
    max_steps: int = 5000  # optimisation steps
    max_seconds: float | None = None  # wall-time budget; None = steps only
    batch_size: int | None = None  # items or windows per step; None = the data's own default (`default_batch_size`)
    lr: float | None = None  # peak learning rate; None = the model type's own for the data's mode (`lr_for`)
    min_lr_ratio: float = 0.1  # the cosine ends at lr * this
    warmup_steps: int = 100  # linear warm-up from 0
    weight_decay: float = 0.1  # AdamW, matrices only
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    ema: float = 0.999  # decay of the weights' moving average, which evaluations and checkpoints then use; 0 = off
    eval_interval: int = 500  # steps between evaluations of train and val loss
    eval_items: int | None = None  # items (lines mode) or windows (text mode) of each split used by those evaluations; None: `items_for`
    test_items: int | None = None  # items or windows of the test split measured at the end (`Stream.eval_batches` spreads them)
    seed: int = 1337  # batch order (the split and the model's init are seeded by the caller)
    early_stop: int | None = None  # stop after this many evaluations without a better val loss
    deterministic: bool = False  # torch's deterministic algorithms; no timings in the checkpoint (byte-identical files)
    pack: bool = True  # lines mode: a batch's items packed into full rows, for the models that can (the transformer)
    threads: int | None = None  # CPU threads; None: chosen, and tuned while training (`threads.Tuner`)
    eval_at_start: bool = False  # an evaluation before the first step (fine-tuning: the curve shows the head start)
    device: str = "cpu"  # resolved device, see `resolve_device`
    dtype: str = "float32"  # of the products; "bfloat16": forward and backward under bfloat16 autocast (`mixed_precision`)

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "eval_interval", "eval_items", "test_items", "early_stop", "threads"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise MakemoreError(f"`{name}` {getattr(self, name)}: must be at least 1")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise MakemoreError(f"`lr` {self.lr}: must be a positive number")
        check_seed(self.seed)
        if not 0 <= self.ema < 1:
            raise MakemoreError(f"`ema` {self.ema}: must be from 0 to below 1 (e.g. 0.999)")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise MakemoreError(f"`max_seconds` {self.max_seconds}: must be positive")
        if self.dtype not in ("float32", "bfloat16"):
            raise MakemoreError(f"`dtype` {shown(self.dtype)}: choose float32 or bfloat16")
        if self.dtype == "bfloat16" and not bfloat16_native(self.device):
            raise MakemoreError(f"`dtype` bfloat16: {self.device} has no bfloat16 arithmetic of its own (a CPU needs AVX512-BF16 or AMX), "
                                "so it would train slower than float32; leave --dtype out")


@dataclass
class Step:
    step: int  # steps done
    loss: float  # this batch's training loss
    lr: float
    elapsed: float  # seconds
    progress: float  # 0..1, by steps or time
    grad_norm: float = 0.0  # before clipping
    tokens: int = 0  # tokens in this step's batch, all ranks together
    threads: int = 1  # CPU threads the step ran on


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
    evals_since_best: int = 0  # for early stopping
    optimizer: AdamW | None = None  # made by `train` when None
    generator: torch.Generator | None = None  # the batch order; seeded by `train` when None
    torch_rng: torch.Tensor | None = None  # torch's global RNG (dropout), restored on resume
    best_weights: dict | None = None  # the model's state at its best evaluation
    latest_weights: dict | None = None  # the model's state when `train` returned (it then holds the best)
    stopped: str = ""  # why the last `train` call ended: budget, early-stop, interrupted
    history: list[Eval] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        return self.step / self.elapsed if self.elapsed else 0.0

    def state_dict(self, timings: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors (optimizer moments, RNG states) and JSON (counters, param groups) to continue from.
        Without `timings` the elapsed time is stored as 0 (byte-identical files for one seed; a
        `max_seconds` budget then starts again on resume)."""
        opt = self.optimizer.state_dict()
        tensors = {"rng.batch": self.generator.get_state(), "rng.torch": self.torch_rng}
        for i, entry in opt["state"].items():
            for key, value in entry.items():
                tensors[f"opt.{i}.{key}"] = value
        info = {"step": self.step, "best_val_loss": self.best_val_loss, "best_step": self.best_step,
                "elapsed": self.elapsed if timings else 0.0, "evals_since_best": self.evals_since_best,
                "param_groups": opt["param_groups"]}
        return tensors, info

    def load_state_dict(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        """The counters, RNG states and optimizer moments of `state_dict()`, into this state (whose
        `optimizer` is already made for the model); a ValueError when they do not fit."""
        entries: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                i, name = key[4:].split(".", 1)
                entries.setdefault(int(i), {})[name] = value
        groups = [g | {"betas": tuple(g["betas"])} for g in info["param_groups"]]
        self.optimizer.load_state_dict({"state": entries, "param_groups": groups})
        self.generator = torch.Generator()
        self.generator.set_state(tensors["rng.batch"])
        self.torch_rng = tensors["rng.torch"]
        self.step, self.best_val_loss, self.best_step = info["step"], info["best_val_loss"], info["best_step"]
        self.elapsed, self.evals_since_best = info["elapsed"], info["evals_since_best"]


FINE_TUNE_LR_SCALE = 0.1  # fine-tuning's default learning rate: the type's own times this (text transformer: 2e-4)


def resolve(cfg: TrainConfig, model: LanguageModel, kind: type[Dataset], fine_tune: bool = False) -> TrainConfig:
    """`cfg` with its open defaults filled: the model type's learning rate for the data's kind (a tenth
    of it to fine-tune: the weights are already good), the kind's batch size, and how much each
    evaluation measures (`items_for`). Called once per run (`run.Run`); the loop takes the result as it is."""
    lr = cfg.lr or type(model).lr_for(kind.kind) * (FINE_TUNE_LR_SCALE if fine_tune else 1.0)
    return dataclasses.replace(cfg, lr=lr, batch_size=cfg.batch_size or kind.default_batch_size,
                               eval_items=cfg.eval_items or items_for(model, EVAL_ITEMS),
                               test_items=cfg.test_items or items_for(model, TEST_ITEMS))


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
        raise MakemoreError(f"`device` {shown(name)}: choose one of auto, cpu, cuda, mps")
    if not available[name]:
        raise MakemoreError(f"`device` {name}: not available on this machine")
    return name


def bfloat16_native(device: str) -> bool:
    """Whether `device` multiplies bfloat16 numbers in hardware, so that autocast to it pays."""
    kind = torch.device(device).type
    if kind == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return kind == "cuda" and torch.cuda.is_bf16_supported()


def mixed_precision(cfg: TrainConfig):
    """The context of a training forward: with `dtype` bfloat16, autocast runs the matrix products (and
    so their backward) in bfloat16, while the weights, their gradients, the optimizer and every
    evaluation stay float32 (Micikevicius et al. 2018; bfloat16 keeps float32's range, so no loss
    scaling). GPT-2 124M's fine-tuning step at block 256: 1.8x faster on an AVX512-BF16 EPYC
    (docs/performance.md, GPT-2)."""
    return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over all positions, skipping padding targets."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction=reduction)


class CrossEntropy(torch.autograd.Function):
    """`loss_fn`'s mean cross-entropy of logits (N, V) against targets (N,), for a training step, without
    the two (N, V) tensors `F.cross_entropy` makes (its log-softmax, then that one's gradient): the
    forward keeps each row's log-sum-exp, and the backward turns the logits, which no other operation
    needs once the loss is taken, into their own gradient in place, softmax minus one-hot, a few rows
    at a time. With GPT-2's 50,257 tokens those tensors are 206 MB each at 1,024 positions, and
    fresh blocks that large cost more in page faults than in arithmetic: a 124M fine-tuning step takes
    10.0 s against 11.6 (one thread, 2-core EPYC; docs/performance.md, GPT-2). Equal to `loss_fn` and
    its gradient within float32 rounding (tests/test_optim.py). `training_loss` says when it is used."""

    ROWS = 64  # rows of logits worked on at a time, so a temporary is a part, never all N rows (GPT-2: 2 to 64 rows ran within 10%)

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.cat([torch.logsumexp(part.float(), -1) for part in logits.split(CrossEntropy.ROWS)])  # float32 always
        keep = targets != IGNORE
        safe = torch.where(keep, targets, 0)
        n = keep.sum()
        ctx.save_for_backward(logits, safe, lse, keep, n)
        return ((lse - logits.gather(1, safe[:, None])[:, 0].float()) * keep).sum() / n

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, safe, lse, keep, n = ctx.saved_tensors
        rows = CrossEntropy.ROWS
        scale = grad / n * keep
        for part, l, s, t in zip(logits.split(rows), lse.split(rows), scale.split(rows), safe.split(rows)):
            p = part.float()  # the rows themselves when they are float32; bfloat16 ones are worked on in float32
            p.sub_(l[:, None]).exp_().mul_(s[:, None])  # softmax, scaled
            p[torch.arange(len(t), device=t.device), t] -= s  # minus one-hot
            if p is not part:
                part.copy_(p)  # the gradient in the logits' dtype, as autocast's cast would give it
        return logits, None


FUSED_LOGITS = 1 << 21  # from this many logits on, `CrossEntropy` is faster: 2,048 x 1,024 17.7 against 26.7 ms;
# with fewer its Python costs more than it saves (names, 512 x 27: 0.57 against 0.20 ms)


def training_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss a training step takes the gradient of: `loss_fn`, through `CrossEntropy` where the
    logits are many (FUSED_LOGITS) and an operation's output (never a tensor of the caller's own,
    which its backward would overwrite). Float32 or bfloat16 logits (`--dtype bfloat16`: it works
    in float32 a few rows at a time, where torch would upcast them all)."""
    if logits.numel() >= FUSED_LOGITS and logits.dtype in (torch.float32, torch.bfloat16) and logits.grad_fn is not None:
        return CrossEntropy.apply(logits.flatten(0, 1), targets.flatten())
    return loss_fn(logits, targets)


@torch.no_grad()
def evaluate(model: nn.Module, split: Items | Stream, max_items: int | None = None) -> tuple[float, int]:
    """Mean loss per token (nats) over `max_items` items (or windows) of `split` (`eval_batches`), and the token count."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y, pos in split.eval_batches(max_items, pack=model.packs, **logits_bound(model, split)):
        x, y = x.to(device), y.to(device)
        with onednn(model.onednn):
            logits = model(x) if pos is None else model(x, pos=pos.to(device))
            total += loss_fn(logits, y, reduction="sum").item()
        count += int((y != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1), count


EVAL_LOGITS = 1 << 26  # logits (float32: 256 MB) an evaluation batch may make at most


def logits_bound(model: nn.Module, split: Items | Stream) -> dict:
    """A smaller evaluation batch where the split's own would make more than EVAL_LOGITS logits (GPT-2's
    50,257-token vocabulary at 1,024 positions: 64 windows would take 13 GB); none otherwise."""
    rows = EVAL_LOGITS // max(1, split.block_size * getattr(model.config, "vocab_size", 1))
    return {"batch_size": max(1, rows)} if rows < 64 else {}


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> AdamW:
    """AdamW; matrices (embeddings, weights) decay, vectors (biases, norms) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=cfg.device in ("cpu", "cuda"),  # torch's fused kernel there
                 average=cfg.ema)


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
    on_improved: Callable[[TrainState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    rank: Rank = SINGLE,
    forward: nn.Module | None = None,
    watch=None,
) -> TrainState:
    """Train `model` in place from `state` (default: a fresh start) until `cfg`'s budget; return the state.

    `on_improved(state)` is called whenever the best val loss improves; `should_stop()` is asked
    after every step. `forward` is the module to train through (a compiled or DDP-wrapped `model`).
    `watch` (a `diagnostics.Diagnostics`) is told before and after each optimizer step.
    When it returns, `model` holds the weights of the best evaluation.
    """
    emit = on_event or (lambda event: None)
    assert cfg.lr is not None and cfg.batch_size is not None, "train takes a resolved TrainConfig (`resolve`)"
    model.to(cfg.device).train()
    net = forward if forward is not None else model
    state = state or TrainState()
    state.optimizer = state.optimizer or make_optimizer(model, cfg)
    if state.generator is None or (rank.rank > 0 and state.step > 0):  # a resumed run saved rank 0's stream only:
        state.generator = torch.Generator().manual_seed(cfg.seed + rank.rank + 7919 * state.step)  # the others start anew
    if state.torch_rng is not None:
        torch.set_rng_state(state.torch_rng)
    opt, gen = state.optimizer, state.generator
    packs = model.packs and cfg.pack
    tuner = Tuner.for_training(cfg.threads, cfg.deterministic, rank.world) if cfg.device == "cpu" else None
    start = time.perf_counter() - state.elapsed
    state.stopped = ""

    def progress_at(step: int, elapsed: float) -> float:
        return max(step / cfg.max_steps, elapsed / cfg.max_seconds if cfg.max_seconds else 0.0)

    while True:
        # one decision for all ranks: the furthest progress, and any rank's request to stop
        progress, interrupted = rank.agree(progress_at(state.step, time.perf_counter() - start),
                                           float(bool(should_stop and should_stop())))
        done = progress >= 1.0
        if done or ((state.step > 0 or cfg.eval_at_start) and state.step % cfg.eval_interval == 0 and not interrupted):
            evaluate_and_keep_best(model, train_data, val_data, cfg, state, time.perf_counter() - start, emit, on_improved)
            if cfg.early_stop and state.evals_since_best >= cfg.early_stop:
                state.stopped = "early-stop"
                break
        if done or interrupted:
            state.stopped = "budget" if done else "interrupted"
            break
        began = time.perf_counter()
        lr = learning_rate(cfg, state.step, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y, pos = train_data.batch(cfg.batch_size, gen, pack=packs)
        with onednn(model.onednn or cfg.dtype == "bfloat16"):  # bfloat16's CPU products are oneDNN's
            with mixed_precision(cfg):
                logits = net(x.to(cfg.device)) if pos is None else net(x.to(cfg.device), pos=pos.to(cfg.device))
                loss = training_loss(logits, y.to(cfg.device))
            opt.zero_grad()
            loss.backward()
        norm_tensor = opt.grad_norm()
        norm, loss_value = float(norm_tensor), loss.item()
        bad_loss, bad_norm = rank.agree(float(not math.isfinite(loss_value)), float(not math.isfinite(norm)))
        if bad_loss or bad_norm:
            raise Diverged(state.step + 1, "loss" if bad_loss else "gradient norm")
        if watch is not None:
            watch.before_update()
        opt.step(norm_tensor, cfg.grad_clip or math.inf)  # clipped to grad_clip within the update
        if watch is not None:
            watch.after_update(lr)
        state.step += 1
        elapsed = time.perf_counter() - start
        threads = torch.get_num_threads()
        if tuner:
            tuner.tick(time.perf_counter() - began)
        emit(Step(state.step, loss_value, lr, elapsed, min(progress_at(state.step, elapsed), 1.0), norm,
                  int((y != IGNORE).sum()) * rank.world, threads))
    state.elapsed = time.perf_counter() - start
    state.torch_rng = torch.get_rng_state()
    state.latest_weights = copy.deepcopy(model.state_dict())
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    model.eval()
    return state


def evaluate_and_keep_best(model, train_data, val_data, cfg: TrainConfig, state: TrainState, elapsed: float,
                           emit: Callable, on_improved: Callable | None) -> None:
    """Train and val loss now; a better val loss is kept (weights included) and reported. With --ema,
    all of it is done with the weights' moving average in the model."""
    with state.optimizer.averaged():
        train_loss, _ = evaluate(model, train_data, cfg.eval_items)
        val_loss, _ = evaluate(model, val_data, cfg.eval_items)
        improved = val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_step, state.evals_since_best = val_loss, state.step, 0
            state.best_weights = copy.deepcopy(model.state_dict())
        else:
            state.evals_since_best += 1
        if improved and on_improved:
            on_improved(state)  # saved before the event says so
        event = Eval(state.step, train_loss, val_loss, state.best_val_loss, improved, elapsed)
        state.history.append(event)
        emit(event)
