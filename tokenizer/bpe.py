"""Byte-level BPE: encode any text as UTF-8 bytes (ids 0-255), then apply learned merges by rank.

Merge i joins a pair of ids into the new id 256 + i; special tokens take the ids after the
merges. Encoding splits the text at registered special tokens (when allowed), cuts each piece
into chunks with the pre-split pattern, and merges inside each chunk, lowest rank first, with a
cache of chunk -> ids. Lone surrogates, which UTF-8 cannot hold, are replaced by U+FFFD first,
as tiktoken does; every other str round-trips exactly: decode(encode(s)) == s.

The file format is one JSON object: {"format": "makemore-bpe", "version": 2, "pattern": name,
"regex": the pattern itself, "merges": [[left, right], ...] in rank order, "special": {token: id},
"ids": null, or the id each token has outside (bytes in byte order, then the merges)}. Version 1
(no "ids") is read too. Inside, byte b is token b and merge i makes token 256 + i, always; "ids"
lets an imported vocabulary (GPT-2's and cl100k's permute the single bytes; a Hugging Face file
may put special tokens first) keep its own ids, so encoding gives exactly the ids it gives.
The vocabulary (id -> bytes) is rebuilt from the merges on load, never stored.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from itertools import chain
from pathlib import Path

import regex

from tokenizer.errors import TokenizerError
from safeio.files import write_atomic
from tokenizer.patterns import PATTERNS, check_covers, compile_split
from safeio.files import shown

FORMAT = "makemore-bpe"
VERSION = 2
READS = (1, 2)  # format versions this code reads
EOT = "<|endoftext|>"
CACHE_SIZE = 1 << 20  # chunks whose ids are remembered
NO_MERGE = 1 << 62  # larger than any id: "this pair is not a merge"


def get_stats(ids: list[int], counts: dict | None = None, weight: int = 1) -> dict:
    """Count each adjacent pair of `ids` (overlapping: "aaa" has the pair (a, a) twice)."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids: list[int], pair: tuple[int, int], idx: int) -> list[int]:
    """Replace each occurrence of `pair` in `ids`, left to right, with `idx`."""
    out, i, n = [], 0, len(ids)
    a, b = pair
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def build_vocab(merges: list[tuple[int, int]]) -> list[bytes]:
    """token -> bytes, from the 256 bytes and the merges in rank order."""
    vocab = [bytes([i]) for i in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    return vocab


def readable(data: bytes) -> str:
    """`data` as text, each byte that is not part of a whole UTF-8 character shown as `<d0>` (a token
    may hold half a character; U+FFFD would hide which bytes it holds)."""
    out, i = [], 0
    while i < len(data):
        try:
            out.append(data[i:].decode("utf-8"))
            break
        except UnicodeDecodeError as e:
            out.append(data[i : i + e.start].decode("utf-8"))
            out.append("".join(f"<{b:02x}>" for b in data[i + e.start : i + e.end]))
            i += e.end
    return "".join(out)


def clean(text: str) -> str:
    """Replace lone surrogates (not encodable as UTF-8) by U+FFFD, as tiktoken does."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class BPETokenizer:
    kind = "bpe"

    def __init__(self, merges: Iterable[tuple[int, int]], pattern: str = "gpt4", special: dict[str, int] | None = None,
                 regex_str: str | None = None, ids: list[int] | None = None):
        self.merges = [tuple(m) for m in merges]
        self.pattern = pattern
        self.regex = PATTERNS[pattern] if pattern in PATTERNS else regex_str
        self.special = dict(special or {})
        n = 256 + len(self.merges)
        self.ids = None if ids is None or list(ids) == list(range(n)) else list(ids)  # token -> id outside
        self._check()
        self.vocab = build_vocab(self.merges)  # token -> bytes
        self.id_bytes = dict(zip(self.ids or range(n), self.vocab))  # id -> bytes, for decoding
        self.ranks = {pair: 256 + i for i, pair in enumerate(self.merges)}  # pair -> the id it makes
        self._split = compile_split(self.regex)
        self._special_re = (
            regex.compile("(" + "|".join(regex.escape(s) for s in sorted(self.special, key=len, reverse=True)) + ")")
            if self.special else None
        )
        self._inverse_special = {i: s.encode("utf-8") for s, i in self.special.items()}
        self._cache: dict[str, list[int]] = {}

    def _check(self) -> None:
        for i, pair in enumerate(self.merges):
            if len(pair) != 2 or not all(type(x) is int and 0 <= x < 256 + i for x in pair):
                raise TokenizerError(f"merge {i} is {list(pair)}: each merge must join two ids made before it")
        n = 256 + len(self.merges)
        if self.ids is not None:
            if len(self.ids) != n or not all(type(x) is int and x >= 0 for x in self.ids):
                raise TokenizerError(f"ids must list {n} non-negative integers: one for each byte and merge")
            if len(set(self.ids)) != n:
                raise TokenizerError("ids: two tokens share one id")
        for token, i in self.special.items():
            if not isinstance(token, str) or not token:
                raise TokenizerError(f"special token {shown(token)}: must be a non-empty string")
            if type(i) is not int or i < 0:
                raise TokenizerError(f"special token {shown(token)} has id {shown(i)}; ids are non-negative integers")
        taken = set(self.ids or range(n))
        for token, i in self.special.items():
            if i in taken:
                raise TokenizerError(f"special token {shown(token)} has id {i}, which another token already has")
            taken.add(i)
        if self.regex is None and self.pattern != "none":
            raise TokenizerError(f"unknown pattern {shown(self.pattern)}")
        if self.regex is not None:
            check_covers(self.regex, self.pattern)

    # the shared tokenizer interface

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (imported vocabularies may leave ids unused)."""
        return max([*(self.ids or [255 + len(self.merges)]), *self.special.values()]) + 1

    @property
    def has_boundary(self) -> bool:
        """Whether <|endoftext|> is one of the special tokens (`eot_id`)."""
        return EOT in self.special

    def first_unknown(self, text: str) -> int | None:
        """None: a byte-level BPE encodes any text."""
        return None

    @property
    def eot_id(self) -> int:
        """The id of <|endoftext|>, which makemore uses as the item boundary."""
        if EOT not in self.special:
            raise TokenizerError(f"the tokenizer has no {EOT} special token; train it with `special` '{EOT}'")
        return self.special[EOT]

    def encode(self, text: str, allowed_special: str | Collection[str] = ()) -> list[int]:
        """Ids of `text`. A registered special token in the text is an error unless it is allowed
        (`"all"` or a set of tokens); allowed ones encode as their own id. See `encode_ordinary`."""
        text = clean(text)
        if not self.special:
            return self._encode_clean(text)
        allowed = set(self.special) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special)
        if unknown:
            raise TokenizerError(f"allowed special token {shown(sorted(unknown)[0])} is not registered in this tokenizer")
        found = [m.group() for m in self._special_re.finditer(text)]
        disallowed = [s for s in found if s not in allowed]
        if disallowed:
            raise TokenizerError(
                f"the text contains the special token {disallowed[0]!r}; allow it (allowed_special='all' or "
                f"`allow_special`) or encode it as plain text (encode_ordinary)"
            )
        if not found:
            return self._encode_clean(text)
        ids = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:
                ids.append(self.special[part])
            elif part:
                ids.extend(self._encode_clean(part))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of `text`, with special tokens treated as plain text."""
        return self._encode_clean(clean(text))

    def _encode_clean(self, text: str) -> list[int]:
        """`encode_ordinary` of text that `clean` has already been applied to."""
        chunks = self._split(text)
        cache = self._cache
        missing = set(chunks).difference(cache)
        if len(cache) + len(missing) > CACHE_SIZE:
            cache.clear()  # a crude bound on memory; the cache refills from the text at hand
            missing = set(chunks)
        outside = self.ids
        for chunk in missing:
            tokens = self._encode_chunk(chunk.encode("utf-8"))
            cache[chunk] = tokens if outside is None else [outside[t] for t in tokens]
        return list(chain.from_iterable(map(cache.__getitem__, chunks)))  # no Python-level loop per chunk

    def _encode_chunk(self, data: bytes) -> list[int]:
        """Merge the lowest-ranked pair present until none is left (a pair's rank is the id it makes).
        The leftmost occurrence goes first; another occurrence of the same pair is next, since every
        pair a merge creates ranks after it. Only the two pairs beside a merge change rank."""
        ids = list(data)
        get = self.ranks.get
        made = [get(pair, NO_MERGE) for pair in zip(ids, ids[1:])]  # the id each adjacent pair would make
        while made:
            best = min(made)
            if best == NO_MERGE:
                break
            i = made.index(best)
            ids[i : i + 2] = [best]
            del made[i]
            if i > 0:
                made[i - 1] = get((ids[i - 1], best), NO_MERGE)
            if i < len(made):
                made[i] = get((best, ids[i + 1]), NO_MERGE)
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        parts = []
        for i in ids:
            piece = self.id_bytes.get(i) if type(i) is int else None
            if piece is None:
                piece = self._inverse_special.get(i) if type(i) is int else None
                if piece is None:
                    raise TokenizerError(f"token id {shown(i)} is outside the vocabulary (0..{self.vocab_size - 1})")
            parts.append(piece)
        return b"".join(parts)

    def decode(self, ids: Iterable[int], strict: bool = False) -> str:
        """The text of `ids`. Bytes that are not valid UTF-8 (ids that split a character) become
        U+FFFD, or with `strict` an error."""
        data = self.decode_bytes(ids)
        try:
            return data.decode("utf-8", errors="strict" if strict else "replace")
        except UnicodeDecodeError as e:
            raise TokenizerError(f"ids decode to invalid UTF-8 at byte {e.start} (a character split between tokens)") from None

    def id_to_piece(self, i: int) -> str:
        return readable(self.decode_bytes([i]))

    def merge_list(self) -> list[dict]:
        """The merges in rank order as readable pieces: left + right -> merged, with the merged id."""
        ids = self.ids or range(256 + len(self.merges))
        return [{"rank": r, "id": ids[256 + r], "left": readable(self.vocab[a]), "right": readable(self.vocab[b]),
                 "merged": readable(self.vocab[256 + r])} for r, (a, b) in enumerate(self.merges)]

    # files

    def to_dict(self) -> dict:
        return {
            "type": self.kind, "format": FORMAT, "version": VERSION, "pattern": self.pattern,
            "regex": self.regex, "merges": [list(m) for m in self.merges], "special": self.special,
            "ids": self.ids,
        }

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        if d.get("format") != FORMAT:
            raise TokenizerError(f"not a {FORMAT} tokenizer (format {shown(d.get('format'))})")
        if d.get("version") not in READS:
            raise TokenizerError(f"tokenizer format version {shown(d.get('version'))}; this tokenizer reads versions "
                                 f"{' and '.join(map(str, READS))}")
        try:
            if not isinstance(d["merges"], list) or not isinstance(d.get("special") or {}, dict):
                raise TypeError("merges must be a list and special an object")
            return cls(d["merges"], d["pattern"], d.get("special") or {}, d.get("regex"), d.get("ids"))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, TokenizerError):
                raise
            raise TokenizerError(f"damaged tokenizer description ({type(e).__name__}: {e})") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_atomic(path, (json.dumps(self.to_dict(), ensure_ascii=False) + "\n").encode("utf-8"))
        return path
