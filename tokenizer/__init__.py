"""Tokenizers for makemore: a character tokenizer and a byte-level BPE tokenizer.

Both share one small interface: `encode(str) -> list[int]`, `decode(ids) -> str`,
`vocab_size`, `eot_id` (the item boundary / end-of-text id) and `to_dict()`, a JSON-able
description that a checkpoint carries and `from_dict` turns back into a tokenizer.
"""

from tokenizer.char import CharTokenizer
from tokenizer.errors import TokenizerError

__all__ = ["CharTokenizer", "TokenizerError", "from_dict"]


def from_dict(d: dict):
    """Rebuild a tokenizer from its `to_dict()` description."""
    kinds = {"char": CharTokenizer}
    try:
        from tokenizer.bpe import BPETokenizer
        kinds["bpe"] = BPETokenizer
    except ImportError:  # the BPE module is optional for char-only use
        pass
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in kinds:
        raise TokenizerError(f"unknown tokenizer type {kind!r}; known: {', '.join(kinds)}")
    return kinds[kind].from_dict(d)
