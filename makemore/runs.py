"""Runs: the library calls behind the CLI commands. From a data file to a saved, evaluated model.

`prepare` reads the data once, decides its mode (lines or text), splits and encodes it; `fit`
builds a model from the registry, trains it with the shared loop, saves the best weights as a
checkpoint and measures the test loss. `held_out` rebuilds the test split a checkpoint was
measured on, from its data record; `evaluate_file` measures a checkpoint on any file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore import checkpoint, data, memory, models
from makemore.errors import MakemoreError
from makemore.distributed import SINGLE, Rank
from makemore.train import Eval, Step, TrainConfig, TrainState, evaluate, loss_fn, make_optimizer, resolve, train
from tokenizer import CharTokenizer, TokenizerError
from tokenizer.bpe import EOT as BOUNDARY
from tokenizer import files as tokenizer_files
from tokenizer.files import finite
from tokenizer.files import shown

TEXT_BLOCK_SIZE = 128  # text mode's default context, in tokens
MAX_BLOCK_SIZE = 1 << 16  # a longer context is surely a typo


@dataclass
class Prepared:
    """A data set read, split and encoded, ready for any model type."""

    name: str  # file path as given, or builtin:names
    path: str  # the same file as an absolute path (or builtin:names): what a run stores
    sha256: str
    seed: int
    mode: str  # lines or text
    reason: str  # why this mode, in words
    splits: dict[str, data.Items | data.Stream]  # train / val / test
    sizes: dict[str, int]  # items (lines) or characters (text) per split
    tokenizer: object
    block_size: int

    def record(self) -> dict:
        """What a checkpoint stores about its data, enough to find and re-split it."""
        unit = "items" if self.mode == "lines" else "chars"
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "split_seed": self.seed, "mode": self.mode,
                unit: self.sizes, "normalization": "NFC"}

    def describe(self) -> str:
        s = self.sizes
        unit = "items" if self.mode == "lines" else "characters"
        return (f"{self.name}: {self.mode} mode ({self.reason}); {s['train']:,} train, {s['val']:,} val, {s['test']:,} test "
                f"{unit}; vocabulary {self.tokenizer.vocab_size}, block size {self.block_size}")


def choose_mode(mode: str, text: str) -> tuple[str, str]:
    if mode not in data.MODES:
        raise MakemoreError(f"--mode {shown(mode)}: choose one of {', '.join(data.MODES)}")
    if mode == "auto":
        return data.detect_mode(text)
    return mode, f"--mode {mode}"


def prepare(path: str | Path | None, seed: int = 1337, tokenizer_path: str | Path | None = None, mode: str = "auto",
            block_size: int | None = None, tok=None) -> Prepared:
    """Read `path` (None: the built-in names), pick its mode, split it by `seed`, encode every split
    once, with `tok` or the tokenizer at `tokenizer_path` (default: the file's characters)."""
    if block_size is not None and not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise MakemoreError(f"--block-size {block_size}: must be from 1 to {MAX_BLOCK_SIZE:,}")
    tok = load_tokenizer(tokenizer_path) if tokenizer_path else tok
    tokenizer_path = tokenizer_path or "the model's tokenizer"
    src = data.read_source(path)
    mode, reason = choose_mode(mode, src.text)
    if mode == "lines" and tok is not None and not has_boundary(tok):
        raise MakemoreError(f"{tokenizer_path}: the tokenizer has no {BOUNDARY} special token, which lines mode needs "
                            f"as the item boundary; train it with --special '{BOUNDARY}' (or use --mode text)")
    try:
        if mode == "lines":
            return _prepare_lines(src, seed, tok, reason, block_size)
        return _prepare_text(src, seed, tok, reason, block_size or TEXT_BLOCK_SIZE)
    except TokenizerError as e:
        raise MakemoreError(f"{src.name}: {e}") from None


def _prepare_lines(src: data.Source, seed: int, tok, reason: str, block_size: int | None) -> Prepared:
    items, numbers = data.lines_of(src.text)
    if len(items) < data.MIN_ITEMS:
        raise MakemoreError(f"{src.name}: only {len(items)} items; need at least {data.MIN_ITEMS} lines to train on")
    tok = tok or CharTokenizer.from_items(items)
    ids = data.encode_lines(tok, items, numbers, src.name)
    longest = max(range(len(ids)), key=lambda i: len(ids[i]))
    limit = block_size - 1 if block_size else data.MAX_ITEM_TOKENS
    if len(ids[longest]) > limit:
        because = f"longer than --block-size {block_size} allows" if block_size else "too long to be one item"
        raise MakemoreError(f"{src.name}: line {numbers[longest]} is {len(ids[longest]):,} tokens, {because} "
                            f"(at most {limit}); use --mode text for running text")
    block_size = block_size or len(ids[longest]) + 1  # the longest item + 1
    memory.require(3 * 8 * len(items) * (block_size + 1), f"{src.name} in lines mode",
                   "is it really one item per line? (--mode text)")
    encoded = dict(zip(items, ids))
    parts = data.split_items(items, seed)
    splits = {k: data.encode_items(v, tok, block_size, [encoded[s] for s in v]) for k, v in parts.items()}
    return Prepared(src.name, src.path, src.sha256, seed, "lines", reason, splits, {k: len(v) for k, v in parts.items()}, tok, block_size)


def _prepare_text(src: data.Source, seed: int, tok, reason: str, block_size: int) -> Prepared:
    tok = tok or CharTokenizer.from_items([src.text])
    data.check_text(tok, src.text, src.name)
    parts = data.split_text(src.text)
    splits = {k: data.encode_stream(v, tok, block_size) for k, v in parts.items()}
    n_train = len(splits["train"].tokens)
    if n_train <= block_size + 1:
        raise MakemoreError(f"{src.name}: {n_train} tokens of training text, not more than the block size ({block_size}); "
                            f"use a smaller --block-size or a longer file")
    if min(len(splits["val"].tokens), len(splits["test"].tokens)) < 2:
        raise MakemoreError(f"{src.name}: too short for text mode (val and test are 5% each); use a longer file")
    return Prepared(src.name, src.path, src.sha256, seed, "text", reason, splits, {k: len(v) for k, v in parts.items()}, tok, block_size)


def has_boundary(tok) -> bool:
    try:
        tok.eot_id  # noqa: B018
        return True
    except TokenizerError:
        return False


def load_tokenizer(path: str | Path):
    """A tokenizer file for makemore (lines mode also needs its <|endoftext|> token: checked in prepare)."""
    try:
        return tokenizer_files.load(path)
    except TokenizerError as e:
        raise MakemoreError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None


@dataclass
class Fitted:
    checkpoint: checkpoint.Checkpoint
    result: TrainState
    test_loss: float | None  # None when training was interrupted
    test_bits_per_char: float | None

    @property
    def interrupted(self) -> bool:
        return self.result.stopped == "interrupted"


def model_config(model_type: str, prep: Prepared, options: dict | None, batch_size: int | None):
    """The config of a new model for `prep`, its memory need checked before anything is allocated."""
    batch_size = batch_size or prep.splits["train"].default_batch_size
    config = models.make_config(model_type, prep.tokenizer.vocab_size, prep.block_size, prep.mode, **(options or {}))
    n = memory.count_params(lambda: models.build(model_type, config))
    need = memory.training_bytes(n, batch_size, prep.block_size, prep.tokenizer.vocab_size, config.width)
    memory.require(need, f"training this {model_type} ({n:,} parameters, batch {batch_size} x {prep.block_size} tokens)",
                   "use a smaller model (--set) or --batch-size")
    return config


class MetricsLog:
    """Appends one JSON line per evaluation, and per `every` steps, to a run's metrics.jsonl."""

    def __init__(self, path: Path, every: int, timings: bool = True):
        self.path, self.every, self.timings = path, max(1, every), timings  # no timings: the same seed, the same bytes
        self.tokens, self.since = 0, None

    def __call__(self, event: Step | Eval) -> None:
        if isinstance(event, Step):
            self.tokens += event.tokens
            if event.step % self.every:
                return
            speed = self.tokens / (event.elapsed - self.since) if self.since is not None else None  # none for the first row
            row = {"step": event.step, "train_loss": event.loss, "lr": event.lr, "grad_norm": event.grad_norm,
                   "tokens_per_s": speed, "wall": event.elapsed}
            self.tokens, self.since = 0, event.elapsed
        else:
            row = {"step": event.step, "eval_train_loss": event.train_loss, "val_loss": event.val_loss, "wall": event.elapsed}
        if not self.timings:
            row.update((k, None) for k in ("tokens_per_s", "wall") if k in row)
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(finite(row)) + "\n")
        except OSError as e:  # a full disk, say: name this file, not "file"
            raise OSError(e.errno, e.strerror, str(self.path)) from None


def check_unused(folder: Path, overwrite: bool) -> None:
    """A run folder a new training may start in: none holds a model there, or `overwrite` says to replace it."""
    if (folder / checkpoint.FILENAME).exists() and not overwrite:
        raise MakemoreError(f"{folder}: already holds a trained model; continue it (--resume {folder}), "
                            f"start afresh (--overwrite) or train into another --out")


def start_fresh(folder: Path, overwrite: bool) -> None:
    """A new training's first act in `folder`, under its lock: check it again (another training may
    have finished there meanwhile) and clear an earlier run's state and curves."""
    check_unused(folder, overwrite)
    for name in (checkpoint.LAST, "metrics.jsonl"):
        (folder / name).unlink(missing_ok=True)


def remove_stale_temp_files(folder: Path) -> None:
    """Temporary files a killed save left behind (`.model.safetensors.XXXX.tmp`)."""
    if folder.is_dir():
        for name in (checkpoint.FILENAME, checkpoint.LAST):
            for tmp in folder.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def compiled_forward(model, data, warn: Callable[[str], None]):
    """`torch.compile(model)`, tried on one small batch; on any failure a warning and None (eager)."""
    try:
        compiled = torch.compile(model)
        x, y, _ = data.batch(2, torch.Generator().manual_seed(0))
        loss_fn(compiled(x), y).backward()
        model.zero_grad(set_to_none=True)
        return compiled
    except Exception as e:  # noqa: BLE001 -- no compiler, unsupported platform: any failure means eager
        model.zero_grad(set_to_none=True)
        warn(f"--compile: torch.compile does not work here ({type(e).__name__}); training in eager mode")
        return None


def fit(
    model_type: str,
    prep: Prepared,
    cfg: TrainConfig,
    out: Path,
    config=None,
    on_event: Callable | None = None,
    *,
    model: torch.nn.Module | None = None,
    state: TrainState | None = None,
    origin: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    rank: Rank = SINGLE,
    compile: bool = False,
    warn: Callable[[str], None] = lambda message: None,
) -> Fitted:
    """Train `model_type` on `prep` and save the best checkpoint to `out` as training goes, and at
    the end `last.safetensors` (latest weights and training state) beside it.

    A fresh model comes from `config` (default: the type's defaults); `model` continues one (fine-tuning
    from `origin`, or resuming with `state`). Only rank 0 writes files."""
    cfg = resolve(cfg, models.lookup(model_type)[0], prep.splits["train"])
    if model is None:
        config = config or model_config(model_type, prep, None, cfg.batch_size)
        torch.manual_seed(cfg.seed)
        model = models.build(model_type, config)
    model.to(cfg.device)
    ckpt = checkpoint.Checkpoint(model_type=model_type, model=model, tokenizer=prep.tokenizer, training={})
    folder = out.parent
    if rank.main:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(folder)
    log = MetricsLog(folder / "metrics.jsonl", cfg.eval_interval // 10, timings=not cfg.deterministic) if rank.main else None

    def record(st: TrainState, **extra) -> dict:
        return {"step": st.step, "best_step": st.best_step, "best_val_loss": st.best_val_loss, "data": prep.record(),
                "options": dataclasses.asdict(cfg)} | ({"init_from": origin} if origin else {}) | extra

    def on_improved(st: TrainState) -> None:
        if rank.main:
            ckpt.training = record(st)
            checkpoint.save(ckpt, out)

    def events(event) -> None:
        if log:
            log(event)
        if on_event:
            on_event(event)

    net = compiled_forward(model, prep.splits["train"], warn) if compile else None
    if rank.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net if net is not None else model)
    result = train(model, prep.splits["train"], prep.splits["val"], cfg, state, events, on_improved, should_stop, rank, net)
    if rank.world > 1 and not rank.same(sum(float(p.detach().double().sum()) for p in model.parameters())):
        raise MakemoreError("the training processes ended with different parameters; the run is not saved")
    if rank.main:
        ckpt.training = record(result, stopped=result.stopped)
        checkpoint.save(ckpt, folder / checkpoint.LAST, result.latest_weights, checkpoint.state_entries(result, timings=not cfg.deterministic))
    if result.stopped == "interrupted":
        return Fitted(checkpoint=ckpt, result=result, test_loss=None, test_bits_per_char=None)
    test_loss, n_tokens = evaluate(model, prep.splits["test"])
    bpc = metrics(test_loss, n_tokens, prep.splits["test"].n_chars)["bits_per_char"]
    timing = {} if cfg.deterministic else {"seconds": round(result.elapsed, 2), "steps_per_second": round(result.steps_per_second, 2)}
    ckpt.training = record(result, test_loss=test_loss, test_bits_per_char=bpc, **timing)
    if rank.main:
        ckpt.path = checkpoint.save(ckpt, out)
    return Fitted(checkpoint=ckpt, result=result, test_loss=test_loss, test_bits_per_char=bpc)


def data_source(ckpt: checkpoint.Checkpoint) -> tuple[data.Source, dict]:
    """The unchanged data file a checkpoint was trained on, and its record; an error if gone or changed."""
    record = ckpt.training.get("data")
    if not record:
        raise MakemoreError(f"{ckpt.path}: the checkpoint has no record of its data; pass a FILE to evaluate on")
    src = data.read_source(record.get("path", record["name"]))
    if src.sha256 != record["sha256"]:
        raise MakemoreError(f"{src.name}: the file has changed since the model was trained on it; pass a FILE to evaluate on")
    return src, record


def ckpt_mode(ckpt: checkpoint.Checkpoint) -> str:
    return (ckpt.training.get("data") or {}).get("mode", "lines")


def held_out(ckpt: checkpoint.Checkpoint) -> tuple[data.Items | data.Stream, str]:
    """The test split `ckpt` was measured on, rebuilt from its data file, and the file's name."""
    src, record = data_source(ckpt)
    if ckpt_mode(ckpt) == "text":
        return encode_for(ckpt, data.split_text(src.text)["test"], src.name), src.name
    items = data.lines_of(src.text)[0]
    return encode_for(ckpt, data.split_items(items, record["split_seed"])["test"], src.name), src.name


def encode_for(ckpt: checkpoint.Checkpoint, content: list[str] | str, name: str, numbers: list[int] | None = None) -> data.Items | data.Stream:
    """Items (lines mode, with their line numbers) or text (text mode) encoded for `ckpt`'s model;
    what it cannot read is an error naming it and its line."""
    block_size = ckpt.model.config.block_size
    try:
        if isinstance(content, str):
            data.check_text(ckpt.tokenizer, content, name)
            return data.encode_stream(content, ckpt.tokenizer, block_size)
        numbers = numbers or list(range(1, len(content) + 1))
        ids = data.encode_lines(ckpt.tokenizer, content, numbers, name)
        too_long = [k for k, item in enumerate(ids) if len(item) + 1 > block_size]
        if too_long:
            raise MakemoreError(f"{name}: line {numbers[too_long[0]]}: item {shown(content[too_long[0]])} is longer than "
                                f"the model's context ({block_size - 1} tokens)")
        return data.encode_items(content, ckpt.tokenizer, block_size, ids)
    except TokenizerError as e:
        raise MakemoreError(f"{name}: {e}") from None


def metrics(loss: float, n_tokens: int, n_chars: int) -> dict:
    """Loss in nats per token, perplexity, and bits per character (the end of an item counts as one)."""
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_char": loss * n_tokens / (math.log(2) * max(n_chars, 1)),
        "tokens": n_tokens,
    }


def evaluate_file(ckpt: checkpoint.Checkpoint, path: str | None) -> dict:
    """Metrics of `ckpt` on FILE (all of it), or on its own test split when `path` is None."""
    if path is None:
        split, name = held_out(ckpt)
        which = "test split"
    else:
        src = data.read_source(path)
        name, which = src.name, "file"
        if ckpt_mode(ckpt) == "text":
            split = encode_for(ckpt, src.text, name)
        else:
            items, numbers = data.lines_of(src.text)
            split = encode_for(ckpt, items, name, numbers)
        if isinstance(split, data.Stream) and len(split.tokens) < 2:
            raise MakemoreError(f"{name}: a single token: nothing to predict")
    loss, n_tokens = evaluate(ckpt.model, split)
    size = {"items": len(split)} if isinstance(split, data.Items) else {"characters": split.n_chars}
    return {"data": name, "on": which, "mode": ckpt_mode(ckpt), **size} | metrics(loss, n_tokens, split.n_chars)


def training_items(ckpt: checkpoint.Checkpoint) -> set[str] | None:
    """The items `ckpt` was trained on (lines mode), if its data file is still there unchanged; else None."""
    try:
        src, record = data_source(ckpt)
    except MakemoreError:
        return None
    return set(data.split_items(data.lines_of(src.text)[0], record["split_seed"])["train"])


@dataclass
class Plan:
    """What `makemore train` is about to do: a fresh run, a resumed one, or a fine-tuning."""

    model_type: str
    prep: Prepared
    cfg: TrainConfig
    model: torch.nn.Module | None = None  # None: a fresh model from `config`
    config: object = None
    state: TrainState | None = None  # resuming
    origin: str | None = None  # fine-tuning from this checkpoint


def plan_resume(folder: Path, data_path, max_steps: int | None, max_seconds: float | None, device: str) -> Plan:
    """Continue the run in `folder` from its last state, with the same arguments (budgets may grow)."""
    last = folder / checkpoint.LAST
    if not last.is_file():
        raise MakemoreError(f"--resume {folder}: no {checkpoint.LAST} there: nothing to resume (train it without --resume)")
    ckpt = checkpoint.load(last)
    rec = ckpt.training
    if "options" not in rec or "data" not in rec:
        raise MakemoreError(f"{last}: damaged checkpoint metadata (no training options or data record)")
    stored = rec["data"].get("path", rec["data"]["name"])
    if data_path is not None and data.read_source(data_path).sha256 != rec["data"]["sha256"]:
        raise MakemoreError(f"--resume {folder}: {data_path} is not the data this run was trained on ({stored}); "
                            f"to train on other data, use --init-from")
    try:
        options = {"ema": 0.0} | dict(rec["options"], device=device)  # a run saved before --ema existed had none
        if max_steps is not None:
            options["max_steps"] = max_steps
        if max_seconds is not None:
            options["max_seconds"] = max_seconds
        cfg = TrainConfig(**options)
    except TypeError as e:
        raise MakemoreError(f"{last}: damaged training options ({e})") from None
    prep = prepare(stored, rec["data"]["split_seed"], mode=rec["data"].get("mode", "lines"),
                   block_size=ckpt.model.config.block_size, tok=ckpt.tokenizer)
    if prep.sha256 != rec["data"]["sha256"]:
        raise MakemoreError(f"{stored}: the file has changed since this run started; it cannot be resumed exactly")
    prep.name = rec["data"]["name"]  # as the run knew it (it was read from the recorded absolute path)
    best = folder / checkpoint.FILENAME
    best_ckpt = checkpoint.load(best) if best.is_file() else None
    cfg = resolve(cfg, type(ckpt.model), prep.splits["train"])
    state = checkpoint.load_state(last, ckpt.model, lambda m: make_optimizer(m, cfg),
                                  best_ckpt.model.state_dict() if best_ckpt else None)
    if max_steps is not None and max_steps <= state.step:
        raise MakemoreError(f"--max-steps {max_steps}: the run in {folder} is already at step {state.step}; give more steps")
    saved = (best_ckpt.training if best_ckpt else {}).get("best_val_loss")
    if saved is not None and saved < state.best_val_loss:  # a kill after a better save than the last state knew:
        state.best_val_loss, state.best_step = saved, best_ckpt.training.get("best_step", state.step)  # the file decides
    return Plan(ckpt.model_type, prep, cfg, model=ckpt.model, state=state, origin=rec.get("init_from"))


def plan_init_from(ckpt: checkpoint.Checkpoint, data_path, seed: int, mode: str, cfg: TrainConfig) -> Plan:
    """Fine-tune: the model, config and tokenizer of checkpoint `ckpt`, trained on new data."""
    prep = prepare(data_path, seed, mode=mode, block_size=ckpt.model.config.block_size, tok=ckpt.tokenizer)
    return Plan(ckpt.model_type, prep, cfg, model=ckpt.model, origin=str(Path(ckpt.path).resolve()))
