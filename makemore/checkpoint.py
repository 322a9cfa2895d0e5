"""Checkpoints: one `model.safetensors` per run, tensors plus a JSON metadata entry.

The metadata carries everything needed to rebuild the model and use it: the format name and
version, the model type and its config, the tokenizer's description and the training state.
Safetensors holds only tensors and strings, so loading a checkpoint cannot run code (no pickle).
Files are written atomically: a temporary file in the same folder, fsync, then `os.replace`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import nn

import tokenizer as tokenizers
from tokenizer.files import read_input, write_atomic
from makemore import memory, models
from makemore.errors import MakemoreError

FORMAT = "makemore"
FORMAT_VERSION = 1
FILENAME = "model.safetensors"  # the best weights by val loss: what sample, eval and info read
LAST = "last.safetensors"  # the latest weights plus the training state: what --resume reads
STATE = "trainstate."  # prefix of the training state's tensors in LAST (ignored when loading a model)
DEFAULT_DIR = Path("checkpoints")


@dataclass
class Checkpoint:
    model_type: str
    model: nn.Module
    tokenizer: object
    training: dict  # step, best val loss, data name and SHA-256, train options
    path: Path | None = None


def save(ckpt: Checkpoint, path: str | Path, weights: dict | None = None, state: tuple[dict, dict] | None = None) -> Path:
    """Write `ckpt` to `path` atomically (its model's weights, or `weights`; and with `state`, the
    training state's tensors and JSON from `state_entries`); returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_type": ckpt.model_type,
        "model_config": json.dumps(dataclasses.asdict(ckpt.model.config)),
        "tokenizer": json.dumps(ckpt.tokenizer.to_dict()),
        "training": json.dumps(ckpt.training),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in (weights or ckpt.model.state_dict()).items()}
    if state is not None:
        tensors |= state[0]
        metadata["train_state"] = json.dumps(state[1])
    write_atomic(path, serialize(tensors, metadata))
    return path


DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
          torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors file of `tensors` and `metadata`, written here rather than by safetensors'
    `save` so that the same inputs always give the same bytes (it orders the metadata at random):
    an 8-byte little-endian header length, the JSON header (names in sorted order, padded with
    spaces to a multiple of 8), then each tensor's bytes in that order."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def state_entries(state, timings: bool = True) -> tuple[dict, dict]:
    """A `TrainState` as tensors (optimizer moments, RNG states) and JSON (counters, param groups).
    Without `timings` the elapsed time is stored as 0 (--deterministic: byte-identical files; a
    resumed --max-seconds budget then starts again)."""
    opt = state.optimizer.state_dict()
    tensors = {f"{STATE}rng.batch": state.generator.get_state(), f"{STATE}rng.torch": state.torch_rng}
    for i, entry in opt["state"].items():
        for key, value in entry.items():
            tensors[f"{STATE}opt.{i}.{key}"] = value.detach().cpu().contiguous()
    info = {"step": state.step, "best_val_loss": state.best_val_loss, "best_step": state.best_step,
            "elapsed": state.elapsed if timings else 0.0, "evals_since_best": state.evals_since_best,
            "param_groups": opt["param_groups"]}
    return tensors, info


def load_state(path: str | Path, model: nn.Module, make_optimizer, best_weights: dict):
    """The training state saved in `path` (a LAST file) for `model`, whose weights it also loads."""
    from makemore.train import TrainState

    path = Path(path)
    data = read_input(path, "checkpoint", limit=1 << 34)
    meta = read_header(data, str(path)).get("__metadata__") or {}
    try:
        tensors = st_load(data)
        check_finite(tensors)
        info = json.loads(meta["train_state"])
        model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(STATE)})
        opt = make_optimizer(model)
        entries: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith(f"{STATE}opt."):
                i, name = key[len(STATE) + 4 :].split(".", 1)
                entries.setdefault(int(i), {})[name] = value
        groups = [g | {"betas": tuple(g["betas"])} for g in info["param_groups"]]
        opt.load_state_dict({"state": entries, "param_groups": groups})
        gen = torch.Generator()
        gen.set_state(tensors[f"{STATE}rng.batch"])
        state = TrainState(step=info["step"], best_val_loss=info["best_val_loss"], best_step=info["best_step"],
                           elapsed=info["elapsed"], evals_since_best=info["evals_since_best"], optimizer=opt,
                           generator=gen, torch_rng=tensors[f"{STATE}rng.torch"], best_weights=best_weights)
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError, json.JSONDecodeError) as e:
        raise MakemoreError(f"{path}: damaged training state ({type(e).__name__}: {e}); start again with --overwrite") from None
    return state


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


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Every number a real one: training never saves NaN or infinite weights, so such a file is damaged
    (and sampling from it would fail deep inside torch)."""
    for name, t in tensors.items():
        _expect(not t.is_floating_point() or bool(torch.isfinite(t).all()), f"tensor {name} holds NaN or infinite numbers")


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def check_training(t) -> dict:
    """The `training` entry's shape: what the commands read from it must be there and of its type."""
    _expect(isinstance(t, dict), "training is not an object")
    for key in ("step", "best_step"):
        _expect(key not in t or (type(t[key]) is int and t[key] >= 0), f"training.{key} is not a step number")
    for key in ("best_val_loss", "test_loss"):
        _expect(key not in t or t[key] is None or isinstance(t[key], (int, float)), f"training.{key} is not a number")
    _expect(isinstance(t.get("options", {}), dict), "training.options is not an object")
    if "data" in t:
        d = t["data"]
        _expect(isinstance(d, dict), "training.data is not an object")
        for key in ("name", "sha256"):
            _expect(isinstance(d.get(key), str), f"training.data.{key} is missing or not a string")
        _expect(isinstance(d.get("path", ""), str), "training.data.path is not a string")
        _expect(type(d.get("split_seed")) is int, "training.data.split_seed is missing or not an integer")
        _expect(d.get("mode", "lines") in ("lines", "text"), "training.data.mode is neither lines nor text")
    return t


def load(path: str | Path, device: str = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save`; every problem is a MakemoreError naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise MakemoreError(f"{path}: no such checkpoint")
    try:
        data = read_input(path, "checkpoint", limit=1 << 34)
    except tokenizers.TokenizerError as e:
        raise MakemoreError(str(e)) from None
    meta = read_header(data, str(path)).get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise MakemoreError(f"{path}: damaged checkpoint (__metadata__ is not an object)")
    if meta.get("format") != FORMAT:
        raise MakemoreError(f"{path}: not a makemore checkpoint (no '{FORMAT}' format entry)")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise MakemoreError(
            f"{path}: checkpoint format version {meta.get('format_version')!r}; this makemore reads version {FORMAT_VERSION}"
        )
    try:
        tensors = st_load(data)
        check_finite(tensors)
    except (SafetensorError, ValueError, RuntimeError) as e:
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
        training = check_training(entries["training"])
        n = memory.count_params(lambda: models.build(model_type, config))
        memory.require(4 * n, f"its {model_type} of {n:,} parameters", "is the checkpoint damaged?")
        model = models.build(model_type, config)
        model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(STATE)})
    except MakemoreError as e:
        raise MakemoreError(f"{path}: damaged checkpoint metadata ({e})") from None
    except (KeyError, TypeError, ValueError, RuntimeError, RecursionError, tokenizers.TokenizerError) as e:
        raise MakemoreError(f"{path}: damaged checkpoint metadata ({type(e).__name__}: {e})") from None
    model.to(device).eval()
    return Checkpoint(model_type=model_type, model=model, tokenizer=tok, training=training, path=path)


def latest(root: str | Path = DEFAULT_DIR) -> Path:
    """The most recently written checkpoint anywhere under `root` (runs of `compare` lie one level deeper)."""
    found = sorted(Path(root).rglob(FILENAME), key=lambda p: p.stat().st_mtime)  # never LAST: the best model is sampled
    if not found:
        raise MakemoreError(f"no checkpoint in {root}/; train one first (makemore train) or name one with --checkpoint")
    return found[-1]
