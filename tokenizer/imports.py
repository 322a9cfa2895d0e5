"""Import other libraries' byte-level BPE vocabularies as this project's tokenizer.

- A tiktoken rank file: one line per token, its bytes in base64 and its rank. tiktoken encodes by
  merging, again and again, the adjacent pair whose joined bytes have the lowest rank. Each token
  of two or more bytes is recovered as the merge of the two tokens that this very process, run on
  its bytes with only lower ranks allowed, leaves (minbpe's way); merges are in rank order and every
  token keeps its rank as its id, so encoding gives tiktoken's ids. The file holds no pattern and no
  special tokens: name them (`--pattern`, `--special TOKEN=ID`).
- A Hugging Face `tokenizer.json` of a byte-level BPE (GPT-2's byte-to-character table, no
  normaliser): its merges, ids, pre-split regex and added tokens.
- GPT-2's own two files, `vocab.json` (token: id) and `merges.txt` (one merge per line, after a
  `#version` line): read as the tokenizer.json they stand for (ByteLevel with GPT-2's regex, no
  prefix space), `<|endoftext|>` special where the vocabulary has it.
- A named tiktoken encoding (gpt2, cl100k_base, ...), through tiktoken, where it can load it.
Vocabularies that are not byte-level BPE (WordPiece, Unigram, a normaliser, byte fallback) are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from tokenizer.bpe import EOT, BPETokenizer
from tokenizer.errors import TokenizerError
from tokenizer.export import byte_to_unicode, onig_regex
from safeio import raises
from safeio.files import decode_text, read_input, shown
from tokenizer.patterns import PATTERNS


def pattern_name(regex_str: str | None) -> tuple[str, str | None]:
    """A regex as (name, regex): one of ours by name when it is (also as our Hugging Face export
    writes it), else "custom"."""
    for name, known in PATTERNS.items():
        if regex_str in (known, known and onig_regex(known)):
            return name, known
    return "custom", regex_str


def recover_pair(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two tokens that lowest-rank-first merging of `token`'s bytes, below its own rank, ends with."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, at = limit, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best:
                best, at = r, i
        if at < 0:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    if len(parts) != 2:
        raise TokenizerError(f"token {shown(token)} (rank {limit}) cannot be made by merging two lower-ranked tokens")
    return parts[0], parts[1]


def from_ranks(ranks: dict[bytes, int], regex_str: str | None, special: dict[str, int], name: str) -> BPETokenizer:
    """A tokenizer from token bytes -> rank (= id), as tiktoken's `mergeable_ranks`."""
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"{name}: byte 0x{missing[0]:02x} has no token; a byte-level BPE has all 256 bytes")
    if len(set(ranks.values())) != len(ranks):
        raise TokenizerError(f"{name}: two tokens share one rank")
    merged = sorted((r, t) for t, r in ranks.items() if len(t) > 1)
    token_of = {bytes([b]): b for b in range(256)}  # bytes -> token (bytes in byte order, then the merges)
    merges = []
    for r, t in merged:
        a, b = recover_pair(t, ranks)
        merges.append((token_of[a], token_of[b]))
        token_of[t] = 255 + len(merges)
    ids = [ranks[bytes([b])] for b in range(256)] + [r for r, _ in merged]
    pattern, regex_str = pattern_name(regex_str)
    return BPETokenizer(merges, pattern, special, regex_str, ids)


def read_tiktoken_file(path: str | Path) -> dict[bytes, int]:
    text = decode_text(read_input(path, "rank file", limit=1 << 30), str(path))
    ranks = {}
    for k, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise TokenizerError(f"{path}: line {k} is not '<base64 token> <rank>'") from None
    if not ranks:
        raise TokenizerError(f"{path}: empty rank file")
    return ranks


def parse_special(items: list[str]) -> dict[str, int]:
    special = {}
    for item in items:
        token, eq, i = item.rpartition("=")
        if not eq or not token or not i.isdigit():
            raise TokenizerError(f"`special` {shown(item)}: expected TOKEN=ID, such as '<|endoftext|>=50256'")
        special[token] = int(i)
    return special


@raises(TokenizerError)
def import_tiktoken(path: str | Path, pattern: str, special: list[str]) -> BPETokenizer:
    if pattern not in PATTERNS:
        raise TokenizerError(f"unknown pattern {shown(pattern)}; choose one of: {', '.join(PATTERNS)}")
    return from_ranks(read_tiktoken_file(path), PATTERNS[pattern], parse_special(special), str(path))


def import_named(name: str) -> BPETokenizer:
    """A tiktoken encoding by name, through tiktoken (its cache, or the network)."""
    try:
        import tiktoken
    except ImportError:
        raise TokenizerError(f"{name}: tiktoken is not installed (pip install tiktoken); or pass its rank file with `tiktoken` FILE") from None
    try:
        enc = tiktoken.get_encoding(name)
    except Exception as e:  # noqa: BLE001 -- unknown name, no cache and no network: all one message
        first = type(e).__name__ + (f": {str(e).splitlines()[0][:100]}" if str(e) else "")
        raise TokenizerError(f"{name}: tiktoken cannot load it ({first}); pass its rank file with `tiktoken` FILE") from None
    return from_ranks(enc._mergeable_ranks, enc._pat_str, dict(enc._special_tokens), name)


def read_json(path: str | Path, what: str):
    try:
        return json.loads(read_input(path, what, limit=1 << 30))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise TokenizerError(f"{path}: not a {what} (not valid JSON)") from None


@raises(TokenizerError)
def import_huggingface(path: str | Path) -> BPETokenizer:
    return from_huggingface(read_json(path, "tokenizer.json"), str(path))


@raises(TokenizerError)
def import_vocab_merges(vocab_path: str | Path, merges_path: str | Path) -> BPETokenizer:
    """GPT-2's `vocab.json` and `merges.txt`, as the tokenizer.json they stand for."""
    vocab = read_json(vocab_path, "vocab.json")
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{vocab_path}: not a vocab.json (not an object of token: id)")
    text = decode_text(read_input(merges_path, "merges.txt", limit=1 << 30), str(merges_path))
    merges = [line for line in text.splitlines() if line and not line.startswith("#version")]
    special = [{"content": EOT, "id": vocab[EOT]}] if EOT in vocab else []
    d = {"model": {"type": "BPE", "vocab": vocab, "merges": merges}, "added_tokens": special,
         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}}
    return from_huggingface(d, f"{vocab_path} + {merges_path.name if isinstance(merges_path, Path) else merges_path}")


def from_huggingface(d, name: str) -> BPETokenizer:
    """A tokenizer from the parsed JSON of a Hugging Face `tokenizer.json`."""
    model = d.get("model") if isinstance(d, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise TokenizerError(f"{name}: not a BPE tokenizer.json (model type {shown(model.get('type') if isinstance(model, dict) else None)})")
    if d.get("normalizer") is not None or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        raise TokenizerError(f"{name}: only plain byte-level BPE imports (no normaliser, byte fallback or word affixes)")
    regex_str = hf_pattern(d.get("pre_tokenizer"), name)
    to_byte = {c: b for b, c in byte_to_unicode().items()}

    def as_bytes(piece: str) -> bytes:
        try:
            return bytes(to_byte[c] for c in piece)
        except KeyError:
            raise TokenizerError(f"{name}: token {shown(piece)} is not in GPT-2's byte-level alphabet") from None

    raw_vocab, raw_merges = model.get("vocab"), model.get("merges", [])
    if not isinstance(raw_vocab, dict):
        raise TokenizerError(f"{name}: model.vocab is {type(raw_vocab).__name__}, not an object of token: id")
    if not isinstance(raw_merges, list):
        raise TokenizerError(f"{name}: model.merges is {type(raw_merges).__name__}, not a list of pairs")
    vocab = {}
    for piece, i in raw_vocab.items():
        if type(i) is not int or i < 0:
            raise TokenizerError(f"{name}: model.vocab[{shown(piece)}] is {shown(i)}, not a token id")
        vocab[as_bytes(piece)] = i
    if len(set(vocab.values())) != len(vocab):
        raise TokenizerError(f"{name}: model.vocab gives two tokens one id")
    merges = []
    for k, m in enumerate(raw_merges):
        pair = m.split(" ") if isinstance(m, str) else m
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise TokenizerError(f"{name}: model.merges[{k}] is {shown(m)}, not a pair of tokens")
        merges.append(pair)
    ranks = {t: i for t, i in vocab.items() if len(t) == 1}
    if len(ranks) != 256:
        raise TokenizerError(f"{name}: {256 - len(ranks)} of the 256 bytes have no token; a byte-level BPE has all of them")
    token_of = {bytes([b]): b for b in range(256)}
    pairs, ids = [], [vocab[bytes([b])] for b in range(256)]
    for k, m in enumerate(merges):
        a, b = as_bytes(m[0]), as_bytes(m[1])
        if a not in token_of or b not in token_of or a + b not in vocab or a + b in token_of:
            raise TokenizerError(f"{name}: model.merges[{k}] {shown(m)} joins tokens not made before it")
        pairs.append((token_of[a], token_of[b]))
        token_of[a + b] = 255 + len(pairs)
        ids.append(vocab[a + b])
    added = d.get("added_tokens") or []
    if not isinstance(added, list):
        raise TokenizerError(f"{name}: added_tokens is {type(added).__name__}, not a list")
    special = {}
    for k, t in enumerate(added):
        if not isinstance(t, dict) or not isinstance(t.get("content"), str) or not t["content"]:
            raise TokenizerError(f"{name}: added_tokens[{k}] has no content string")
        if type(t.get("id")) is not int or t["id"] < 0:
            raise TokenizerError(f"{name}: added_tokens[{k}] ({shown(t['content'])}) has no integer id")
        special[t["content"]] = t["id"]
    unmade = [t for t, i in vocab.items() if t not in token_of and i not in special.values()]  # added tokens sit in vocab too
    if unmade:
        raise TokenizerError(f"{name}: model.vocab has {len(unmade):,} tokens of several bytes that no merge in model.merges "
                             f"makes (the first: {shown(unmade[0].decode('utf-8', 'replace'))})")
    pattern, regex_str = pattern_name(regex_str)
    return BPETokenizer(pairs, pattern, special, regex_str, ids)


# What Hugging Face's ByteLevel(use_regex=True) splits with (GPT-2's original regex; tiktoken's r50k
# differs from it only in a `\s++$` alternative).
GPT2_BYTELEVEL = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def hf_pattern(pre, name: str) -> str | None:
    """The pre-split regex of a byte-level pre-tokenizer: a Split (isolated) then ByteLevel, or ByteLevel alone."""
    steps = pre.get("pretokenizers", []) if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    regex_str, byte_level = None, False
    for step in steps:
        kind = step.get("type") if isinstance(step, dict) else None
        if kind == "Split" and isinstance(step.get("pattern"), dict) and "Regex" in step["pattern"] \
                and step.get("behavior") == "Isolated" and not step.get("invert"):
            regex_str = step["pattern"]["Regex"]
        elif kind == "ByteLevel" and not step.get("add_prefix_space"):
            byte_level = True
            if step.get("use_regex", True):
                regex_str = regex_str or GPT2_BYTELEVEL
        else:
            raise TokenizerError(f"{name}: pre-tokenizer {shown(kind)} (with these options) is not supported; "
                                 f"byte-level BPE needs a regex Split and ByteLevel without a prefix space")
    if not byte_level:
        raise TokenizerError(f"{name}: no ByteLevel pre-tokenizer: not a byte-level BPE")
    return regex_str
