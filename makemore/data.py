"""Data: a UTF-8 file of lines, one item per line, split and encoded once into tensors.

Each item becomes `<boundary> tokens <boundary>`, padded to `block_size + 1` with -1 targets that
the loss ignores, so a batch is just `x[idx], y[idx]`: no per-example Python work while training.
Text is normalised to NFC (recorded in the checkpoint); case and everything else is kept as given.
It does not handle items longer than one model context: the block size is the longest item + 1.
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from makemore.errors import MakemoreError

BUILTIN = "builtin:names"  # the data set used when no file is given
MIN_ITEMS = 10
IGNORE = -1  # target id the loss skips (padding after an item's end)


def read_items(path: str | Path | None) -> tuple[list[str], str, str]:
    """The items of a data file (or the built-in names), its display name and its SHA-256."""
    if path is None or str(path) == BUILTIN:
        raw = resources.files("makemore").joinpath("data/names.txt").read_bytes()
        name = BUILTIN
    else:
        p = Path(path)
        if not p.exists():
            raise MakemoreError(f"{p}: no such file")
        if p.is_dir():
            raise MakemoreError(f"{p}: is a directory, not a data file")
        raw = p.read_bytes()
        name = str(p)
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise MakemoreError(f"{name}: binary file (NUL byte on line {line}); expected UTF-8 text, one item per line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise MakemoreError(f"{name}: not UTF-8 text (bad byte at line {line}, byte offset {e.start})") from None
    text = unicodedata.normalize("NFC", text.removeprefix("\ufeff"))
    items = [line.rstrip("\r") for line in text.split("\n")]
    items = [s for s in items if s.strip()]
    if not items:
        raise MakemoreError(f"{name}: empty file (no non-blank lines)")
    if len(items) < MIN_ITEMS:
        raise MakemoreError(f"{name}: only {len(items)} items; need at least {MIN_ITEMS} lines to train on")
    return items, name, hashlib.sha256(raw).hexdigest()


def split_items(items: list[str], seed: int) -> dict[str, list[str]]:
    """A deterministic train / val / test split: val and test each 10% of the items, at most 1,000."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_hold = min(1000, len(items) // 10)
    shuffled = [items[i] for i in order]
    return {
        "test": shuffled[:n_hold],
        "val": shuffled[n_hold : 2 * n_hold],
        "train": shuffled[2 * n_hold :],
    }


@dataclass
class Split:
    """One split, encoded: inputs `x` and targets `y`, both (N, block_size) int64."""

    x: torch.Tensor
    y: torch.Tensor
    n_chars: int  # characters in the items plus one end per item: the denominator of bits per character
    _lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch, cut to its longest item: trailing padding is never computed on."""
        idx = torch.randint(len(self), (batch_size,), generator=generator)
        T = int(self.lengths[idx].max())
        return self.x[idx, :T], self.y[idx, :T]

    @property
    def lengths(self) -> torch.Tensor:
        """Targets per item (tokens + the closing boundary), computed once."""
        if self._lengths is None:
            self._lengths = (self.y != IGNORE).sum(dim=1)
        return self._lengths


def encode_items(items: list[str], tok, block_size: int | None = None, ids: list[list[int]] | None = None) -> Split:
    """Encode every item once as `<eot> tokens <eot>`; pad to `block_size + 1` (default: longest + 1).

    `ids`, the items already encoded by `tok`, saves encoding them again."""
    eot = tok.eot_id
    seqs = [[eot, *item, eot] for item in (ids if ids is not None else map(tok.encode, items))]
    if block_size is None:
        block_size = max(map(len, seqs)) - 1
    rows = torch.full((len(seqs), block_size + 1), IGNORE, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[: block_size + 1]
        rows[i, : len(s)] = torch.tensor(s)
    x = rows[:, :-1].clone()
    x[x == IGNORE] = eot  # padding inputs: any valid id will do, their targets are ignored
    return Split(x=x, y=rows[:, 1:].clone(), n_chars=sum(len(s) + 1 for s in items))

