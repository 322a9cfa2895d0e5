"""Checkpoints: one `model.safetensors` per run, tensors plus a JSON metadata entry.

The metadata carries everything needed to rebuild the model and use it: the format name and
version, the model type and its config, the tokenizer's description and the training state.
Safetensors holds only tensors and strings, so loading a checkpoint cannot run code (no pickle).
Files are written atomically: a temporary file in the same folder, fsync, then `os.replace`.
A model is loaded tensor by tensor into a model allocated once (`tensorfile`), and saved from its
tensors in place, so a 124M GPT-2 takes its own size in memory, not three times it; a tied tensor
(the head that is the embedding) is stored once, under its first name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path

import torch

import tokenizer as tokenizers
from makemore import data, memory, models, tensorfile
from makemore.errors import MakemoreError
from makemore.models.base import LanguageModel
from safeio.files import check_readable, write_atomic
from tokenizer import Tokenizer

FORMAT = "makemore"
FORMAT_VERSION = 1
FILENAME = "model.safetensors"  # the best weights by val loss: what sample, eval and info read
LAST = "last.safetensors"  # the latest weights plus the training state: what --resume reads
STATE = "trainstate."  # prefix of the training state's tensors in LAST (ignored when loading a model)
DEFAULT_DIR = Path("checkpoints")


@dataclass
class TrainingRecord:
    """The `training` entry of a checkpoint: where the model stands and how it got there. Typed and
    validated here (`from_json`), with the one migration of older records: runs saved before the
    weights' moving average existed trained without one, and before text mode, on lines."""

    step: int = 0  # optimisation steps done
    best_step: int | None = None  # the step of the best evaluation
    best_val_loss: float | None = None  # None: no evaluation yet (or not finite)
    data: dict | None = None  # the data kind's record (`data.Dataset.record`): name, path, sha256, split_seed, mode, sizes
    options: dict = field(default_factory=dict)  # the resolved `TrainConfig`
    init_from: str | None = None  # fine-tuned from this checkpoint (absolute path)
    origin: dict | None = None  # an imported model's source (`hf.import_folder`): format, path, name, sha256 of the weights
    stopped: str | None = None  # why the last training ended (last.safetensors)
    test_loss: float | None = None  # after the final evaluation
    test_bits_per_char: float | None = None
    seconds: float | None = None  # timings: absent for --deterministic runs
    steps_per_second: float | None = None

    @property
    def kind(self):
        """The data kind the model was trained on: its data record's, or for an imported model with no
        data yet, the one its origin names (running text for GPT-2)."""
        if self.data is None and self.origin:
            return data.lookup(self.origin.get("mode", "text"))
        return data.kind_of(self.data)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if v is not None or k in ("best_val_loss", "best_step")}

    @classmethod
    def from_json(cls, t) -> TrainingRecord:
        _expect(isinstance(t, dict), "training is not an object")
        for key in ("step", "best_step"):
            _expect(t.get(key) is None or (type(t[key]) is int and t[key] >= 0), f"training.{key} is not a step number")
        for key in ("best_val_loss", "test_loss", "test_bits_per_char", "seconds", "steps_per_second"):
            _expect(t.get(key) is None or isinstance(t[key], (int, float)), f"training.{key} is not a number")
        _expect(isinstance(t.get("options", {}), dict), "training.options is not an object")
        d = t.get("data")
        if d is not None:
            _expect(isinstance(d, dict), "training.data is not an object")
            for key in ("name", "sha256"):
                _expect(isinstance(d.get(key), str), f"training.data.{key} is missing or not a string")
            _expect(isinstance(d.get("path", ""), str), "training.data.path is not a string")
            _expect(type(d.get("split_seed")) is int, "training.data.split_seed is missing or not an integer")
            _expect(d.get("mode", data.FIRST_KIND) in data.KINDS, f"training.data.mode is none of {', '.join(data.KINDS)}")
            d = {"mode": data.FIRST_KIND} | d  # a record from before there were kinds
        options = t.get("options", {})
        if options and "ema" not in options:
            options = options | {"ema": 0.0}  # saved before the weights' average existed: trained without one
        best = t.get("best_val_loss")
        _expect(isinstance(t.get("origin", {}), dict), "training.origin is not an object")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in t.items() if k in known} | {
            "data": d, "options": options, "best_val_loss": best if best is None or math.isfinite(best) else None})


@dataclass
class Checkpoint:
    model_type: str
    model: LanguageModel
    tokenizer: Tokenizer
    training: TrainingRecord
    path: Path | None = None


def save(ckpt: Checkpoint, path: str | Path, weights: dict | None = None, state: tuple[dict, dict] | None = None) -> Path:
    """Write `ckpt` to `path` atomically (its model's weights, or `weights`; and with `state`, the
    training state's tensors and JSON, `TrainState.state_dict()`); returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_type": ckpt.model_type,
        "model_config": json.dumps(dataclasses.asdict(ckpt.model.config)),
        "tokenizer": json.dumps(ckpt.tokenizer.to_dict()),
        "training": json.dumps(ckpt.training.to_json()),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in untied(weights or ckpt.model.state_dict()).items()}
    if state is not None:
        tensors |= {STATE + k: v.detach().cpu().contiguous() for k, v in state[0].items()}
        metadata["train_state"] = json.dumps(state[1])
    write_atomic(path, serialize_chunks(tensors, metadata))
    return path


def untied(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`weights` with each tensor under its first name only (a tied head is the embedding: stored once)."""
    seen, kept = set(), {}
    for name, t in weights.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else (name,)
        if key not in seen:
            seen.add(key)
            kept[name] = t
    return kept


DTYPES = tensorfile.DTYPES


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """`serialize_chunks` joined into one bytes object."""
    return b"".join(serialize_chunks(tensors, metadata))


def serialize_chunks(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Iterator[bytes | memoryview]:
    """The safetensors file of `tensors` and `metadata`, written here rather than by safetensors'
    `save` so that the same inputs always give the same bytes (it orders the metadata at random:
    30 different files in 30 calls, bench/handwritten.py; tests/test_handwritten.py reads ours back):
    an 8-byte little-endian header length, the JSON header (names in sorted order, padded with
    spaces to a multiple of 8), then each tensor's bytes in that order, as views of the tensors
    themselves (no copy: `write_atomic` writes them one after another)."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    views, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        raw = memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        views.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    yield len(text).to_bytes(8, "little") + text
    yield from views


def read_state(path: str | Path) -> tuple[dict, dict]:
    """The training state saved in `path` (a LAST file): its tensors (the prefix taken off), read one by
    one, each checked finite, and its JSON. The model's weights beside them are `load`'s to read: a
    GPT-2's LAST file is 1.5 GB, and reading it whole, then building tensors from it, held it twice."""
    path, head, header, meta = opened(path)
    try:
        table = tensorfile.entries(header, len(head), path.stat().st_size)
        info = json.loads(meta["train_state"])
        tensors = {}
        with open(path, "rb") as f:
            for name, entry in table.items():
                if name.startswith(STATE):
                    tensors[name[len(STATE) :]] = tensorfile.read_checked(f, name, entry)
    except (OSError, KeyError, TypeError, ValueError, RecursionError) as e:
        raise MakemoreError(f"{path}: damaged training state ({type(e).__name__}: {e}); start again with `overwrite`") from None
    return tensors, info


def read_header(data: bytes, name: str) -> dict:
    """The JSON header of a safetensors file (tensor table and `__metadata__`), checked for sanity."""
    if len(data) < 9 or data[8:9] != b"{":
        raise MakemoreError(f"{name}: not a safetensors checkpoint (no JSON header after the 8-byte length)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise MakemoreError(f"{name}: damaged checkpoint (header runs past the end of the file; truncated?)")
    header = parse_json(data[8 : 8 + n], name, "header")
    if not isinstance(header, dict):
        raise MakemoreError(f"{name}: not a safetensors checkpoint (header is not a JSON object)")
    return header


def parse_json(raw: bytes | str, name: str, what: str):
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MakemoreError(f"{name}: damaged checkpoint ({what} is not JSON)") from None
    except RecursionError:
        raise MakemoreError(f"{name}: damaged checkpoint ({what} is JSON nested too deeply)") from None


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def opened(path: str | Path) -> tuple[Path, bytes, dict, dict]:
    """The checkpoint file at `path` (a run folder: its model), the bytes of its header, the header and
    its metadata, checked to be a makemore checkpoint this version reads (the tensors are not read)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise MakemoreError(f"{path}: no such checkpoint")
    try:
        check_readable(path, "checkpoint")
        with open(path, "rb") as f:
            head = tensorfile.read_head(f)
    except tokenizers.TokenizerError as e:
        raise MakemoreError(str(e)) from None
    header = read_header(head, str(path))
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise MakemoreError(f"{path}: damaged checkpoint (__metadata__ is not an object)")
    if meta.get("format") != FORMAT:
        raise MakemoreError(f"{path}: not a makemore checkpoint (no '{FORMAT}' format entry)")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise MakemoreError(
            f"{path}: checkpoint format version {meta.get('format_version')!r}; this makemore reads version {FORMAT_VERSION}"
        )
    return path, head, header, meta


def training_of(path: str | Path) -> TrainingRecord:
    """The training record of the checkpoint at `path`, read from its header alone."""
    path, _, _, meta = opened(path)
    try:
        return TrainingRecord.from_json(parse_json(meta.get("training", "null"), str(path), "training"))
    except (TypeError, ValueError) as e:
        raise MakemoreError(f"{path}: damaged checkpoint metadata ({type(e).__name__}: {e})") from None


def tokenizer_of(path: str | Path) -> Tokenizer:
    """The tokenizer of the checkpoint at `path`, read from its header alone."""
    path, _, _, meta = opened(path)
    try:
        return tokenizers.from_dict(parse_json(meta.get("tokenizer", "null"), str(path), "tokenizer"))
    except (TypeError, ValueError, tokenizers.TokenizerError) as e:
        raise MakemoreError(f"{path}: damaged checkpoint metadata ({type(e).__name__}: {e})") from None


def load(path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None) -> Checkpoint:
    """Read a checkpoint written by `save` (its weights in `dtype`, default as stored: float32); every
    problem is a MakemoreError naming the file."""
    path, head, header, meta = opened(path)
    try:
        table = tensorfile.entries(header, len(head), path.stat().st_size)
    except ValueError as e:
        raise MakemoreError(f"{path}: damaged checkpoint ({e})") from None
    entries = {k: parse_json(meta[k], str(path), k) for k in ("tokenizer", "model_config", "training") if isinstance(meta.get(k), str)}
    try:
        model_type = meta["model_type"]
        _expect(isinstance(model_type, str), "model_type is not a string")
        _expect(isinstance(entries["model_config"], dict), "model_config is not an object")
        tok = tokenizers.from_dict(entries["tokenizer"])
        _, config_cls = models.lookup(model_type)
        config = config_cls(**entries["model_config"])
        if tok.vocab_size != config.vocab_size:
            raise ValueError(f"its tokenizer has {tok.vocab_size} tokens but its model {config.vocab_size}")
        training = TrainingRecord.from_json(entries["training"])
        n = memory.count_params(lambda: models.build(model_type, config))
        memory.require((dtype or torch.float32).itemsize * n, f"its {model_type} of {n:,} parameters", "is the checkpoint damaged?")
    except MakemoreError as e:
        raise MakemoreError(f"{path}: damaged checkpoint metadata ({e})") from None
    except (KeyError, TypeError, ValueError, RuntimeError, RecursionError, tokenizers.TokenizerError) as e:
        raise MakemoreError(f"{path}: damaged checkpoint metadata ({type(e).__name__}: {e})") from None
    model = allocate(lambda: models.build(model_type, config), dtype)
    try:
        with open(path, "rb") as f:
            fill(model, f, {k: e for k, e in table.items() if not k.startswith(STATE)})
    except ValueError as e:
        raise MakemoreError(f"{path}: damaged checkpoint ({e})") from None
    model.to(device).eval()
    return Checkpoint(model_type=model_type, model=model, tokenizer=tok, training=training, path=path)


def allocate(build, dtype: torch.dtype | None = None) -> LanguageModel:
    """The model `build()` makes, its memory allocated (in `dtype`) but not initialised: for weights read from a file."""
    model = memory.on_meta(build)
    first: dict[int, str] = {}
    ties = [(name, first.setdefault(id(p), name)) for name, p in model.named_parameters(remove_duplicate=False)]
    if dtype is not None:
        model.to(dtype)
    model.to_empty(device="cpu")  # gives each name its own tensor: the tied ones are tied again
    for name, source in ties:
        if name != source:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, model.get_parameter(source))
    return model


@torch.no_grad()
def fill(model: torch.nn.Module, f, table: dict[str, tensorfile.Entry]) -> None:
    """Every weight of `model` from the tensors of the open file `f` named as in its state dict (a tied
    weight from whichever of its names the file has); each checked finite. A ValueError names the
    tensor that is missing, unexpected, of another shape, or damaged."""
    names: dict[int, list[str]] = {}  # one entry per tensor, all its names
    weights = model.state_dict(keep_vars=True)
    for name, t in weights.items():
        names.setdefault(id(t), []).append(name)
    unexpected = set(table) - set(weights)
    if unexpected:
        raise ValueError(f"unexpected tensor {sorted(unexpected)[0]}")
    for group in names.values():
        found = [k for k in group if k in table]
        if not found:
            raise ValueError(f"tensor {group[0]} is missing")
        tensorfile.read_checked(f, found[0], table[found[0]], weights[group[0]].data)


def latest(root: str | Path = DEFAULT_DIR) -> Path:
    """The most recently written checkpoint anywhere under `root` (runs of `compare` lie one level deeper)."""
    found = sorted(Path(root).rglob(FILENAME), key=lambda p: p.stat().st_mtime)  # never LAST: the best model is sampled
    if not found:
        raise MakemoreError(f"no checkpoint in {root}/; train one first (makemore train) or name one with `checkpoint`")
    return found[-1]
