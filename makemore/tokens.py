"""Text mode's token cache: a data file read as a stream, encoded in parallel, kept as a memory map.

A text-mode run never holds its file in memory. The file is read in blocks of about
`BLOCK_BYTES`, each cut at a place where encoding the pieces gives exactly the ids that encoding
the whole gives (`SAFE_CUT`), and encoded by one process per core into a flat file of token ids
(uint16 where the vocabulary fits, else uint32). A training window or an evaluation reads from a
memory map of that file. The file is kept in a cache (`cache_root`), named by the SHA-256 of the
data file's bytes and of the tokenizer, so the next run on the same file and tokenizer starts
training at once (the hash is remembered with the file's `stat_key`; a file written since is
hashed again).

The three passes over a file, each a bar when it is long:
- `scan`: read the bytes in order, hash them, choose the cuts (the main process);
- `count`: decode (UTF-8, the rules of `safeio.files.decode_text`), normalise (`data.normalize`) and
  count each block: characters, line ends, the set of characters (the worker processes);
- `encode`: encode each block, the two that hold the train/val and val/test cuts in two parts
  (the worker processes), written in order to a temporary file that becomes the entry's token file.
The counts are cached as well (`<sha256>.json`), since the splits and the default character
tokenizer are made from them.

The splits are the ones `data.split_text` cuts from the whole text (the same character offsets),
and their ids the ones `data.encode_stream` gives for each split as one string: tests check both.
An entry is complete when its `.json` record exists and the token file has the length the record
says; a killed encode leaves at most a `.tmp` file, which is never read and is removed by the next
encode or by `makemore data --clear-cache`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore.errors import MakemoreError
from safeio.files import decode_text, write_atomic

FORMAT = 1  # the layout of an entry; a new one is a new folder (`text-v2`), never a misread file
BLOCK_BYTES = 8 << 20  # bytes per block: large enough that a block's overhead is small, small enough for memory
# A block ends at a line end between two printable ASCII characters (not spaces): no chunk of
# GPT-2's or GPT-4's pre-split pattern reaches across such a line end, or ends differently at the
# end of a string (their `\s++$`), NFC composes nothing across it, and it splits no UTF-8 sequence
# or CRLF. Tokenizers without a pattern (or with another) are encoded a split at a time.
SAFE_CUT = re.compile(rb"[\x21-\x7e]\n(?=[\x21-\x7e])")
SPLITS = ("train", "val", "test")
settings: dict = {}  # `folder` and `progress` of every `Cache` a `data.Source` opens (`configure`)


def configure(folder: str | Path | None = None, progress: Callable | None = None) -> None:
    """Where the cache is (`cache_dir`) and how a long pass shows itself: `progress(label, total)`
    returns a function that is given each step's amount."""
    settings.update(folder=folder, progress=progress)


def cache_root(folder: str | Path | None = None) -> Path:
    """Where entries are kept: `folder` (`cache_dir`), else $MAKEMORE_CACHE, else the user's cache
    folder ($XDG_CACHE_HOME or ~/.cache) / makemore."""
    if folder is None:
        folder = os.environ.get("MAKEMORE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "makemore"
    return Path(folder).expanduser() / f"text-v{FORMAT}"


def clear(folder: str | Path | None = None) -> tuple[int, int]:
    """Remove every entry and temporary file of the cache; the count of files and their bytes."""
    root, n, size = cache_root(folder), 0, 0
    if root.is_dir():
        for p in root.iterdir():
            if p.is_file():
                size += p.stat().st_size
                p.unlink(missing_ok=True)
                n += 1
    return n, size


def usage(folder: str | Path | None = None) -> tuple[int, int]:
    """Complete entries in the cache and the bytes of all its files."""
    root = cache_root(folder)
    files = [p for p in root.iterdir() if p.is_file()] if root.is_dir() else []
    return sum(p.name.endswith(".tokens.json") for p in files), sum(p.stat().st_size for p in files)


# The worker processes' side: each reads its own block from the file (the page cache has it). ---

_worker: dict = {}  # the tokenizer and normalisation, set before the pool forks


def read_block(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def block_text(path: str, start: int, end: int, name: str, normalize: Callable[[str], str]) -> str:
    """A block's text as the in-memory reading would have it: decoded, normalised; the file's first
    block through `decode_text` itself (its byte-order mark, UTF-16 and binary checks)."""
    raw = read_block(path, start, end)
    text = decode_text(raw, name) if start == 0 else _decode_later(raw, name)
    return normalize(text)


def _decode_later(raw: bytes, name: str) -> str:
    """A later block: no byte-order mark to drop; an error's line is counted from the block (the caller
    adds the lines before it)."""
    if b"\x00" in raw or not raw.isascii():
        return decode_text(b"\n" + raw, name)[1:]  # a leading line end keeps the UTF-16 sniffing off a block's middle
    return raw.decode("ascii")


def count_block(job: tuple) -> tuple:
    path, start, end, name = job
    try:
        text = block_text(path, start, end, name, _worker["normalize"])
    except MakemoreError as e:
        return None, str(e)
    return (len(text), text.count("\n"), "".join(set(text))), None


def encode_block(job: tuple) -> bytes:
    path, start, end, name, lo, hi, typecode = job
    text = block_text(path, start, end, name, _worker["normalize"])[lo:hi]
    return ids_bytes(_worker["tokenizer"], text, typecode)


def ids_bytes(tok, text: str, typecode: str) -> bytes:
    """The ids of `text` (`encode_ordinary`), packed as uint16 ("H") or uint32 ("I"). Characters are
    mapped by `str.translate` to the characters whose code points are their ids and written as
    UTF-16/32 code units: the same bytes 30x faster than a list of ids (docs/performance.md, big text);
    the caller has checked that the tokenizer knows every character (`Text.streams`)."""
    if tok.kind == "char":
        if "table" not in _worker:
            _worker["table"] = {ord(ch): chr(tok.encode(ch)[0]) for ch in tok.chars}
        return text.translate(_worker["table"]).encode("utf-16-le" if typecode == "H" else "utf-32-le", "surrogatepass")
    return array(typecode, tok.encode_ordinary(text)).tobytes()


def in_parallel(fn: Callable, jobs: list, tokenizer=None, normalize: Callable = None) -> Iterator:
    """`fn` over `jobs` by one process per core, results in order (forked, so nothing is pickled but
    the jobs and results); in this process where there is one core or one job, or where forking a
    process that has loaded torch is not safe (macOS) or possible (Windows)."""
    _worker.clear()
    _worker.update(tokenizer=tokenizer, normalize=normalize)
    workers = min(len(jobs), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if workers <= 1 or not sys.platform.startswith("linux"):
        yield from map(fn, jobs)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(fn, jobs)


# The main process's side. ------------------------------------------------------------------


@dataclass
class Counts:
    """A data file's blocks and what they hold, as the cache keeps them (`<sha256>.json`)."""

    size: int  # bytes
    blocks: list[tuple[int, int]]  # byte offsets [start, end) of each block
    chars: list[int]  # characters of each block, normalised
    newlines: list[int]  # line ends of each block
    charset: str  # every character the file holds, sorted

    @property
    def n_chars(self) -> int:
        return sum(self.chars)

    @property
    def starts(self) -> list[int]:
        """The character offset where each block starts, and the end of the last."""
        starts = [0]
        for c in self.chars:
            starts.append(starts[-1] + c)
        return starts


def scan(path: str, block_bytes: int, progress: Callable[[int], None]) -> tuple[str, list[tuple[int, int]]]:
    """The file's SHA-256 and blocks, in one read: each block ends at the last safe cut in its first
    `block_bytes` (or runs on to the next safe cut, or to the end of the file)."""
    digest, blocks, start = hashlib.sha256(), [], 0
    with open(path, "rb") as f:
        pending = b""
        while True:
            chunk = f.read(block_bytes)
            digest.update(chunk)
            progress(len(chunk))
            pending += chunk
            if not chunk:
                break
            while len(pending) > block_bytes:  # cut the pending bytes at the last safe place before the limit
                cut = last_safe_cut(pending, block_bytes)
                if cut is None:
                    break  # none yet: read on
                blocks.append((start, start + cut))
                start, pending = start + cut, pending[cut:]
        if pending:
            blocks.append((start, start + len(pending)))
    return digest.hexdigest(), blocks


def last_safe_cut(data: bytes, limit: int) -> int | None:
    """The offset just after the last safe line end in `data[:limit]` (searched from the end backwards,
    in growing windows), or the first one after it, or None."""
    window = 1 << 16
    while True:
        lo = max(0, limit - window)
        found = [m.end() for m in SAFE_CUT.finditer(data, lo, limit + 1)]
        if found and found[-1] < len(data):
            return found[-1]
        if lo == 0:
            m = SAFE_CUT.search(data, limit)
            return m.end() if m and m.end() < len(data) else None
        window *= 4


@dataclass
class Entry:
    """A complete cache entry: the token file, and where each split starts in it."""

    tokens: torch.Tensor  # every id of the file, in order (uint16 or uint32, memory-mapped)
    offsets: dict[str, tuple[int, int]]  # split -> [start, end) in tokens
    chars: dict[str, int]  # split -> its characters
    first: dict[str, int]  # split -> characters of its first token (never predicted)

    def split(self, name: str) -> torch.Tensor:
        a, b = self.offsets[name]
        return self.tokens[a:b]


class Cache:
    """The cache of one data file: found by its bytes' hash, filled by `entry` where needed."""

    def __init__(self, path: str | Path, name: str, folder: str | Path | None = None, block_bytes: int = BLOCK_BYTES,
                 progress: Callable | None = None, normalize: Callable[[str], str] = lambda s: s):
        self.path, self.name, self.block_bytes = str(path), name, block_bytes
        self.root = cache_root(folder)
        self.progress = progress or (lambda label, total: (lambda n: None))
        self.normalize = normalize
        self._sha256 = self._blocks = None
        self._counts: Counts | None = None

    def _scan(self) -> None:
        """Read the file once: its hash and its blocks; the hash kept with the file's identity (`stat_key`)."""
        if self._blocks is None:
            stat = stat_key(self.path)  # taken first: a file written during the read is read again next time
            self._sha256, self._blocks = scan(self.path, self.block_bytes, self.progress("reading", stat[0]))
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self.memo_path, json.dumps({"stat": stat, "sha256": self._sha256}).encode())

    @property
    def memo_path(self) -> Path:
        return self.root / f"file-{hashlib.sha256(os.path.abspath(self.path).encode()).hexdigest()[:32]}.json"

    @property
    def sha256(self) -> str:
        """Of the file's bytes: remembered while the file's size, times, inode and device are those it
        was hashed with (any write changes its ctime), else read and hashed again."""
        if self._sha256 is None:
            memo = read_json(self.memo_path)
            if memo and memo.get("stat") == stat_key(self.path):
                self._sha256 = memo["sha256"]
            else:
                self._scan()
        return self._sha256

    def counts(self) -> Counts:
        """The file's blocks and counts, from the cache or counted now (and kept)."""
        if self._counts is not None:
            return self._counts
        record = self.root / f"{self.sha256}.json"
        found = read_json(record)
        if found and found.get("format") == FORMAT and found.get("block_bytes") == self.block_bytes:
            self._counts = Counts(found["size"], [tuple(b) for b in found["blocks"]], found["chars"], found["newlines"],
                                  found["charset"])
            return self._counts
        self._scan()
        jobs = [(self.path, a, b, self.name) for a, b in self._blocks]
        size = self._blocks[-1][1] if self._blocks else 0
        tick = self.progress("counting", size)
        chars, newlines, charset = [], [], set()
        for (a, b), (result, error) in zip(self._blocks, in_parallel(count_block, jobs, normalize=self.normalize)):
            if error:
                raise MakemoreError(self.shifted(error, sum(newlines), a) if a else error)
            chars.append(result[0])
            newlines.append(result[1])
            charset.update(result[2])
            tick(b - a)
        self._counts = Counts(size, self._blocks, chars, newlines, "".join(sorted(charset)))
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(record, json.dumps({"format": FORMAT, "block_bytes": self.block_bytes, "size": self._counts.size,
                                         "blocks": self._blocks, "chars": chars, "newlines": newlines,
                                         "charset": self._counts.charset}).encode())
        return self._counts

    @staticmethod
    def shifted(message: str, lines_before: int, start: int) -> str:
        """A later block's error message (`_decode_later`: one line end put before the block) with its
        line and byte offset counted from the start of the file."""
        message = re.sub(r"line (\d+)", lambda m: f"line {int(m.group(1)) - 1 + lines_before:,}", message, count=1)
        return re.sub(r"byte offset (\d+)", lambda m: f"byte offset {int(m.group(1)) - 1 + start}", message, count=1)

    def line_of(self, ch: str) -> int:
        """The line where `ch` first occurs (for an error message)."""
        counts, lines = self.counts(), 1
        for k, n in enumerate(counts.newlines):
            text = self.text_of(k)
            if ch in text:
                return lines + text.count("\n", 0, text.index(ch))
            lines += n
        return lines

    def text_of(self, k: int) -> str:
        a, b = self.counts().blocks[k]
        return block_text(self.path, a, b, self.name, self.normalize)

    def cut_points(self, shares: tuple[float, ...]) -> list[int]:
        """The character offsets where the splits meet: `data.split_text`'s rule (at each share of the
        characters, back to just after the last line end within 1% of the text), without the text."""
        counts = self.counts()
        n, cuts, starts = counts.n_chars, [], counts.starts
        total = 0.0
        for share in shares[:-1]:
            total += share
            at = int(n * total)
            lo = max(0, at - n // 100)
            k = max(0, next((i for i in range(len(counts.chars)) if starts[i + 1] > at), len(counts.chars) - 1))
            text = self.text_of(k)
            nl = text.rfind("\n", max(0, lo - starts[k]), max(0, at - starts[k]))
            if nl >= 0:
                cut = starts[k] + nl + 1
            elif k > 0 and starts[k] - 1 >= lo:
                cut = starts[k]  # the block before ends with a line end
            else:
                cut = at
            cuts.append(max(cut, cuts[-1]) if cuts else cut)
        return cuts

    def entry(self, tok, shares: tuple[float, ...] | None = (0.90, 0.05, 0.05)) -> Entry:
        """The file's ids by `tok`, in splits cut at `shares` of its characters (None: one split, "all")."""
        counts = self.counts()
        names = SPLITS if shares else ("all",)
        key = f"{self.sha256}-{tokenizer_key(tok)}-{'-'.join(map(str, shares)) if shares else 'all'}"
        found = self.complete(key)
        if found:
            return found
        cuts = self.cut_points(shares) if shares else []
        jobs, owners = self.jobs(counts, cuts, tok)
        typecode = "H" if tok.vocab_size <= 1 << 16 else "I"
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(f".{key}.*.tmp"):  # a killed encode's, not another live one's
            if not alive(stale.name.split(".")[2]):
                stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.{os.getpid()}.", suffix=".tmp", dir=self.root)
        offsets: dict[str, list[int]] = {}
        first: dict[str, int] = {}
        written, tick = 0, self.progress("encoding", counts.size)
        try:
            with os.fdopen(fd, "wb") as out:
                jobs = [(*job, typecode) for job in jobs]
                for (split, nbytes), data in zip(owners, in_parallel(encode_block, jobs, tok, self.normalize)):
                    if split not in first:
                        offsets[split] = [written, written]
                        first[split] = len(tok.decode(list(array(typecode, data[:4 if typecode == "I" else 2])))) if data else 0
                    out.write(data)
                    written += len(data) // array(typecode).itemsize
                    offsets[split][1] = written
                    tick(nbytes)
                out.flush()
                os.fsync(out.fileno())
            final = self.root / f"{key}.tokens"
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for k, split in enumerate(names):  # an empty split starts and ends where the one before ended
            offsets.setdefault(split, [offsets[names[k - 1]][1]] * 2 if k else [0, 0])
        chars = self.split_chars(counts, cuts, names)
        write_atomic(self.root / f"{key}.tokens.json", json.dumps({
            "format": FORMAT, "typecode": typecode, "n_tokens": written, "offsets": offsets, "chars": chars,
            "first": {s: first.get(s, 0) for s in names}, "data_sha256": self.sha256, "tokenizer": tokenizer_key(tok)}).encode())
        return self.complete(key)

    def jobs(self, counts: Counts, cuts: list[int], tok) -> tuple[list[tuple], list[tuple[str, int]]]:
        """The encode jobs in order (a block, or a block's part on either side of a cut) and each one's
        split and bytes (for the bar). A tokenizer whose pattern is not known to be cut safely is given
        each split in one job."""
        names = SPLITS if cuts else ("all",)
        bounds = [0, *cuts, counts.n_chars]
        if not cuts_are_safe(tok):
            return self.whole_splits(counts, bounds, names)
        jobs, owners, start = [], [], 0
        for (a, b), n in zip(counts.blocks, counts.chars):
            for s, (c0, c1) in enumerate(zip(bounds, bounds[1:])):
                part = (max(c0, start) - start, min(c1, start + n) - start)
                if part[1] > part[0]:
                    jobs.append((self.path, a, b, self.name, *part))
                    owners.append((names[s], (b - a) * (part[1] - part[0]) // max(n, 1)))
            start += n
        return jobs, owners

    def whole_splits(self, counts: Counts, bounds: list[int], names: tuple[str, ...]):
        """One job per split: the bytes of the blocks it spans, cut to its characters."""
        starts, jobs, owners = counts.starts, [], []
        for name, c0, c1 in zip(names, bounds, bounds[1:]):
            if c1 <= c0:
                continue
            k0 = max(k for k in range(len(counts.blocks)) if starts[k] <= c0)
            k1 = min(k for k in range(len(counts.blocks)) if starts[k + 1] >= c1)
            a, b = counts.blocks[k0][0], counts.blocks[k1][1]
            jobs.append((self.path, a, b, self.name, c0 - starts[k0], c1 - starts[k0]))
            owners.append((name, b - a))
        return jobs, owners

    @staticmethod
    def split_chars(counts: Counts, cuts: list[int], names: tuple[str, ...]) -> dict[str, int]:
        bounds = [0, *cuts, counts.n_chars]
        return {s: bounds[i + 1] - bounds[i] for i, s in enumerate(names)}

    def complete(self, key: str) -> Entry | None:
        """The entry `key` if it is complete: its record exists and its token file is as long as it says."""
        record = read_json(self.root / f"{key}.tokens.json")
        path = self.root / f"{key}.tokens"
        if not record or record.get("format") != FORMAT or not path.is_file():
            return None
        dtype = torch.uint16 if record["typecode"] == "H" else torch.uint32
        itemsize = 2 if dtype == torch.uint16 else 4
        if path.stat().st_size != record["n_tokens"] * itemsize:
            return None
        tokens = (torch.from_file(str(path), shared=False, size=record["n_tokens"], dtype=dtype) if record["n_tokens"]
                  else torch.zeros(0, dtype=dtype))
        return Entry(tokens, {s: tuple(v) for s, v in record["offsets"].items()}, record["chars"], record["first"])


def stat_key(path: str) -> list[int]:
    """What changes when a file is written, renamed over or replaced: size, modification and change
    times (ns), inode, device. The change time cannot be set back by a program."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def alive(pid: str) -> bool:
    """Whether process `pid` (a temporary file's writer) still runs."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def cuts_are_safe(tok) -> bool:
    """Whether encoding a text block by block gives the ids of encoding it whole (see `SAFE_CUT`)."""
    from tokenizer.patterns import GPT2, GPT4

    return tok.kind == "char" or getattr(tok, "regex", None) in (GPT2, GPT4)


def tokenizer_key(tok) -> str:
    return hashlib.sha256(json.dumps(tok.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
