"""Tokenizer files are JSON; `load` names the file in every error."""

from __future__ import annotations

import json
from pathlib import Path

from safeio import raises
from safeio.files import read_input
from tokenizer.errors import TokenizerError


@raises(TokenizerError)
def load(path: str | Path):
    """The tokenizer saved at `path`; a missing, damaged or other-version file is a TokenizerError naming it."""
    from tokenizer import from_dict

    path = Path(path)
    raw = read_input(path, "tokenizer file", limit=1 << 30)
    try:
        d = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not a tokenizer file (not valid JSON: {e}; truncated?)") from None
    except RecursionError:
        raise TokenizerError(f"{path}: not a tokenizer file (JSON nested too deeply)") from None
    if not isinstance(d, dict):
        raise TokenizerError(f"{path}: not a tokenizer file (JSON but not an object)")
    try:
        return from_dict(d)
    except TokenizerError as e:
        raise TokenizerError(f"{path}: {e}") from None
