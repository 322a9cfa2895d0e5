"""BPE training: learn merges from a corpus, fast enough for 100 MB on a laptop, and exact.

1. Stream the corpus and count its pre-split chunks: memory grows with the number of distinct
   chunks, not with the file.
2. Count adjacent pairs over the distinct chunks (each weighted by how often it occurs), and
   remember which chunks hold each pair.
3. Repeatedly take the most frequent pair from a heap (ties: the smallest pair of ids, the rule
   Hugging Face's trainer uses too), merge it in only the chunks that hold it, and update the
   counts of just the pairs next to each merge, which those chunks lose and gain. Stale heap
   entries are skipped on pop.
The result is exactly what the plain loop over the whole text produces (the tests check this).
Training stops early when the best pair occurs fewer than `min_frequency` times.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import regex

from tokenizer.bpe import BPETokenizer
from tokenizer.errors import TokenizerError
from safeio import raises
from safeio.files import check_readable, read_blocks
from tokenizer.patterns import SAFE_CUT, compile_split, resolve

MAX_VOCAB = 1 << 20  # beyond this a vocabulary is surely a typo
LAST_SAFE_CUT = regex.compile(SAFE_CUT.pattern, regex.REVERSE)
MAX_UNCUT = 64 << 20  # characters held while waiting for a safe cut (text with no newlines)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def count_chunks(blocks: Iterable[str], pattern: str | None) -> Counter:
    """Distinct pre-split chunks of the text and their counts, splitting the stream at safe cuts."""
    split = compile_split(pattern)
    counts: Counter = Counter()
    buf = ""
    for text in blocks:
        buf += text
        if pattern is None:
            continue
        cut = LAST_SAFE_CUT.search(buf)
        if cut:  # split up to and including the letter after the cut, then drop that letter's chunk
            counts.update(split(buf[: cut.end() + 1])[:-1])
            buf = buf[cut.end() :]
        elif len(buf) > MAX_UNCUT:
            counts.update(split(buf))  # no safe cut in 64M characters: a chunk may be split here
            buf = ""
    counts.update(split(buf))
    return counts


# below this, starting a second process costs more than it saves (forking one takes tens of
# milliseconds; docs/performance.md, BPE); spawning one (where there is no fork) re-imports everything
PARALLEL_MIN_BYTES = (1 << 20) if hasattr(os, "fork") else (8 << 20)


def cut_points(path: Path, parts: int) -> list[int]:
    """Byte offsets that split the file into about `parts` pieces, each cut just after a newline that
    a letter follows (a chunk boundary for every pattern, see `SAFE_CUT`)."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        for k in range(1, parts):
            base = size * k // parts
            f.seek(base)
            window = f.read(1 << 20)
            lead = 0
            while lead < len(window) and window[lead] & 0xC0 == 0x80:  # the rest of a character cut by the seek
                lead += 1
            text = window[lead:].decode("utf-8", errors="ignore")  # (invalid bytes fail later, in the worker that reads them)
            m = SAFE_CUT.search(text)
            if m is None:
                continue
            at = base + lead + len(text[: m.end()].encode("utf-8"))
            if at > cuts[-1] and at < size:
                cuts.append(at)
    return cuts + [size]


def _count_range(args: tuple[str, int, int, str | None]) -> Counter:
    path, start, end, pattern = args
    return count_chunks(read_blocks(path, start=start, end=end), pattern)


def count_file(path: str | Path, pattern: str | None, workers: int | None = None) -> Counter:
    """`count_chunks` of a file, in `workers` processes (default: the cores, for files of 8 MB and
    more) over pieces cut at safe places; counts add up, so the result is the same."""
    path = Path(path)
    check_readable(path, "corpus")
    workers = workers or (min(os.cpu_count() or 1, 8) if path.stat().st_size >= PARALLEL_MIN_BYTES else 1)
    cuts = cut_points(path, workers) if workers > 1 and pattern is not None else [0, None]
    if len(cuts) <= 2:
        return count_chunks(read_blocks(path), pattern)
    jobs = [(str(path), a, b, pattern) for a, b in zip(cuts, cuts[1:])]
    with multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(len(jobs)) as pool:
        parts = pool.map(_count_range, jobs)
    total = parts[0]
    for part in parts[1:]:
        total.update(part)
    return total


def merge_counting(word: list[int], pair: tuple[int, int], idx: int, f: int, changes: dict,
                   where: dict[tuple[int, int], set[int]], w: int) -> list[int]:
    """`merge(word, pair, idx)`, also adding to `changes` how the counts of the neighbouring pairs
    move: at each merge (prev, a) and (b, next) are lost and (prev, idx), (idx, next) gained, `f`
    times each. Consecutive merges ("abab") cancel out right: (X, a) is gained, then lost again.
    The word's index `w` joins `where` for each pair gained (a superset, as `where` may be)."""
    a, b = pair
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == a and word[i + 1] == b:
            if out:
                prev = out[-1]
                changes[prev, a] = changes.get((prev, a), 0) - f
                changes[prev, idx] = changes.get((prev, idx), 0) + f
                where.setdefault((prev, idx), set()).add(w)
            if i + 2 < n:
                nxt = word[i + 2]
                changes[b, nxt] = changes.get((b, nxt), 0) - f
                changes[idx, nxt] = changes.get((idx, nxt), 0) + f
                where.setdefault((idx, nxt), set()).add(w)
            out.append(idx)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def learn_merges(chunks: dict[str, int], n_merges: int, min_frequency: int = 1, on_progress: Progress | None = None) -> list[tuple[int, int]]:
    """Up to `n_merges` merges from distinct chunks and their counts."""
    words = [list(chunk.encode("utf-8")) for chunk in chunks]
    freqs = list(chunks.values())
    stats: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}  # pair -> chunks that hold it (or once held it: checked on use)
    for w, ids in enumerate(words):
        f = freqs[w]
        for pair in zip(ids, ids[1:]):
            stats[pair] = stats.get(pair, 0) + f
            where.setdefault(pair, set()).add(w)
    heap = [(-c, pair) for pair, c in stats.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while heap and len(merges) < n_merges:
        negative, pair = heapq.heappop(heap)
        if stats.get(pair, 0) != -negative:
            continue  # stale: the count changed after this entry was pushed
        if -negative < min_frequency:
            break
        idx = 256 + len(merges)
        merges.append(pair)
        changes: dict[tuple[int, int], int] = {}
        a, b = pair
        for w in where.pop(pair):
            if a in words[w] and b in words[w]:  # else stale: the word lost the pair to an earlier merge
                words[w] = merge_counting(words[w], pair, idx, freqs[w], changes, where, w)
        del stats[pair]  # every occurrence is merged
        for p, d in changes.items():
            if d and p != pair:
                c = stats.get(p, 0) + d
                if c > 0:
                    stats[p] = c
                    heapq.heappush(heap, (-c, p))
                else:
                    stats.pop(p, None)
        if on_progress:
            on_progress("merges", len(merges), n_merges)
    return merges


def check_vocab_size(vocab_size: int, n_special: int) -> int:
    """The number of merges a vocabulary of `vocab_size` leaves room for."""
    if vocab_size < 256 + n_special:
        raise TokenizerError(f"`vocab_size` {vocab_size}: must be at least 256 (bytes) + {n_special} (special tokens)")
    if vocab_size > MAX_VOCAB:
        raise TokenizerError(f"`vocab_size` {vocab_size}: absurdly large (at most {MAX_VOCAB:,})")
    return vocab_size - 256 - n_special


@raises(TokenizerError)
def train(
    corpus: str | Path | Iterable[str],
    vocab_size: int,
    pattern: str = "gpt4",
    special: Iterable[str] = (),
    min_frequency: int = 2,
    on_progress: Progress | None = None,
) -> BPETokenizer:
    """Train a byte-level BPE tokenizer on a file (a path) or on text (an iterable of str blocks)."""
    special = list(dict.fromkeys(special))
    if any(not s for s in special):
        raise TokenizerError("`special`: a special token cannot be empty")
    n_merges = check_vocab_size(vocab_size, len(special))
    if min_frequency < 1:
        raise TokenizerError(f"`min_frequency` {min_frequency}: must be at least 1")
    regex_str = resolve(pattern)
    name = str(corpus) if isinstance(corpus, (str, Path)) else "the corpus"
    if on_progress:
        on_progress("counting chunks", 0, 1)
    chunks = count_file(corpus, regex_str) if isinstance(corpus, (str, Path)) else count_chunks(corpus, regex_str)
    if not any(chunk.strip() for chunk in chunks):
        raise TokenizerError(f"{name}: empty corpus (nothing but whitespace): only the 256 byte tokens can be learned")
    merges = learn_merges(chunks, n_merges, min_frequency, on_progress)
    n = 256 + len(merges)
    return BPETokenizer(merges, pattern, {s: n + i for i, s in enumerate(special)})
