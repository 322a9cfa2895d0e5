"""Tokenizers for makemore: a character tokenizer and a byte-level BPE tokenizer.

Both share one small interface: `encode(str) -> list[int]`, `decode(ids) -> str`,
`vocab_size`, `eot_id` (the item boundary / end-of-text id) and `to_dict()`, a JSON-able
description that a checkpoint carries and `from_dict` turns back into a tokenizer.

    import tokenizer
    tok = tokenizer.train("corpus.txt", vocab_size=4096, special=["<|endoftext|>"])
    tok.save("tok.json"); tok = tokenizer.load("tok.json")
"""

from tokenizer.bpe import BPETokenizer
from tokenizer.char import CharTokenizer
from tokenizer.errors import TokenizerError
from tokenizer.files import load
from tokenizer.train import train
from tokenizer.files import shown

__all__ = ["BPETokenizer", "CharTokenizer", "TokenizerError", "from_dict", "load", "train"]

KINDS = {"char": CharTokenizer, "bpe": BPETokenizer}


def from_dict(d: dict):
    """Rebuild a tokenizer from its `to_dict()` description."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer type {shown(kind)}; known: {', '.join(KINDS)}")
    return KINDS[kind].from_dict(d)
