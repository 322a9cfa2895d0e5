"""Pre-split patterns: text is cut into chunks by a regex before BPE, and merges never cross chunks.

The strings are tiktoken's own (r50k for GPT-2, cl100k for GPT-4), so an export to tiktoken splits
exactly as we do. They need the `regex` package (possessive quantifiers, \\p{L}); `none` means no
split: the whole text is one chunk (a "basic" tokenizer, fine for small texts only).

Text that is all ASCII (most code and English prose) is split by each pattern's ASCII twin in
Python's own `re` instead, several times faster (docs/performance.md, BPE): on ASCII, \\p{L} is
[A-Za-z], \\p{N} is [0-9] and `regex`'s \\s is [\\t\\n\\v\\f\\r ] (`re`'s \\s also takes \\x1c-\\x1f, so
the twins spell the class out). The chunks are the same (a property test checks); `re` has
possessive quantifiers from Python 3.11, so earlier Pythons always use `regex`.
"""

from __future__ import annotations

import re
import sys

import regex

from tokenizer.errors import TokenizerError
from safeio.files import shown

GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT4 = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
PATTERNS = {"gpt4": GPT4, "gpt2": GPT2, "none": None}

_W = "\\t\\n\\x0b\\x0c\\r "  # regex's \\s, within ASCII
ASCII_CLASSES = [  # regex's classes and their ASCII spellings in `re`, in the order they are replaced
    (r"[^\s\p{L}\p{N}]", f"[^{_W}A-Za-z0-9]"), (r"[^\r\n\p{L}\p{N}]", "[^\\r\\nA-Za-z0-9]"), (r"\p{L}", "[A-Za-z]"),
    (r"\p{N}", "[0-9]"), (r"(?!\S)", f"(?![^{_W}])"), (r"\s", f"[{_W}]"),
]


def ascii_twin(pattern: str) -> str:
    """The built-in `pattern` for ASCII-only text, in `re`'s syntax."""
    for theirs, ours in ASCII_CLASSES:
        pattern = pattern.replace(theirs, ours)
    return pattern


ASCII_TWINS = {p: ascii_twin(p) for p in (GPT2, GPT4)} if sys.version_info >= (3, 11) else {}  # pattern -> its twin

# A chunk always ends at a newline that a letter follows (no alternative of either pattern
# reaches across it), so a stream of text can be cut there and split piece by piece.
SAFE_CUT = regex.compile(r"\n(?=\p{L})")


def resolve(name: str) -> str | None:
    """The regex of a pattern name."""
    if name not in PATTERNS:
        raise TokenizerError(f"unknown pattern {shown(name)}; choose one of: {', '.join(PATTERNS)}")
    return PATTERNS[name]


# Letters, digits, punctuation, spaces, newlines, CJK, combining marks, emoji: a pattern's chunks
# must join back to each of these, or encoding would silently drop text.
PROBES = ["Hello, world! 123 4567 x\n\n  y\t\r\nz  ", "don't I'LL we've", "café e\u0301 한국어 中文 🙂👍🏽 ",
          "def f(x):\n    return x**2  # ok\n", "\x00\x1b[0m ~`!@#$%^&*()_+-=[]{}|;:'\",.<>/?\\"]


def compile_split(pattern: str | None):
    """A function text -> list of chunks."""
    if pattern is None:
        return lambda text: [text] if text else []
    try:
        split = regex.compile(pattern).findall
    except (regex.error, TypeError, ValueError, OverflowError, RecursionError) as e:
        raise TokenizerError(f"the pre-split regex does not compile ({e})") from None
    if pattern not in ASCII_TWINS:
        return split
    fast = re.compile(ASCII_TWINS[pattern]).findall
    return lambda text: fast(text) if text.isascii() else split(text)


def check_covers(pattern: str, name: str = "custom") -> None:
    """The pattern's matches must cover any text: no character may fall between two chunks."""
    split = compile_split(pattern)
    for probe in PROBES:
        if "".join(split(probe)) != probe:
            raise TokenizerError(f"pattern {shown(name)}: its matches do not cover the text (e.g. {shown(probe)}), so encoding would drop characters")
