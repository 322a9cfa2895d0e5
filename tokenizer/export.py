"""Export a BPE tokenizer for other libraries: tiktoken's rank file and Hugging Face's tokenizer.json.

Both formats key tokens by their bytes, so a vocabulary in which two merges make the same bytes
cannot be expressed: that is an error naming the token. tiktoken's rank file holds only the
mergeable tokens; pass the pattern and the special tokens to `tiktoken.Encoding` yourself
(`tokenizer export` prints them). tiktoken caches rank files by path, so after exporting again to
the same path, load it with TIKTOKEN_CACHE_DIR="" (no cache) or use a new name. The
tokenizer.json is complete: pattern, merges, specials.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import regex

from tokenizer.bpe import BPETokenizer
from tokenizer.errors import TokenizerError
from safeio.files import write_atomic
from safeio.files import shown

WHOLE_TEXT = r"[\s\S]+"  # the pattern "none" as a regex, for libraries that need one


def check_unique(tok: BPETokenizer) -> None:
    seen: dict[bytes, int] = {}
    for i, b in sorted(tok.id_bytes.items()):
        if b in seen:
            raise TokenizerError(f"tokens {seen[b]} and {i} have the same bytes {shown(b)}; this format cannot hold both")
        seen[b] = i


def tiktoken_ranks(tok: BPETokenizer) -> str:
    """tiktoken's rank file: one line per token, its bytes in base64 and its rank (= our id)."""
    check_unique(tok)
    return "".join(f"{base64.b64encode(b).decode('ascii')} {i}\n" for i, b in sorted(tok.id_bytes.items()))


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, which byte-level tokenizer.json files use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def onig_regex(pattern: str) -> str:
    """The pattern for Hugging Face's regex engine (Oniguruma), where `x{1,3}+` means "(x{1,3})+", not a
    possessive {1,3}: drop the possessive mark there. (Nothing follows it in its alternative, so it
    matches the same.)"""
    return regex.sub(r"(\{\d+(?:,\d*)?\})\+", r"\1", pattern)


def huggingface_json(tok: BPETokenizer) -> dict:
    """A complete Hugging Face `tokenizer.json` for a byte-level BPE with no normaliser."""
    check_unique(tok)
    to_str = byte_to_unicode()

    def piece(token: int) -> str:  # a token (bytes in byte order, then the merges) as GPT-2's printable string
        return "".join(to_str[b] for b in tok.vocab[token])

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    pre = [{"type": "Split", "pattern": {"Regex": onig_regex(tok.regex)}, "behavior": "Isolated", "invert": False}] if tok.regex else []
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for s, i in tok.special.items()
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [*pre, byte_level]},
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {piece(t): i for t, i in enumerate(tok.ids or range(len(tok.vocab)))},
            "merges": [[piece(a), piece(b)] for a, b in tok.merges],
        },
    }


FORMATS = ("tiktoken", "huggingface")


def export(tok: BPETokenizer, fmt: str, path: str | Path) -> Path:
    if fmt not in FORMATS:
        raise TokenizerError(f"`format` {shown(fmt)}: choose one of {', '.join(FORMATS)}")
    text = tiktoken_ranks(tok) if fmt == "tiktoken" else json.dumps(huggingface_json(tok), ensure_ascii=False, indent=1)
    path = Path(path)
    write_atomic(path, text.encode("utf-8"))
    return path
