"""Data: a UTF-8 file read once, split and encoded by its kind, then served to the trainer.

Kinds are classes behind one interface, with a registry (`KINDS`) as the model types have; code
outside this module never asks which kind it has. A kind (`Dataset` subclass) owns how its data
is split and encoded, its block-size rule, its record in the checkpoint, its test split rebuilt
from that record, the encoding of an evaluation file, how a string is scored, how a model of it
generates (`generate`), and whether samples can be told new from seen.
- `Lines` (one item per line): each item becomes `<boundary> tokens <boundary>`, padded to
  `block_size + 1` with -1 targets that the loss ignores (`Items`); the block size is the
  longest item + 1. Models that take packed rows (`LanguageModel.packs`) get the items end to end.
- `Text` (running text): the whole file is one token stream (`Stream`); a training batch is
  random windows of `block_size + 1` tokens; evaluation covers a split with non-overlapping windows.
A split serves batches through `batch` (a random training batch) and `eval_batches` (the
deterministic evaluation batches), and counts `n_chars` for bits per character.
Text is normalised to NFC with LF line ends wherever it enters: data, prompts, eval files.
Neither kind handles files larger than memory: the file is read and encoded at once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import statistics
import unicodedata
from array import array
from collections.abc import Iterator
from itertools import chain
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple
from importlib import resources
from pathlib import Path

import torch

import tokenizer as tokenizers
from makemore import memory, tokens
from makemore import pairs as pairs_
from makemore.errors import MakemoreError
from tokenizer import EOT, CharTokenizer, Tokenizer, TokenizerError
from safeio import raises
from safeio.files import check_readable, decode_text, read_input, shown

MIN_ITEMS = 10  # lines mode: fewer items leave nothing to validate on
MAX_ITEM_TOKENS = 2048  # lines mode: a longer line is surely not an item (use text mode)
TEXT_BLOCK_SIZE = 128  # text mode's default context, in tokens
MAX_BLOCK_SIZE = 1 << 16  # a longer context is surely a typo
TEXT_SPLIT = (0.90, 0.05, 0.05)  # text mode: train, val, test shares of the characters, in that order
IGNORE = -1  # target id the loss skips (padding after an item's end)
HEAD_BYTES = 8 << 20  # what a file's kind is told from (`detect_mode`): the whole of most files


def normalize(text: str) -> str:
    """The one normalisation applied to all text, at train, sample and eval time alike: NFC, and
    CRLF line ends as LF (a CRLF copy of a file reads as the file)."""
    return unicodedata.normalize("NFC", text).replace("\r\n", "\n")


class Source:
    """A data file (or built-in set) as given: its display name and where it is (an absolute path, the
    same from any working directory; or builtin:<name>). Its text, hash and head are read when first
    asked for; text mode reads the file only as a stream (`cache`), never whole."""

    def __init__(self, name: str, path: str, file: Path):
        self.name, self.path, self.file = name, path, file
        self._sha256: str | None = None
        self._cache: tokens.Cache | None = None

    @functools.cached_property
    def text(self) -> str:
        """All of it, normalised (`normalize`)."""
        raw = read_input(self.file, "file")
        self._sha256 = hashlib.sha256(raw).hexdigest()
        return normalize(decode_text(raw, self.name, "UTF-8 text"))

    @property
    def sha256(self) -> str:
        """Of the bytes: from the text where it was read, else from one pass over the file."""
        return self._sha256 or self.cache().sha256

    @functools.cached_property
    def head(self) -> str:
        """The first `HEAD_BYTES` (whole lines), normalised: all of a smaller file. Enough to tell its kind."""
        with open(self.file, "rb") as f:
            raw = f.read(HEAD_BYTES + 1)
        if len(raw) > HEAD_BYTES:
            raw = raw[: raw.rfind(b"\n", 0, HEAD_BYTES) + 1] or raw[:HEAD_BYTES]
        return normalize(decode_text(raw, self.name, "UTF-8 text"))

    @property
    def bytes_per_char(self) -> float:
        """UTF-8 bytes per character of the file (what bits per byte divides by): from its text where it
        was read, else from the token cache's counts."""
        if "text" in self.__dict__:
            return len(self.text.encode("utf-8")) / max(len(self.text), 1)
        counts = self.cache().counts()
        return counts.size / max(counts.n_chars, 1)

    def cache(self) -> tokens.Cache:
        """The file's token cache (`makemore.tokens`), where text mode reads it from."""
        if self._cache is None:
            self._cache = tokens.Cache(self.file, self.name, normalize=normalize, **tokens.settings)
        return self._cache


@dataclass(frozen=True)
class Builtin:
    """A data set shipped in the package (`makemore/data/<file>`), used by its name in place of a path."""

    file: str
    what: str
    source: str
    licence: str


BUILTINS = {
    "names": Builtin("names.txt", "32,033 US baby names (the lectures' names.txt); the default",
                     "US Social Security Administration, via karpathy/makemore", "public domain"),
    "shakespeare": Builtin("shakespeare.txt", "40,000 lines of Shakespeare's plays (the lectures' tinyshakespeare)",
                           "karpathy/char-rnn", "public domain"),
    "census": Builtin("census.txt", "5,163 first names of the US Census 1990",
                      "US Census Bureau, via the names package", "public domain"),
}
BUILTIN = "builtin:names"  # the data set used when no file is given, as a run records it


def builtin_name(path: str | Path | None) -> str | None:
    """The built-in set that `path` names, if any: None is the default; `builtin:X` is how a run
    records X; a bare name (`shakespeare`) counts only where no such file exists (a path wins)."""
    if path is None:
        return "names"
    text = str(path)
    if text.startswith("builtin:") and text[8:] in BUILTINS:
        return text[8:]
    return text if text in BUILTINS and not Path(text).exists() else None


def builtin_file(name: str) -> Path:
    return Path(str(resources.files("makemore").joinpath(f"data/{BUILTINS[name].file}")))


def builtin_bytes(name: str) -> bytes:
    return builtin_file(name).read_bytes()


@raises(MakemoreError)
def read_source(path: str | Path | None) -> Source:
    """A data file (or a built-in set), checked to be readable, non-empty UTF-8 text as far as its head
    shows (binary, UTF-16 and non-UTF-8 files are errors); the rest is read when needed."""
    builtin = builtin_name(path)
    if builtin:
        src = Source(f"builtin:{builtin}", f"builtin:{builtin}", builtin_file(builtin))
    else:
        check_readable(Path(path), "file")
        src = Source(str(path), str(Path(path).resolve()), Path(path))
    if not src.head.strip() and os.path.getsize(src.file) <= HEAD_BYTES:
        raise MakemoreError(f"{src.name}: empty file (no non-blank lines)")
    return src


def stem(path: str | Path | None) -> str:
    """What a run on `path` is called in checkpoints/ (names-transformer, shakespeare-gru, my-list-mlp)."""
    return builtin_name(path) or Path(path).stem


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


def split_order(n: int, seed: int) -> dict[str, torch.Tensor]:
    """A deterministic train / val / test split of `n` items, as item indices: val and test each 10%
    of the items, at most 1,000."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    order = as_tensor(order)
    n_hold = min(1000, n // 10)
    return {"test": order[:n_hold], "val": order[n_hold : 2 * n_hold], "train": order[2 * n_hold :]}


def split_items(items: list[str], seed: int) -> dict[str, list[str]]:
    """`split_order`'s split of the items themselves."""
    return {k: [items[i] for i in v.tolist()] for k, v in split_order(len(items), seed).items()}


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
    """An int64 tensor of a list of ints, through an array: an order of magnitude faster than
    `torch.tensor` of a list (docs/performance.md, data)."""
    return torch.frombuffer(array("q", ints), dtype=torch.int64) if ints else torch.zeros(0, dtype=torch.int64)


@dataclass
class Items:
    """Lines mode, one split, encoded: inputs `x` and targets `y`, both (N, block_size) int64."""

    x: torch.Tensor
    y: torch.Tensor
    n_chars: int  # characters in the items plus one end per item: the denominator of bits per character
    _lengths: torch.Tensor | None = None
    _cells: torch.Tensor | None = field(default=None, repr=False)

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
        its longest item: packed, the same items, targets and loss take fewer positions. The rows
        are laid out in Python and gathered in one indexing, cheaper than a dozen small tensor
        operations (docs/performance.md, data)."""
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

    def covered(self, limit: int | None) -> int:
        """Items that `eval_batches(limit)` gives."""
        return len(self) if limit is None else min(limit, len(self))

    @property
    def targets(self) -> int:
        """Tokens predicted by an evaluation of all of it."""
        return int(self.lengths.sum())

    @property
    def lengths(self) -> torch.Tensor:
        """Targets per item (tokens + the closing boundary), computed once."""
        if self._lengths is None:
            self._lengths = (self.y != IGNORE).sum(dim=1)
        return self._lengths


@dataclass
class Stream:
    """Text mode, one split: a 1-D token stream served as windows of `block_size` inputs. The ids may be
    any integer type (a memory map of the token cache holds uint16 or uint32); batches are int64."""

    tokens: torch.Tensor  # (N,)
    block_size: int
    n_chars: int  # characters of the predicted tokens (all but the first): the denominator of bits per character
    _windows: torch.Tensor | None = field(default=None, repr=False)
    first_chars: int = 0  # characters of the first token (never predicted)

    def __len__(self) -> int:
        """Non-overlapping evaluation windows."""
        return max(0, -(-(len(self.tokens) - 1) // self.block_size))

    def batch(self, batch_size: int, generator: torch.Generator, pack: bool = False) -> Batch:
        """`batch_size` windows of `block_size + 1` tokens at random offsets (nanoGPT's way); they are
        full, so `pack` changes nothing."""
        if self._windows is None:
            self._windows = self.tokens.unfold(0, self.block_size + 1, 1)  # a view: (N - T, T + 1)
        rows = self._windows[torch.randint(self._windows.shape[0], (batch_size,), generator=generator)].long()
        return Batch(rows[:, :-1], rows[:, 1:])

    def eval_batches(self, limit: int | None = None, batch_size: int = 64, pack: bool = False) -> Iterator[Batch]:
        """Every non-overlapping window (every token but the first a target exactly once; the last
        window may be shorter and comes in a batch of its own); or, where `limit` is smaller, `limit`
        full windows spread evenly over the split (the same ones every time), so an evaluation's cost
        does not grow with the file. They are full, so `pack` changes nothing."""
        T, full = self.block_size, (len(self.tokens) - 1) // self.block_size
        if limit is not None and limit < len(self):
            starts = [k * full // limit * T for k in range(min(limit, full))]
            for i in range(0, len(starts), batch_size):
                rows = torch.stack([self.tokens[s : s + T + 1] for s in starts[i : i + batch_size]]).long()
                yield Batch(rows[:, :-1], rows[:, 1:])
            return
        for i in range(0, full, batch_size):
            j = min(i + batch_size, full)
            rows = self.tokens[i * T : j * T + 1].long()
            yield Batch(rows[:-1].view(j - i, T), rows[1:].view(j - i, T))
        if len(self) > full:
            rest = self.tokens[full * T :].long()
            yield Batch(rest[None, :-1], rest[None, 1:])

    def covered(self, limit: int | None) -> int:
        """Windows that `eval_batches(limit)` gives."""
        return len(self) if limit is None or limit >= len(self) else min(limit, (len(self.tokens) - 1) // self.block_size)

    @property
    def targets(self) -> int:
        """Tokens predicted by an evaluation of all of it."""
        return max(0, len(self.tokens) - 1)


def encode_items(items: list[str], tok, block_size: int | None = None, ids: list[list[int]] | None = None) -> Items:
    """Encode every item once as `<eot> tokens <eot>`; pad to `block_size + 1` (default: longest + 1).

    `ids`, the items already encoded by `tok`, saves encoding them again."""
    eot = tok.eot_id
    seqs = [[eot, *item, eot] for item in (ids if ids is not None else (encode_text(tok, s) for s in items))]
    if block_size is None:
        block_size = max(map(len, seqs)) - 1
    width, flat = block_size + 1, []
    for s in seqs:  # one flat list, one tensor: a tensor per item is slow for many items
        s = s[:width]
        flat += s
        flat += [IGNORE] * (width - len(s))
    rows = torch.tensor(flat, dtype=torch.long).view(len(seqs), width)
    x = rows[:, :-1].clone()
    x[x == IGNORE] = eot  # padding inputs: any valid id will do, their targets are ignored
    return Items(x=x, y=rows[:, 1:].clone(), n_chars=sum(len(s) + 1 for s in items))


@dataclass
class Encoded:
    """Lines mode: every item's ids end to end (`ids`), and per item its start there, its length in
    tokens and in characters, and its line number."""

    ids: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    chars: torch.Tensor
    numbers: torch.Tensor

    def rows(self, sel: torch.Tensor, block_size: int, eot: int) -> Items:
        """Items `sel` as `encode_items` lays them out (`<eot> tokens <eot>`, padded), made by indexing
        in chunks rather than item by item (each item fits: the caller checked)."""
        W, j = block_size + 1, torch.arange(block_size + 1)
        x, y = torch.empty(len(sel), block_size, dtype=torch.long), torch.empty(len(sel), block_size, dtype=torch.long)
        for at in range(0, len(sel), 1 << 18):
            chunk = sel[at : at + (1 << 18)]
            s, L = self.starts[chunk], self.lengths[chunk]
            rows = self.ids[(s[:, None] + j - 1).clamp_(0, max(len(self.ids) - 1, 0))] if len(self.ids) else torch.zeros(len(chunk), W, dtype=torch.long)
            rows = torch.where((j >= 1) & (j <= L[:, None]), rows, IGNORE)
            rows[:, 0] = eot
            rows[torch.arange(len(chunk)), L + 1] = eot
            y[at : at + len(chunk)] = rows[:, 1:]
            rows[rows == IGNORE] = eot  # padding inputs: any valid id will do, their targets are ignored
            x[at : at + len(chunk)] = rows[:, :-1]
        return Items(x=x, y=y, n_chars=int(self.chars[sel].sum()) + len(sel))


def encode_all_lines(text: str, tok: Tokenizer | None, name: str) -> tuple[Tokenizer, Encoded]:
    """The items (non-blank lines, `lines_of`) of `text` encoded by `tok` (default: their characters);
    an item the tokenizer cannot encode is an error naming its line."""
    if (tok is None or tok.kind == "char") and "\r" not in text:
        return char_lines(text, tok, name)
    items, numbers = lines_of(text)
    tok = tok or CharTokenizer.from_items(items)
    ids = encode_lines(tok, items, numbers, name)
    lengths = as_tensor([len(i) for i in ids])
    starts = torch.cumsum(lengths, 0) - lengths
    return tok, Encoded(as_tensor(list(chain.from_iterable(ids))), starts, lengths, as_tensor([len(s) for s in items]),
                        as_tensor(numbers))


def char_lines(text: str, tok: CharTokenizer | None, name: str) -> tuple[CharTokenizer, Encoded]:
    """`encode_all_lines` for characters, with tensor operations over the text's code points: the same
    items, ids and errors without a Python object per line (docs/performance.md, data). Text with a
    CR, which `lines_of` strips from line ends, goes the plain way."""
    cps = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)
    n = len(cps)
    nl = (cps == 10).nonzero().squeeze(1)
    line_start, line_end = torch.cat([torch.zeros(1, dtype=torch.long), nl + 1]), torch.cat([nl, torch.tensor([n])])
    top = int(cps.max()) + 1 if n else 1  # code points index small tables: faster than sorting the text
    distinct = torch.bincount(cps, minlength=top).nonzero().squeeze(1)
    space = torch.zeros(top, dtype=torch.bool)
    space[distinct] = torch.tensor([chr(c).isspace() for c in distinct.tolist()], dtype=torch.bool)
    solid_before = torch.cat([torch.zeros(1, dtype=torch.long), (~space[cps]).cumsum(0)])
    keep = solid_before[line_end] - solid_before[line_start] > 0  # a line with something but spaces
    starts, ends = line_start[keep], line_end[keep]
    edges = torch.zeros(n + 1, dtype=torch.int32)
    edges.index_add_(0, starts, torch.ones(len(starts), dtype=torch.int32))
    edges.index_add_(0, ends, torch.full((len(ends),), -1, dtype=torch.int32))
    inside = edges.cumsum(0)[:n] > 0  # positions within the items
    present = torch.bincount(cps[inside], minlength=top).nonzero().squeeze(1)
    tok = tok or CharTokenizer("".join(map(chr, present.tolist())))
    table = torch.zeros(top, dtype=torch.long)  # code point -> id; 0 where the tokenizer lacks it
    for i, c in enumerate(tok.chars, start=1):
        if ord(c) < top:
            table[ord(c)] = i
    unknown = present[table[present] == 0]
    if len(unknown):
        at = int((inside & (table[cps] == 0)).nonzero()[0])
        raise MakemoreError(f"{name}: line {int(torch.searchsorted(nl, at)) + 1}: character {shown(chr(int(cps[at])))} "
                            f"is not in the tokenizer's vocabulary")
    ids = table[cps]
    lengths = ends - starts
    return tok, Encoded(ids, starts, lengths, lengths, keep.nonzero().squeeze(1) + 1)


def encode_text(tok, text: str) -> list[int]:
    """The ids of running text or of an item; special-token strings in it are plain text."""
    return tok.encode_ordinary(text)


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
    unknown = tok.first_unknown(text)
    if unknown is not None:
        line = text.count("\n", 0, unknown) + 1
        raise MakemoreError(f"{name}: line {line}: character {shown(text[unknown])} is not in the tokenizer's vocabulary")


def predicted_chars(text: str, ids: list[int], tok) -> int:
    """Characters of running text that a model predicts: all but those of its first token."""
    return len(text) - (len(tok.decode(ids[:1])) if ids else 0)


def encode_stream(text: str, tok, block_size: int) -> Stream:
    ids = encode_text(tok, text)
    n_chars = predicted_chars(text, ids, tok)
    return Stream(tokens=torch.tensor(ids, dtype=torch.long), block_size=block_size, n_chars=n_chars, first_chars=len(text) - n_chars)


# The kinds. ---------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A data set read, split and encoded by its kind, ready for any model type."""

    name: str  # the file as given, or builtin:names
    path: str  # the same file as an absolute path (or builtin:names): what a run stores
    sha256: str
    seed: int
    reason: str  # why this kind, in words
    splits: dict  # train / val / test: Items or Stream
    sizes: dict[str, int]  # items or characters per split
    tokenizer: Tokenizer
    block_size: int
    kind: ClassVar[str]  # its name in the registry and in checkpoints
    unit: ClassVar[str]  # what `sizes` counts
    record_unit: ClassVar[str]  # its key in the checkpoint's data record
    default_batch_size: ClassVar[int]  # rows per step when `batch_size` is not given
    novelty: ClassVar[bool] = False  # samples can be told new or seen (the training items are a set)
    output: ClassVar[str]  # what its models generate: "items" (boundary to boundary) or "stream" (`sample.GENERATORS`)
    sample_options: ClassVar[tuple[str, ...]] = ()  # sampling arguments that mean something for this kind only
    build_options: ClassVar[tuple[str, ...]] = ()  # `prepare` arguments only this kind takes (pairs: template, truncate)

    def record(self) -> dict:
        """What a checkpoint stores about its data, enough to find the file again and re-split it."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "split_seed": self.seed, "mode": self.kind,
                self.record_unit: self.sizes, "normalization": "NFC"}

    def describe(self) -> str:
        s = self.sizes
        return (f"{self.name}: {self.kind} mode ({self.reason}); {s['train']:,} train, {s['val']:,} val, {s['test']:,} test "
                f"{self.unit}; vocabulary {self.tokenizer.vocab_size}, block size {self.block_size}")

    @classmethod
    def check_tokenizer(cls, tok: Tokenizer, label: str) -> None:
        """Refuse a tokenizer this kind cannot use."""

    @classmethod
    def options_of(cls, record: dict) -> dict:
        """The `build_options` a checkpoint's data record holds: what rebuilds its data the same way."""
        return {}

    @classmethod
    def sizes_of(cls, split) -> dict:
        """How much an evaluated split holds, for reports: {"items": n} or {"characters": n}."""
        raise NotImplementedError


def require_boundary(tok: Tokenizer, label: str, need: str, other: str = "") -> None:
    if not tok.has_boundary:
        raise MakemoreError(f"{label}: the tokenizer has no {EOT} special token, which {need}; train it with `special` '{EOT}'{other}")


def item_room(block_size: int) -> int:
    """Tokens an item may have in `block_size` positions: the opening boundary takes one (the closing
    boundary is only ever a target). The one rule, for training, evaluation and scoring."""
    return block_size - 1


class Lines(Dataset):
    kind, unit, record_unit = "lines", "items", "items"
    default_batch_size = 32
    novelty = True
    output = "items"
    sample_options = ("min_len", "max_len", "novel_only")

    @classmethod
    def build(cls, src: Source, seed: int, tok: Tokenizer | None, reason: str, block_size: int | None) -> Lines:
        """The items encoded end to end (`Encoded`), split by a seeded shuffle and laid out in rows:
        no Python object per item, so millions of lines start in seconds."""
        tok, enc = encode_all_lines(src.text, tok, src.name)
        n = len(enc.lengths)
        if n < MIN_ITEMS:
            raise MakemoreError(f"{src.name}: only {n} items; need at least {MIN_ITEMS} lines to train on")
        longest = int(torch.argmax(enc.lengths))  # the first of the longest
        limit = item_room(block_size) if block_size else MAX_ITEM_TOKENS
        if enc.lengths[longest] > limit:
            because = f"longer than `block_size` {block_size} allows" if block_size else "too long to be one item"
            raise MakemoreError(f"{src.name}: line {int(enc.numbers[longest])} is {int(enc.lengths[longest]):,} tokens, {because} "
                                f"(at most {limit}); use `mode` text for running text")
        block_size = block_size or int(enc.lengths[longest]) + 1  # the longest item + 1
        memory.require(3 * 8 * n * (block_size + 1), f"{src.name} in lines mode", "is it really one item per line? (`mode` text)")
        parts = split_order(n, seed)
        splits = {k: enc.rows(v, block_size, tok.eot_id) for k, v in parts.items()}
        return cls(src.name, src.path, src.sha256, seed, reason, splits, {k: len(v) for k, v in parts.items()}, tok, block_size)

    @classmethod
    def check_tokenizer(cls, tok: Tokenizer, label: str) -> None:
        require_boundary(tok, label, "lines mode needs as the item boundary", " (or use `mode` text)")

    @classmethod
    def test_split(cls, src: Source, record: dict, tok: Tokenizer, block_size: int) -> Items:
        return cls.encode(src, tok, block_size, split_items(lines_of(src.text)[0], record["split_seed"])["test"])

    @classmethod
    def encode_file(cls, src: Source, tok: Tokenizer, block_size: int) -> Items:
        items, numbers = lines_of(src.text)
        return cls.encode(src, tok, block_size, items, numbers)

    @classmethod
    def encode(cls, src: Source, tok: Tokenizer, block_size: int, items: list[str], numbers: list[int] | None = None) -> Items:
        """`items` encoded for a model with `block_size` positions; an item too long is named with its line."""
        numbers = numbers or list(range(1, len(items) + 1))
        ids = encode_lines(tok, items, numbers, src.name)
        too_long = [k for k, item in enumerate(ids) if len(item) > item_room(block_size)]
        if too_long:
            raise MakemoreError(f"{src.name}: line {numbers[too_long[0]]}: item {shown(items[too_long[0]])} is longer than "
                                f"the model's context ({item_room(block_size)} tokens)")
        return encode_items(items, tok, block_size, ids)

    @classmethod
    def training_items(cls, src: Source, record: dict) -> set[str]:
        return set(split_items(lines_of(src.text)[0], record["split_seed"])["train"])

    @classmethod
    def scored(cls, tok: Tokenizer, text: str, block_size: int) -> tuple[list[int], int, bool]:
        """A string as the model sees it when scored: a whole item, boundary to boundary; its characters
        (the end counts as one); and whether the last id is the boundary."""
        ids = encode_text(tok, text)
        if len(ids) > item_room(block_size):
            raise MakemoreError(f"string {shown(text)} is longer than the model's items ({item_room(block_size)} tokens)")
        return [tok.eot_id, *ids, tok.eot_id], len(text) + 1, True

    @classmethod
    def sizes_of(cls, split: Items) -> dict:
        return {"items": len(split)}



class Text(Dataset):
    kind, unit, record_unit = "text", "characters", "chars"
    default_batch_size = 8  # windows per step: many small steps learn fastest in minutes (docs/performance.md)
    output = "stream"
    sample_options = ("max_new_tokens", "stream", "stop")

    @classmethod
    def build(cls, src: Source, seed: int, tok: Tokenizer | None, reason: str, block_size: int | None) -> Text:
        """The file through its token cache (`makemore.tokens`): counted and encoded in parallel the
        first time, memory-mapped after; the splits `split_text` cuts, each encoded as one string."""
        block_size = block_size or TEXT_BLOCK_SIZE
        cache = src.cache()
        tok = tok or CharTokenizer(cache.counts().charset)
        splits = cls.streams(src, tok, block_size, TEXT_SPLIT)
        n_train = len(splits["train"].tokens)
        if n_train <= block_size + 1:
            raise MakemoreError(f"{src.name}: {n_train} tokens of training text, not more than the block size ({block_size}); "
                                f"use a smaller `block_size` or a longer file")
        if min(len(splits["val"].tokens), len(splits["test"].tokens)) < 2:
            raise MakemoreError(f"{src.name}: too short for text mode (val and test are 5% each); use a longer file")
        sizes = {k: v.n_chars + v.first_chars for k, v in splits.items()}
        return cls(src.name, src.path, src.sha256, seed, reason, splits, sizes, tok, block_size)

    @classmethod
    def streams(cls, src: Source, tok: Tokenizer, block_size: int, shares: tuple[float, ...] | None) -> dict[str, Stream]:
        """The file's splits (or with no `shares`, all of it as "all") as streams over the token cache."""
        cache = src.cache()
        unknown = tok.first_unknown(cache.counts().charset)
        if unknown is not None:
            ch = cache.counts().charset[unknown]
            raise MakemoreError(f"{src.name}: line {cache.line_of(ch):,}: character {shown(ch)} is not in the tokenizer's vocabulary")
        entry = cache.entry(tok, shares)
        return {k: Stream(entry.split(k), block_size, entry.chars[k] - entry.first[k], first_chars=entry.first[k])
                for k in entry.offsets}

    @classmethod
    def test_split(cls, src: Source, record: dict, tok: Tokenizer, block_size: int) -> Stream:
        return cls.streams(src, tok, block_size, TEXT_SPLIT)["test"]

    @classmethod
    def encode_file(cls, src: Source, tok: Tokenizer, block_size: int) -> Stream:
        split = cls.streams(src, tok, block_size, None)["all"]
        if len(split.tokens) < 2:
            raise MakemoreError(f"{src.name}: a single token: nothing to predict")
        return split

    @classmethod
    def encode(cls, src: Source, tok: Tokenizer, block_size: int, text: str) -> Stream:
        """Text in memory, encoded as one string (`scored`, and the reference the token cache must equal)."""
        check_text(tok, text, src.name)
        return encode_stream(text, tok, block_size)

    @classmethod
    def training_items(cls, src: Source, record: dict) -> None:
        return None

    @classmethod
    def scored(cls, tok: Tokenizer, text: str, block_size: int) -> tuple[list[int], int, bool]:
        """Running text: every token after the first, given the ones before it (what `eval` measures)."""
        ids = encode_text(tok, text)
        if len(ids) < 2:
            raise MakemoreError(f"string {shown(text)}: one token, nothing to predict in text mode")
        return ids, predicted_chars(text, ids, tok), False

    @classmethod
    def sizes_of(cls, split: Stream) -> dict:
        return {"characters": split.n_chars}



@dataclass
class Pairs(Dataset):
    """Instruction pairs (`makemore/pairs.py` reads them): each record becomes `<eot> prompt response
    <eot>`, the prompt written by the template; only the response and the closing end token are
    targets (the prompt's are IGNORE, as padding is), so the loss and `eval` measure the answers.
    Split by record; batched as lines mode's items are (cut to the longest, or packed)."""

    template: str = pairs_.DEFAULT_TEMPLATE
    truncate: bool = False  # a record longer than the block loses its end (else it is an error)
    kind, unit, record_unit = "pairs", "records", "records"
    default_batch_size = 16
    output = "answers"
    sample_options = ("max_new_tokens", "stream", "stop")
    build_options = ("template", "truncate")

    def record(self) -> dict:
        return super().record() | {"template": self.template, "truncate": self.truncate}

    @classmethod
    def build(cls, src: Source, seed: int, tok: Tokenizer | None, reason: str, block_size: int | None,
              template: str | None = None, truncate: bool = False) -> Pairs:
        template = pairs_.check_template(template or pairs_.DEFAULT_TEMPLATE)
        records = pairs_.read_records(src.text, src.name)
        if len(records) < MIN_ITEMS:
            raise MakemoreError(f"{src.name}: only {len(records)} records; need at least {MIN_ITEMS} to train on")
        tok = tok or CharTokenizer.from_items([template, *(pairs_.render(template, r.instruction, r.input) + r.response for r in records)])
        cls.check_tokenizer(tok, src.name)
        seqs = encode_records(tok, template, records, src.name)
        longest = max(range(len(seqs)), key=lambda k: len(seqs[k][0]) + len(seqs[k][1]))
        block_size = block_size or min(1 + len(seqs[longest][0]) + len(seqs[longest][1]), MAX_BLOCK_SIZE)
        check_room(seqs, list(range(1, len(seqs) + 1)), block_size, truncate, src.name)
        width = min(block_size, 1 + len(seqs[longest][0]) + len(seqs[longest][1]))  # what `encode_pairs` pads to at most
        memory.require(3 * 8 * len(records) * (width + 1), f"{src.name} in pairs mode", "are the records that long?")
        parts = split_items(list(range(len(records))), seed)
        splits = {k: encode_pairs([seqs[i] for i in v], [records[i] for i in v], [i + 1 for i in v], tok, block_size, truncate, src.name)
                  for k, v in parts.items()}
        return cls(src.name, src.path, src.sha256, seed, reason, splits, {k: len(v) for k, v in parts.items()}, tok, block_size,
                   template, truncate)

    @classmethod
    def check_tokenizer(cls, tok: Tokenizer, label: str) -> None:
        require_boundary(tok, label, "pairs mode needs to end each response")

    @classmethod
    def options_of(cls, record: dict) -> dict:
        return {"template": record.get("template", pairs_.DEFAULT_TEMPLATE), "truncate": record.get("truncate", False)}

    @classmethod
    def test_split(cls, src: Source, record: dict, tok: Tokenizer, block_size: int) -> Items:
        records = pairs_.read_records(src.text, src.name)
        chosen = split_items(list(range(len(records))), record["split_seed"])["test"]
        return cls.encode(src, tok, block_size, records, chosen, **cls.options_of(record))

    @classmethod
    def encode_file(cls, src: Source, tok: Tokenizer, block_size: int, template: str | None = None, truncate: bool = False) -> Items:
        records = pairs_.read_records(src.text, src.name)
        return cls.encode(src, tok, block_size, records, list(range(len(records))), template, truncate)

    @classmethod
    def encode(cls, src: Source, tok: Tokenizer, block_size: int, records: list, chosen: list[int], template: str | None = None,
               truncate: bool = False) -> Items:
        template = pairs_.check_template(template or pairs_.DEFAULT_TEMPLATE)
        picked = [records[i] for i in chosen]
        return encode_pairs(encode_records(tok, template, picked, src.name, [i + 1 for i in chosen]), picked,
                            [i + 1 for i in chosen], tok, block_size, truncate, src.name)

    @classmethod
    def training_items(cls, src: Source, record: dict) -> None:
        return None

    @classmethod
    def scored(cls, tok: Tokenizer, text: str, block_size: int) -> tuple[list[int], int, bool]:
        """A string scored as lines mode scores an item: boundary to boundary."""
        return Lines.scored(tok, text, block_size)

    @classmethod
    def sizes_of(cls, split: Items) -> dict:
        return {"items": len(split)}


def encode_records(tok, template: str, records: list, name: str, numbers: list[int] | None = None) -> list[tuple[list[int], list[int]]]:
    """Each record's prompt ids and response ids; a record the tokenizer cannot encode is an error naming it."""
    out = []
    for record, number in zip(records, numbers or range(1, len(records) + 1)):
        try:
            out.append((encode_text(tok, normalize(pairs_.render(template, record.instruction, record.input))),
                        encode_text(tok, normalize(record.response))))
        except TokenizerError as e:
            raise MakemoreError(f"{name}: record {number}: {e}") from None
    return out


def encode_pairs(seqs: list[tuple[list[int], list[int]]], records: list, numbers: list[int], tok, block_size: int,
                 truncate: bool, name: str) -> Items:
    """Rows of `<eot> prompt response <eot>` cut to `block_size + 1`, targets IGNORE over the prompt
    and the padding; a record that does not fit is an error, or with `truncate` loses its end (a
    prompt that leaves no room for a response token is an error either way)."""
    check_room(seqs, numbers, block_size, truncate, name)
    eot = tok.eot_id
    W = min(block_size, max(2 + len(p) + len(r) for p, r in seqs) - 1)  # the rows' width: a fine-tuned model's block may be far longer
    xs, ys, lengths = [], [], []
    for prompt, response in seqs:
        row = [eot, *prompt, *response, eot][: W + 1]
        n = len(row) - 1
        xs += row[:-1] + [eot] * (W - n)
        ys += [IGNORE] * len(prompt) + row[len(prompt) + 1 :] + [IGNORE] * (W - n)
        lengths.append(n)
    x, y = (torch.tensor(v, dtype=torch.long).view(len(seqs), W) for v in (xs, ys))
    return Items(x=x, y=y, n_chars=sum(len(normalize(r.response)) + 1 for r in records), _lengths=torch.tensor(lengths))


def check_room(seqs: list[tuple[list[int], list[int]]], numbers: list[int], block_size: int, truncate: bool, name: str) -> None:
    """The first record (by number) that does not fit `block_size` positions, as an error; with
    `truncate`, only one whose prompt leaves no room for a response token."""
    for (prompt, response), number in sorted(zip(seqs, numbers), key=lambda s: s[1]):
        n = 1 + len(prompt) + len(response)  # positions: <eot>, the prompt, the response (the end is a target only)
        if n > block_size and (not truncate or len(prompt) + 1 >= block_size):
            hint = "shorten its prompt or use a larger `block_size`" if truncate else "use `truncate` or a larger `block_size`"
            raise MakemoreError(f"{name}: record {number} is {n} tokens, more than the block size ({block_size}); {hint}")


def template_of(record: dict | None) -> str | None:
    """The prompt template a model was trained with (pairs mode), or None."""
    return (record or {}).get("template")


def prompt_ids(tok, template: str | None, instruction: str, label: str) -> list[int]:
    """`<eot>` and the prompt of `instruction` as `template` (default: the Alpaca-style one) writes it: what an answer follows."""
    text = pairs_.render(pairs_.check_template(template or pairs_.DEFAULT_TEMPLATE), normalize(instruction))
    try:
        encode_text(tok, normalize(instruction))
    except TokenizerError as e:
        raise MakemoreError(f"{label} {shown(instruction)}: {e}") from None
    try:
        return [*([tok.eot_id] if tok.has_boundary else []), *encode_text(tok, text)]
    except TokenizerError as e:
        raise MakemoreError(f"the prompt template{'' if template else ' (the default: the model was not trained in pairs mode)'}: {e}") from None


KINDS: dict[str, type[Dataset]] = {"lines": Lines, "text": Text, "pairs": Pairs}
FIRST_KIND = "lines"  # what a checkpoint's data record without a mode was trained on
MODES = (*KINDS, "auto")


def lookup(name: str) -> type[Dataset]:
    if name not in KINDS:
        raise MakemoreError(f"`mode` {shown(name)}: choose one of {', '.join(MODES)}")
    return KINDS[name]


def choose(mode: str, text: str, name: str = "") -> tuple[type[Dataset], str]:
    """The kind asked for (or, with auto, the one the file's name or text says) and why, in words."""
    if mode == "auto" and pairs_.claims(name):
        return Pairs, "a JSON file of records"
    if mode == "auto":
        name, reason = detect_mode(text)
        return KINDS[name], reason
    return lookup(mode), f"`mode` {mode}"


def prepare(path: str | Path | None, seed: int = 1337, tokenizer_path: str | Path | None = None, mode: str = "auto",
            block_size: int | None = None, tok: Tokenizer | None = None, options: dict | None = None) -> Dataset:
    """Read `path` (None: the built-in names), pick its kind, split it by `seed`, encode every split
    once, with `tok` or the tokenizer at `tokenizer_path` (default: the file's characters).
    `options` are the kind's own (`Dataset.build_options`); one given to another kind is an error."""
    if block_size is not None and not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise MakemoreError(f"`block_size` {block_size}: must be from 1 to {MAX_BLOCK_SIZE:,}")
    if mode != "auto":
        lookup(mode)
    tok = tokenizers.load(tokenizer_path) if tokenizer_path else tok
    src = read_source(path)
    kind, reason = choose(mode, src.head, src.name)
    if mode == "auto" and os.path.getsize(src.file) > HEAD_BYTES:
        reason += f" in its first {HEAD_BYTES >> 20} MB"
    given = {k: v for k, v in (options or {}).items() if v}
    for name in given.keys() - set(kind.build_options):
        raise MakemoreError(f"`{name}`: an option of {', '.join(k.kind for k in KINDS.values() if name in k.build_options)} "
                            f"mode; {src.name} is read in {kind.kind} mode")
    if tok is not None:
        kind.check_tokenizer(tok, str(tokenizer_path or "the model's tokenizer"))
    try:
        return kind.build(src, seed, tok, reason, block_size, **given)
    except TokenizerError as e:
        raise MakemoreError(f"{src.name}: {e}") from None


def refuse_options(kind: type[Dataset], given: dict[str, bool], model: str) -> None:
    """An error for the first sampling argument `given` that belongs to another kind than `kind`."""
    for other in KINDS.values():
        for name in other.sample_options:
            if other is not kind and given.get(name) and name not in kind.sample_options:
                label = "`stream`/`no_stream`" if name == "stream" else f"`{name}`"  # a flag pair on the command line
                raise MakemoreError(f"{label}: a {other.kind}-mode option; {model} is a {kind.kind}-mode model")


def kind_of(record: dict | None) -> type[Dataset]:
    """The kind a checkpoint's data record names (lines for a record from before there were kinds)."""
    return KINDS[(record or {}).get("mode", FIRST_KIND)]


def source_of(record: dict | None, where: str) -> Source:
    """The unchanged data file a checkpoint's record names; an error if gone or changed."""
    if not record:
        raise MakemoreError(f"{where}: the checkpoint has no record of its data; pass a FILE to evaluate on")
    src = read_source(record.get("path", record["name"]))
    if src.sha256 != record["sha256"] and src.path.startswith("builtin:"):  # a built-in set renamed since
        src = next((s for s in map(read_source, (f"builtin:{k}" for k in BUILTINS)) if s.sha256 == record["sha256"]), src)
    if src.sha256 != record["sha256"]:
        raise MakemoreError(f"{src.name}: the file has changed since the model was trained on it; pass a FILE to evaluate on")
    return src


def training_items(record: dict | None) -> set[str] | None:
    """What a model with this data record was trained on, as a set to tell new samples from seen ones:
    None where its kind has no such set, or its data file is gone or changed."""
    try:
        src = source_of(record, "the checkpoint")
    except MakemoreError:
        return None
    return kind_of(record).training_items(src, record)
