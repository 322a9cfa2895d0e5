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
from safetensors.torch import save as st_save
from torch import nn

import tokenizer as tokenizers
from tokenizer.files import write_atomic
from makemore import models
from makemore.errors import MakemoreError

FORMAT = "makemore"
FORMAT_VERSION = 1
FILENAME = "model.safetensors"
DEFAULT_DIR = Path("checkpoints")


@dataclass
class Checkpoint:
    model_type: str
    model: nn.Module
    tokenizer: object
    training: dict  # step, best val loss, data name and SHA-256, train options
    path: Path | None = None


def save(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write `ckpt` to `path` atomically; returns the path written."""
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
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt.model.state_dict().items()}
    write_atomic(path, st_save(tensors, metadata))
    return path


def read_header(data: bytes, name: str) -> dict:
    """The JSON header of a safetensors file (tensor table and `__metadata__`), checked for sanity."""
    if len(data) < 9 or data[8:9] != b"{":
        raise MakemoreError(f"{name}: not a safetensors checkpoint (no JSON header after the 8-byte length)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise MakemoreError(f"{name}: damaged checkpoint (header runs past the end of the file; truncated?)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MakemoreError(f"{name}: not a safetensors checkpoint (header is not JSON)") from None
    if not isinstance(header, dict):
        raise MakemoreError(f"{name}: not a safetensors checkpoint (header is not a JSON object)")
    return header


def load(path: str | Path, device: str = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save`; every problem is a MakemoreError naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise MakemoreError(f"{path}: no such checkpoint")
    data = path.read_bytes()
    meta = read_header(data, str(path)).get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise MakemoreError(f"{path}: not a makemore checkpoint (no '{FORMAT}' format entry)")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise MakemoreError(
            f"{path}: checkpoint format version {meta.get('format_version')!r}; this makemore reads version {FORMAT_VERSION}"
        )
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise MakemoreError(f"{path}: damaged checkpoint ({e})") from None
    try:
        model_type = meta["model_type"]
        tok = tokenizers.from_dict(json.loads(meta["tokenizer"]))
        _, config_cls = models.lookup(model_type)
        config = config_cls(**json.loads(meta["model_config"]))
        training = json.loads(meta["training"])
        model = models.build(model_type, config)
        model.load_state_dict(tensors)
    except (KeyError, TypeError, json.JSONDecodeError, RuntimeError, tokenizers.TokenizerError) as e:
        raise MakemoreError(f"{path}: damaged checkpoint metadata ({type(e).__name__}: {e})") from None
    model.to(device).eval()
    return Checkpoint(model_type=model_type, model=model, tokenizer=tok, training=training, path=path)


def latest(root: str | Path = DEFAULT_DIR) -> Path:
    """The most recently written checkpoint under `root`."""
    found = sorted(Path(root).glob(f"*/{FILENAME}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise MakemoreError(f"no checkpoint in {root}/; train one first (makemore train) or name one with --checkpoint")
    return found[-1]
