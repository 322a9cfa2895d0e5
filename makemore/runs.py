"""Runs: the library calls behind the CLI commands. From a data file to a saved, evaluated model.

`prepare` reads, splits and encodes the data once; `fit` builds a model from the registry, trains
it with the shared loop, saves the best weights as a checkpoint and measures the test loss.
`test_split` rebuilds the test split a checkpoint was measured on, from its data record.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore import checkpoint, data, models
from makemore.errors import MakemoreError
from makemore.train import TrainConfig, TrainResult, evaluate, train
from tokenizer import CharTokenizer, TokenizerError
from tokenizer import files as tokenizer_files


@dataclass
class Prepared:
    """A data set read, split and encoded, ready for any model type."""

    name: str  # file path, or builtin:names
    sha256: str
    seed: int
    items: dict[str, list[str]]  # train / val / test
    splits: dict[str, data.Split]
    tokenizer: object

    @property
    def block_size(self) -> int:
        return self.splits["train"].x.shape[1]

    def record(self) -> dict:
        """What a checkpoint stores about its data, enough to find and re-split it."""
        counts = {k: len(v) for k, v in self.items.items()}
        where = self.name if self.name == data.BUILTIN else str(Path(self.name).resolve())
        return {"name": self.name, "path": where, "sha256": self.sha256, "split_seed": self.seed, "items": counts,
                "normalization": "NFC"}


def prepare(path: str | Path | None, seed: int = 1337, tok=None) -> Prepared:
    """Read `path` (None: the built-in names), split it by `seed`, encode every split once."""
    items, name, sha = data.read_items(path)
    if tok is None:
        tok = CharTokenizer.from_items(items)
    parts = data.split_items(items, seed)
    try:
        ids = {k: [tok.encode(s) for s in v] for k, v in parts.items()}
        block_size = max(len(item) for v in ids.values() for item in v) + 1  # the longest item + 1
        splits = {k: data.encode_items(v, tok, block_size, ids[k]) for k, v in parts.items()}
    except TokenizerError as e:
        raise MakemoreError(f"{name}: {e}") from None
    return Prepared(name=name, sha256=sha, seed=seed, items=parts, splits=splits, tokenizer=tok)


def load_tokenizer(path: str | Path):
    """A tokenizer file for makemore: it must have a boundary (<|endoftext|>) token."""
    try:
        tok = tokenizer_files.load(path)
        tok.eot_id  # noqa: B018 -- raises, naming the missing token
    except TokenizerError as e:
        raise MakemoreError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    return tok


@dataclass
class Fitted:
    checkpoint: checkpoint.Checkpoint
    result: TrainResult
    test_loss: float


def fit(
    model_type: str,
    prep: Prepared,
    cfg: TrainConfig,
    out: Path,
    model_options: dict | None = None,
    on_event: Callable | None = None,
) -> Fitted:
    """Train a new `model_type` on `prep`, saving the best checkpoint to `out` as training goes."""
    config = models.make_config(model_type, prep.tokenizer.vocab_size, prep.block_size, **(model_options or {}))
    if cfg.lr is None:
        cfg = dataclasses.replace(cfg, lr=models.lookup(model_type)[0].default_lr)
    torch.manual_seed(cfg.seed)
    model = models.build(model_type, config)
    ckpt = checkpoint.Checkpoint(model_type=model_type, model=model, tokenizer=prep.tokenizer, training={})

    def state(step: int, best_val: float, best_step: int) -> dict:
        return {
            "step": step,
            "best_step": best_step,
            "best_val_loss": best_val,
            "data": prep.record(),
            "options": dataclasses.asdict(cfg),
        }

    def on_improved(step: int, val_loss: float) -> None:
        ckpt.training = state(step, val_loss, step)
        checkpoint.save(ckpt, out)

    result = train(model, prep.splits["train"], prep.splits["val"], cfg, on_event, on_improved)
    test_loss, _ = evaluate(model, prep.splits["test"])
    ckpt.training = state(result.steps, result.best_val_loss, result.best_step) | {
        "test_loss": test_loss,
        "seconds": round(result.elapsed, 2),
        "steps_per_second": round(result.steps_per_second, 2),
    }
    ckpt.path = checkpoint.save(ckpt, out)
    return Fitted(checkpoint=ckpt, result=result, test_loss=test_loss)


def test_split(ckpt: checkpoint.Checkpoint) -> tuple[data.Split, str]:
    """The test split `ckpt` was measured on, rebuilt from its data file, and the file's name."""
    record = ckpt.training.get("data")
    if not record:
        raise MakemoreError(f"{ckpt.path}: the checkpoint has no record of its data; pass a FILE to evaluate on")
    items, name, sha = data.read_items(record.get("path", record["name"]))
    if sha != record.get("sha256"):
        raise MakemoreError(f"{name}: the file has changed since the model was trained on it; pass a FILE to evaluate on")
    test = data.split_items(items, record["split_seed"])["test"]
    return encode_for(ckpt, test, name), name


def encode_for(ckpt: checkpoint.Checkpoint, items: list[str], name: str) -> data.Split:
    """`items` encoded for `ckpt`'s model; an item the model cannot read is an error naming it."""
    block_size = ckpt.model.config.block_size
    try:
        ids = [ckpt.tokenizer.encode(s) for s in items]
        too_long = [s for s, item in zip(items, ids) if len(item) + 1 > block_size]
        if too_long:
            raise MakemoreError(
                f"{name}: item {too_long[0]!r} is longer than the model's context ({block_size - 1} tokens)"
            )
        return data.encode_items(items, ckpt.tokenizer, block_size, ids)
    except TokenizerError as e:
        raise MakemoreError(f"{name}: {e}") from None


def metrics(loss: float, n_tokens: int, n_chars: int) -> dict:
    """Loss in nats per token, perplexity, and bits per character (the end of an item counts as one)."""
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_char": loss * n_tokens / (math.log(2) * n_chars),
        "tokens": n_tokens,
    }


def evaluate_file(ckpt: checkpoint.Checkpoint, path: str | None) -> dict:
    """Metrics of `ckpt` on FILE (all of it), or on its own test split when `path` is None."""
    if path is None:
        split, name = test_split(ckpt)
        which = "test split"
    else:
        items, name, _ = data.read_items(path)
        split = encode_for(ckpt, items, name)
        which = "file"
    loss, n_tokens = evaluate(ckpt.model, split)
    return {"data": name, "on": which, "items": len(split)} | metrics(loss, n_tokens, split.n_chars)


def training_items(ckpt: checkpoint.Checkpoint) -> set[str] | None:
    """The items `ckpt` was trained on, if its data file is still there unchanged; else None."""
    record = ckpt.training.get("data")
    if not record:
        return None
    try:
        items, _, sha = data.read_items(record.get("path", record["name"]))
    except MakemoreError:
        return None
    if sha != record.get("sha256"):
        return None
    return set(data.split_items(items, record["split_seed"])["train"])
