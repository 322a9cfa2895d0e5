"""Reading and writing files safely: atomic writes, tokenizer files with clear errors, and
streaming a UTF-8 corpus in blocks (an invalid byte is reported with its offset)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tokenizer.errors import TokenizerError


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_readable(path: Path, what: str = "file") -> None:
    if not path.exists():
        raise TokenizerError(f"{path}: no such {what}")
    if path.is_dir():
        raise TokenizerError(f"{path}: is a directory, not a {what}")


def load(path: str | Path):
    """The tokenizer saved at `path`; a missing, damaged or other-version file is a TokenizerError naming it."""
    from tokenizer import from_dict

    path = Path(path)
    check_readable(path, "tokenizer file")
    try:
        d = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not a tokenizer file (not valid JSON: {e}; truncated?)") from None
    if not isinstance(d, dict):
        raise TokenizerError(f"{path}: not a tokenizer file (JSON but not an object)")
    try:
        return from_dict(d)
    except TokenizerError as e:
        raise TokenizerError(f"{path}: {e}") from None


def read_blocks(path: str | Path, block_size: int = 1 << 20) -> Iterator[str]:
    """The text of a UTF-8 file in blocks of about `block_size` bytes, never splitting a character."""
    path = Path(path)
    check_readable(path, "corpus")
    offset, pending = 0, b""
    with open(path, "rb") as f:
        while True:
            raw = f.read(block_size)
            data = pending + raw
            if not data:
                return
            try:
                text, pending = data.decode("utf-8"), b""
            except UnicodeDecodeError as e:
                if not (raw and e.reason == "unexpected end of data"):
                    raise TokenizerError(f"{path}: not UTF-8 (invalid byte 0x{data[e.start]:02x} at byte offset {offset + e.start})") from None
                text, pending = data[: e.start].decode("utf-8"), data[e.start :]
            offset += len(data) - len(pending)
            yield text
