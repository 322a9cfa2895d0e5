"""Character-level tokenizer: one id per character seen in the training items, plus one boundary id.

Id 0 is the boundary token that both starts and ends an item (as in the reference makemore);
the characters follow in sorted order. It does not handle characters it never saw: encoding
one is an error that names it, because a model has no embedding for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizer.errors import TokenizerError
from safeio.files import shown

BOUNDARY = "<|endoftext|>"  # shown for the boundary id by `id_to_piece`, never part of decoded text


class CharTokenizer:
    """Maps each known character to one id; id 0 is the item boundary."""

    kind = "char"

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise TokenizerError("character tokenizer: the character list has duplicates")
        self.chars = "".join(sorted(chars))
        self._stoi = {ch: i + 1 for i, ch in enumerate(self.chars)}

    @classmethod
    def from_items(cls, items: Iterable[str]) -> CharTokenizer:
        """The tokenizer whose vocabulary is every character that occurs in `items`."""
        return cls("".join(set().union(*map(set, items))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @property
    def eot_id(self) -> int:
        """The id that starts and ends every item."""
        return 0

    has_boundary = True  # id 0, always
    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[ch] for ch in text]
        except KeyError as e:
            raise TokenizerError(f"character {shown(e.args[0])} is not in the tokenizer's vocabulary") from None

    def encode_ordinary(self, text: str) -> list[int]:
        """The same as `encode`: the boundary has no text of its own, so no string can mean it."""
        return self.encode(text)

    def first_unknown(self, text: str) -> int | None:
        """The index of the first character of `text` not in the vocabulary, or None."""
        unknown = set(text) - self._stoi.keys()
        return min(text.index(ch) for ch in unknown) if unknown else None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; boundary ids decode to nothing."""
        out = []
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})")
            if i:
                out.append(self.chars[i - 1])
        return "".join(out)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def id_to_piece(self, i: int) -> str:
        return BOUNDARY if i == 0 else self.chars[i - 1]

    def to_dict(self) -> dict:
        return {"type": self.kind, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        if not isinstance(d.get("chars"), str):
            raise TokenizerError("character tokenizer: 'chars' must be a string")
        return cls(d["chars"])
