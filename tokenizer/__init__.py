"""Tokenizers: a character tokenizer and a byte-level BPE tokenizer, usable without makemore.

Both implement one protocol, `Tokenizer` (below); `to_dict()` is a JSON-able description that a
checkpoint carries and `from_dict` turns back into a tokenizer.

    import tokenizer
    tok = tokenizer.train("corpus.txt", vocab_size=4096, special=["<|endoftext|>"])
    tok.save("tok.json"); tok = tokenizer.load("tok.json")
"""

from collections.abc import Iterable
from typing import Protocol

from tokenizer.bpe import EOT, BPETokenizer, readable
from tokenizer.char import CharTokenizer
from tokenizer.errors import TokenizerError
from tokenizer.files import load
from tokenizer.train import train
from safeio.files import shown

__all__ = ["EOT", "BPETokenizer", "CharTokenizer", "Tokenizer", "TokenizerError", "from_dict", "load", "readable", "train"]


class Tokenizer(Protocol):
    """What every tokenizer here offers (and all that makemore uses of one)."""

    kind: str  # "char" or "bpe": the type in `to_dict()`
    vocab_size: int  # one more than the largest id
    has_boundary: bool  # whether an <|endoftext|> id exists (lines mode needs it as the item boundary)
    eot_id: int  # that id (a TokenizerError where there is none)

    def encode(self, text: str) -> list[int]: ...  # special-token strings are an error unless allowed
    def encode_ordinary(self, text: str) -> list[int]: ...  # special-token strings are plain text
    def decode(self, ids: Iterable[int]) -> str: ...
    def decode_bytes(self, ids: Iterable[int]) -> bytes: ...  # a character may be split across ids
    def first_unknown(self, text: str) -> int | None: ...  # where `text` has a character it cannot encode
    def id_to_piece(self, i: int) -> str: ...
    def to_dict(self) -> dict: ...

KINDS = {"char": CharTokenizer, "bpe": BPETokenizer}


def from_dict(d: dict):
    """Rebuild a tokenizer from its `to_dict()` description."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer type {shown(kind)}; known: {', '.join(KINDS)}")
    return KINDS[kind].from_dict(d)
