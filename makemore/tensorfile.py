"""Safetensors files tensor by tensor: read each tensor straight into the tensor that keeps it, write
each from the tensor itself, so a model of N bytes is loaded, imported or saved in about N bytes of
memory, not the two or three copies that reading the whole file (then building and filling a model)
costs. The layout: an 8-byte little-endian header length, a JSON header (`__metadata__` and, per
tensor, dtype, shape and byte offsets into the data that follows), then the tensors' bytes.

Every entry of the header is checked (a known dtype, a shape, offsets that fit the shape and the
file) before any tensor is read; a problem is a ValueError saying which tensor, for the caller to name
its file. Writing is `checkpoint.serialize`'s job; this module only streams the bytes it lays out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
          torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
BY_NAME = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class Entry:
    """Where one tensor's bytes lie in its file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    end: int


def entries(header: dict, data_start: int, size: int) -> dict[str, Entry]:
    """The tensor table of a parsed header, every entry checked against the file's `size`."""
    table = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict) or e.get("dtype") not in BY_NAME:
            raise ValueError(f"tensor {name}: unknown or missing dtype")
        shape, offsets = e.get("shape"), e.get("data_offsets")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"tensor {name}: the shape is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise ValueError(f"tensor {name}: the byte offsets are not two ascending numbers")
        dtype = BY_NAME[e["dtype"]]
        if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"tensor {name}: {offsets[1] - offsets[0]} bytes for a {e['dtype']} tensor of shape {shape}")
        if data_start + offsets[1] > size:
            raise ValueError(f"tensor {name} runs past the end of the file (truncated?)")
        table[name] = Entry(dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])
    return table


def read_head(f: BinaryIO) -> bytes:
    """The length field and the JSON header, as far as the file has them (the caller checks the rest)."""
    first = f.read(8)
    if len(first) < 8:
        return first
    n = int.from_bytes(first, "little")
    return first + f.read(min(n, 1 << 30))


def read_into(f: BinaryIO, entry: Entry, out: torch.Tensor) -> None:
    """The tensor at `entry` into `out` (a CPU tensor of its shape): read straight into `out`'s memory
    when it is contiguous and of the file's dtype, else a few rows at a time through a buffer of at
    most CHUNK bytes (another dtype; a transposed view, as import reads a Conv1D weight into), so no
    second copy of a large tensor is ever made."""
    if tuple(out.shape) != entry.shape:
        raise ValueError(f"shape {list(entry.shape)} in the file, {list(out.shape)} in the model")
    f.seek(entry.start)
    if out.dtype == entry.dtype and out.is_contiguous():
        _read_exactly(f, out)
        return
    rows = out if out.dim() >= 2 else out.unsqueeze(0)  # cut along the first dimension (a view, never a copy)
    per_row = math.prod(rows.shape[1:]) * entry.dtype.itemsize
    step = max(1, CHUNK // max(per_row, 1))
    buffer = torch.empty((min(step, rows.shape[0]), *rows.shape[1:]), dtype=entry.dtype)
    for start in range(0, rows.shape[0], step):
        part = buffer[: min(step, rows.shape[0] - start)]
        _read_exactly(f, part)
        rows[start : start + len(part)].copy_(part)


CHUNK = 1 << 20  # bytes read at a time into a tensor that cannot take the file's bytes as they are: a transposing copy of 1 MB runs 2x faster than of 8 (cache)


def _read_exactly(f: BinaryIO, t: torch.Tensor) -> None:
    """`t`'s bytes (a contiguous tensor) from the file's position on."""
    n = t.numel() * t.element_size()
    if n and f.readinto(t.reshape(-1).view(torch.uint8).numpy()) != n:
        raise ValueError("the file ends inside a tensor (truncated?)")


def finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in `t`: its least and largest numbers, in one pass and no temporary
    (`torch.isfinite(t).all()` makes some: 260 MB for GPT-2's 154 MB embedding; NaN propagates to both)."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    in_memory_order = t.permute(*sorted(range(t.dim()), key=lambda d: -t.stride(d))) if t.dim() else t  # aminmax over a transposed view is 20x slower
    low, high = torch.aminmax(in_memory_order)
    return math.isfinite(float(low)) and math.isfinite(float(high))


def read_checked(f: BinaryIO, name: str, entry: Entry, out: torch.Tensor | None = None) -> torch.Tensor:
    """The tensor `name` at `entry`, into `out` (else a new tensor), with no NaN or infinity: every
    reader of weights and training state takes them so. A ValueError names the tensor."""
    try:
        if out is None:
            out = torch.empty(entry.shape, dtype=entry.dtype)
        read_into(f, entry, out)
    except (ValueError, RuntimeError) as e:  # RuntimeError: a shape torch cannot allocate
        raise ValueError(f"tensor {name}: {e}") from None
    if not finite(out):
        raise ValueError(f"tensor {name} holds NaN or infinite numbers")
    return out


def header_of(path: str | Path) -> tuple[dict, int, int]:
    """The parsed JSON header of the file at `path`, where its data begins and the file's size; a
    ValueError when it is no safetensors file."""
    path = Path(path)
    with open(path, "rb") as f:
        head = read_head(f)
    if len(head) < 9 or head[8:9] != b"{":
        raise ValueError("not a safetensors file (no JSON header after the 8-byte length)")
    n = int.from_bytes(head[:8], "little")
    if n > len(head) - 8:
        raise ValueError("header runs past the end of the file; truncated?")
    try:
        header = json.loads(head[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("the header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header, 8 + n, path.stat().st_size
