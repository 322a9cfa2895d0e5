"""Data: a UTF-8 file read once, then served to the trainer through one small interface.

Two kinds of data set, one interface (`batch` for a random training batch, `eval_batches` for the
deterministic evaluation batches of a split, `n_chars` for bits per character):
- `Items` (lines mode): one item per line. Each item becomes `<boundary> tokens <boundary>`, padded
  to `block_size + 1` with -1 targets that the loss ignores, so a batch is `x[idx], y[idx]` cut to
  its longest item; or, for models that can take it (`LanguageModel.packs`), the same items packed
  end to end into rows, with each id's position in its item. The block size is the longest item + 1.
- `Stream` (text mode): the whole file is one token stream. A training batch is random windows of
  `block_size + 1` tokens; evaluation covers the split with non-overlapping windows, in order.
Text is normalised to NFC (recorded in the checkpoint) wherever it enters: data, prompts, eval files.
Neither kind handles files larger than memory: the file is read and encoded at once.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import unicodedata
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple
from importlib import resources
from pathlib import Path

import torch

from makemore.errors import MakemoreError
from tokenizer import TokenizerError
from tokenizer.files import decode_text, read_input, shown

BUILTIN = "builtin:names"  # the data set used when no file is given
MODES = ("lines", "text", "auto")
MIN_ITEMS = 10  # lines mode: fewer items leave nothing to validate on
MAX_ITEM_TOKENS = 2048  # lines mode: a longer line is surely not an item (use text mode)
TEXT_SPLIT = (0.90, 0.05, 0.05)  # text mode: train, val, test shares of the characters, in that order
IGNORE = -1  # target id the loss skips (padding after an item's end)


def normalize(text: str) -> str:
    """The one normalisation applied to all text, at train, sample and eval time alike: NFC, and
    CRLF line ends as LF (a CRLF copy of a file reads as the file)."""
    return unicodedata.normalize("NFC", text).replace("\r\n", "\n")


@dataclass
class Source:
    """A data file's text (NFC), its display name, the SHA-256 of its bytes and where it is (an
    absolute path, the same from any working directory; or BUILTIN)."""

    text: str
    name: str
    sha256: str
    path: str = BUILTIN


def read_source(path: str | Path | None) -> Source:
    """The text of a data file (or the built-in names); binary, UTF-16 and non-UTF-8 files are errors."""
    if path is None or str(path) == BUILTIN:
        raw, name = resources.files("makemore").joinpath("data/names.txt").read_bytes(), BUILTIN
    else:
        name = str(path)
        try:
            raw = read_input(path, "data file")
        except TokenizerError as e:
            raise MakemoreError(str(e).replace("no such data file", "no such file")) from None
    try:
        text = decode_text(raw, name, "UTF-8 text")
    except TokenizerError as e:
        raise MakemoreError(str(e)) from None
    if not text.strip():
        raise MakemoreError(f"{name}: empty file (no non-blank lines)")
    where = name if name == BUILTIN else str(Path(path).resolve())
    return Source(normalize(text), name, hashlib.sha256(raw).hexdigest(), where)


def lines_of(text: str) -> tuple[list[str], list[int]]:
    """The non-blank lines of `text` (line ends and a trailing CR stripped) and their line numbers."""
    items, numbers = [], []
    for i, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            items.append(line)
            numbers.append(i)
    return items, numbers


def read_items(path: str | Path | None) -> tuple[list[str], str, str]:
    """The items (non-blank lines) of a data file, its display name and its SHA-256."""
    src = read_source(path)
    return lines_of(src.text)[0], src.name, src.sha256


def detect_mode(text: str) -> tuple[str, str]:
    """`lines` for a list of short items (names, words), `text` for running text; and why, in words."""
    lines = text.strip("\n").split("\n")
    items = [s for s in lines if s.strip()]
    longest = max(map(len, items))
    words = statistics.mean(len(s.split()) for s in items)
    blank = 1 - len(items) / len(lines)
    ends = sum(s.rstrip()[-1:] in ".,;:!?" for s in items) / len(items)
    if longest > 200:
        return "text", f"the longest line has {longest:,} characters"
    if words > 3:
        return "text", f"lines hold {words:.1f} words on average"
    if blank > 0.05 and len(lines) >= 20:
        return "text", f"{blank:.0%} of the lines are blank (paragraphs)"
    if ends > 0.3:
        return "text", f"{ends:.0%} of the lines end in punctuation"
    return "lines", f"{len(items):,} short lines of {words:.1f} words on average: one item per line"


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


def split_text(text: str) -> dict[str, str]:
    """Train, val and test as contiguous slices of the text, in that order (90/5/5% of the characters),
    each cut at a line end where one is near, so no training window reaches into val or test."""

    def cut(at: int) -> int:
        nl = text.rfind("\n", max(0, at - len(text) // 100), at)
        return nl + 1 if nl >= 0 else at

    a = cut(int(len(text) * TEXT_SPLIT[0]))
    b = cut(int(len(text) * (TEXT_SPLIT[0] + TEXT_SPLIT[1])))
    b = max(a, b)
    return {"train": text[:a], "val": text[a:b], "test": text[b:]}


class Batch(NamedTuple):
    """Inputs and targets (B, T); `pos`, for packed rows, each id's position in its own item."""

    x: torch.Tensor
    y: torch.Tensor
    pos: torch.Tensor | None = None


def as_tensor(ints: list[int]) -> torch.Tensor:
    """An int64 tensor of a list of ints, through an array: `torch.tensor` of a list of 256 ints
    took 50 µs, this 5."""
    return torch.frombuffer(array("q", ints), dtype=torch.int64) if ints else torch.zeros(0, dtype=torch.int64)


@dataclass
class Items:
    """Lines mode, one split, encoded: inputs `x` and targets `y`, both (N, block_size) int64."""

    x: torch.Tensor
    y: torch.Tensor
    n_chars: int  # characters in the items plus one end per item: the denominator of bits per character
    _lengths: torch.Tensor | None = None
    _cells: torch.Tensor | None = field(default=None, repr=False)
    default_batch_size: ClassVar[int] = 32  # items per step
    mode: ClassVar[str] = "lines"

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def block_size(self) -> int:
        return self.x.shape[1]

    def batch(self, batch_size: int, generator: torch.Generator, pack: bool = False) -> Batch:
        """`batch_size` random items, one per row cut to the longest (trailing padding is never
        computed on); or, with `pack`, the same items laid end to end in rows of `block_size`."""
        idx = torch.randint(len(self), (batch_size,), generator=generator)
        if pack:
            return self.packed(idx)
        T = int(self.lengths[idx].max())
        return Batch(self.x[idx, :T], self.y[idx, :T])

    def packed(self, idx: torch.Tensor) -> Batch:
        """Items `idx` packed into as few rows of `block_size` as first-fit (longest first) finds;
        `pos` numbers each item's positions from 0, which is all a model needs to keep the items
        apart (a position p sees the p before it). Names fill about two thirds of a batch cut to
        its longest item: packed, the same items, targets and loss take ~30% fewer positions.
        The rows are laid out in Python and gathered in one indexing (a dozen small tensor
        operations took 0.34 ms, 3% of a names step; this, 0.15 ms)."""
        W, items, sizes = self.block_size, idx.tolist(), self.lengths[idx].tolist()
        rows: list[list[int]] = []  # the items of each row, in placement order
        room: list[int] = []  # free positions left in each row
        for k in sorted(range(len(items)), key=lambda k: -sizes[k]):
            r = next((r for r, free in enumerate(room) if free >= sizes[k]), len(rows))
            if r == len(rows):
                rows.append([])
                room.append(W)
            rows[r].append(k)
            room[r] -= sizes[k]
        src: list[int] = []  # for each packed position, its cell in the flat (N * W) grid, or the padding cell
        pos: list[int] = []
        pad = self.padding_cell
        for r, row in enumerate(rows):
            for k in row:
                start = items[k] * W
                src += range(start, start + sizes[k])
                pos += range(sizes[k])
            src += [pad] * room[r]
            pos += [0] * room[r]
        x, y = self.cells.index_select(1, as_tensor(src))  # (2, rows * W): inputs and targets
        return Batch(x.view(-1, W), y.view(-1, W), as_tensor(pos).view(-1, W))

    @property
    def cells(self) -> torch.Tensor:
        """(2, N * W + 1): every input and target cell flat, then one padding cell (any valid input,
        an ignored target); made once, a copy of `x` and `y`."""
        if self._cells is None:
            pad = torch.tensor([[int(self.x[0, 0])], [IGNORE]])
            self._cells = torch.cat([torch.stack([self.x.reshape(-1), self.y.reshape(-1)]), pad], dim=1)
        return self._cells

    @property
    def padding_cell(self) -> int:
        return self.x.numel()

    def eval_batches(self, limit: int | None = None, batch_size: int = 500, pack: bool = False) -> Iterator[Batch]:
        """The first `limit` items (all by default), in order, in batches of rows (or with `pack`,
        packed as `packed` does: the same targets in about half the positions on names)."""
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            yield self.packed(torch.arange(i, j)) if pack else Batch(self.x[i:j], self.y[i:j])

    @property
    def lengths(self) -> torch.Tensor:
        """Targets per item (tokens + the closing boundary), computed once."""
        if self._lengths is None:
            self._lengths = (self.y != IGNORE).sum(dim=1)
        return self._lengths


@dataclass
class Stream:
    """Text mode, one split: a 1-D token stream served as windows of `block_size` inputs."""

    tokens: torch.Tensor  # (N,) int64
    block_size: int
    n_chars: int  # characters of the predicted tokens (all but the first): the denominator of bits per character
    _windows: torch.Tensor | None = field(default=None, repr=False)
    default_batch_size: ClassVar[int] = 8  # windows per step: many small steps learn fastest in minutes (README)
    mode: ClassVar[str] = "text"

    def __len__(self) -> int:
        """Non-overlapping evaluation windows."""
        return max(0, -(-(len(self.tokens) - 1) // self.block_size))

    def batch(self, batch_size: int, generator: torch.Generator, pack: bool = False) -> Batch:
        """`batch_size` windows of `block_size + 1` tokens at random offsets (nanoGPT's way); they are
        full, so `pack` changes nothing."""
        if self._windows is None:
            self._windows = self.tokens.unfold(0, self.block_size + 1, 1)  # a view: (N - T, T + 1)
        rows = self._windows[torch.randint(self._windows.shape[0], (batch_size,), generator=generator)]
        return Batch(rows[:, :-1], rows[:, 1:])

    def eval_batches(self, limit: int | None = None, batch_size: int = 64, pack: bool = False) -> Iterator[Batch]:
        """The first `limit` non-overlapping windows (all by default): every token but the first is a
        target exactly once. The last window may be shorter; it comes in a batch of its own. They
        are full, so `pack` changes nothing."""
        T, n = self.block_size, len(self) if limit is None else min(limit, len(self))
        full = min(n, (len(self.tokens) - 1) // T)
        for i in range(0, full, batch_size):
            j = min(i + batch_size, full)
            rows = self.tokens[i * T : j * T + 1]
            yield Batch(rows[:-1].view(j - i, T), rows[1:].view(j - i, T))
        if n > full:
            rest = self.tokens[full * T :]
            yield Batch(rest[None, :-1], rest[None, 1:])


def encode_items(items: list[str], tok, block_size: int | None = None, ids: list[list[int]] | None = None) -> Items:
    """Encode every item once as `<eot> tokens <eot>`; pad to `block_size + 1` (default: longest + 1).

    `ids`, the items already encoded by `tok`, saves encoding them again."""
    eot = tok.eot_id
    seqs = [[eot, *item, eot] for item in (ids if ids is not None else (encode_text(tok, s) for s in items))]
    if block_size is None:
        block_size = max(map(len, seqs)) - 1
    width, flat = block_size + 1, []
    for s in seqs:  # one flat list, one tensor: a tensor per item took 0.1 s for 32,000 names
        s = s[:width]
        flat += s
        flat += [IGNORE] * (width - len(s))
    rows = torch.tensor(flat, dtype=torch.long).view(len(seqs), width)
    x = rows[:, :-1].clone()
    x[x == IGNORE] = eot  # padding inputs: any valid id will do, their targets are ignored
    return Items(x=x, y=rows[:, 1:].clone(), n_chars=sum(len(s) + 1 for s in items))


def encode_text(tok, text: str) -> list[int]:
    """The ids of running text or of an item; special-token strings in it are plain text."""
    return getattr(tok, "encode_ordinary", tok.encode)(text)


def encode_lines(tok, items: list[str], numbers: list[int], name: str) -> list[list[int]]:
    """Each item's ids; an item the tokenizer cannot encode is an error naming its line."""
    ids = []
    for item, number in zip(items, numbers):
        try:
            ids.append(encode_text(tok, item))
        except TokenizerError as e:
            raise MakemoreError(f"{name}: line {number}: {e}") from None
    return ids


def check_text(tok, text: str, name: str) -> None:
    """Running text the tokenizer can encode; else an error naming the line of the first unknown character."""
    unknown = tok.first_unknown(text) if hasattr(tok, "first_unknown") else None
    if unknown is not None:
        line = text.count("\n", 0, unknown) + 1
        raise MakemoreError(f"{name}: line {line}: character {shown(text[unknown])} is not in the tokenizer's vocabulary")


def predicted_chars(text: str, ids: list[int], tok) -> int:
    """Characters of running text that a model predicts: all but those of its first token."""
    return len(text) - (len(tok.decode(ids[:1])) if ids else 0)


def encode_stream(text: str, tok, block_size: int) -> Stream:
    ids = encode_text(tok, text)
    return Stream(tokens=torch.tensor(ids, dtype=torch.long), block_size=block_size, n_chars=predicted_chars(text, ids, tok))
