"""Reading and writing files safely, for both command-line tools (makemore and tokenizer).

- `write_atomic`: a temporary file in the same folder, fsync, `os.replace`; the new file gets the
  mode a plain `open()` would give (the old file's mode, or 0666 less the umask).
- `check_output`: refuse, before any work, an output that cannot be written or would replace a file it
  must not (an input, a training run's own file, a file of another kind).
- `read_input` / `decode_text`: a whole input file (regular files only, bounded in size) as UTF-8
  text, with one clear error for binary, UTF-16 and invalid UTF-8 data; stdin goes through the same rule.
- `read_blocks`: stream a UTF-8 corpus in blocks (an invalid byte is reported with its offset).
"""

from __future__ import annotations

import math
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from safeio import UsageError

MAX_INPUT_BYTES = 2 << 30  # a whole-file input larger than this is refused (read into memory at once)


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: Path, data: bytes | Iterable[bytes | memoryview]) -> None:
    """Write `data` (bytes, or pieces written one after another) to `path` so that a crash leaves
    either the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)  # re-saving keeps the file's mode, as open() would
    except FileNotFoundError:
        mode = _new_file_mode()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None  # the error names the file asked for, not the temporary one
    try:
        with os.fdopen(fd, "wb") as f:
            for piece in [data] if isinstance(data, (bytes, bytearray)) else data:
                f.write(piece)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


RUN_FILES = ("model.safetensors", "last.safetensors", "metrics.jsonl", "diagnostics.jsonl")  # what a training run owns in its folder


def kind_of(path: Path) -> str:
    """What an existing file holds, from its first bytes: png, safetensors, json or text (anything else)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return "text"
    if head.startswith(b"\x89PNG"):
        return "png"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "text"


def check_output(path: str | Path, what: str = "output file", inputs: Iterable[str | Path | None] = (),
                 kind: str | None = None, owner: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written (a folder, under a file, in an
    unwritable folder) or whose existing file must not be replaced: one of `inputs`, a file a training
    run owns (`RUN_FILES` beside a checkpoint), or a file of another kind than the `kind` written
    (png, safetensors, json, text). The one rule for every command's outputs; creates nothing.
    `owner`: the caller is the training run writing its own folder (its run lock says it is the only one)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; name a file instead")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise UsageError(f"{path}: is also an input of this command; write the {what} somewhere else")
    if path.is_file() and not owner:
        if path.name in RUN_FILES and any((path.parent / name).is_file() for name in RUN_FILES[:2]):
            raise UsageError(f"{path}: belongs to the training run in {path.parent}; write the {what} somewhere else")
        found = kind_of(path)
        if kind is not None and found != kind:
            raise UsageError(f"{path}: already holds a {found} file, not a {what}; write the {what} somewhere else")
    check_folder(path.parent, f"the folder of {path}")
    return path


def check_folder(folder: str | Path, label: str | None = None) -> Path:
    """`folder` exists as a writable folder, or can be made: no part of it is a file."""
    folder = Path(folder)
    label = label or str(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{label}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{label}: folder {existing} is not writable")
    return folder


def check_readable(path: Path, what: str = "file") -> None:
    """`path` is an existing regular file: not a folder, device or pipe (which could block or never end)."""
    if not path.exists():
        raise UsageError(f"{path}: no such {what}")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a {what}")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file (a device or a pipe); copy it to a regular file first")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: permission denied (cannot read the {what})")


def read_input(path: str | Path, what: str = "file", limit: int = MAX_INPUT_BYTES) -> bytes:
    """All bytes of a regular file of at most `limit` bytes."""
    path = Path(path)
    check_readable(path, what)
    size = path.stat().st_size
    if size > limit:
        raise UsageError(f"{path}: {size / 2**30:.1f} GiB; a {what} may be at most {limit / 2**30:.0f} GiB")
    return path.read_bytes()


def looks_like_utf16(raw: bytes) -> bool:
    """A UTF-16 byte-order mark, or (mostly ASCII text in UTF-16) a zero in nearly every other byte."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    head = raw[:4096]
    half = len(head) // 2
    zeros = sorted((head[0::2].count(0), head[1::2].count(0)))
    return half >= 4 and zeros[1] >= 0.9 * half and zeros[0] < 0.1 * half


def decode_text(raw: bytes, name: str, what: str = "UTF-8 text") -> str:
    """`raw` as text; binary data, UTF-16 and invalid UTF-8 are errors naming `name` and where."""
    if looks_like_utf16(raw):
        raise UsageError(f"{name}: looks like UTF-16; convert it to UTF-8 first (e.g. iconv -f UTF-16 -t UTF-8)")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise UsageError(f"{name}: binary file (NUL byte on line {line}); expected {what}")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UsageError(f"{name}: not UTF-8 text (bad byte at line {line}, byte offset {e.start}: 0x{raw[e.start]:02x})") from None


def read_stdin(name: str = "standard input") -> str:
    """Standard input as bytes, decoded by the same rule as a file (no silent U+FFFD)."""
    stream = getattr(sys.stdin, "buffer", None)
    raw = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
    return decode_text(raw, name)


SHOWN = 200  # characters of a user's input that a message echoes at most


def shown(value, limit: int = SHOWN) -> str:
    """`repr(value)` for a message, cut to about `limit` characters: a message never echoes a whole
    prompt, file line or 5,000-digit number back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}…({len(text) - limit + 20:,} more characters)"


def finite(obj):
    """`obj` with NaN and infinities replaced by None: JSON has no words for them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def read_blocks(path: str | Path, block_size: int = 1 << 20, start: int = 0, end: int | None = None) -> Iterator[str]:
    """The text of a UTF-8 file (bytes `start` to `end`, which must fall between characters) in
    blocks of about `block_size` bytes, never splitting a character."""
    path = Path(path)
    check_readable(path, "corpus")
    offset, pending = start, b""
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            raw = f.read(block_size if end is None else max(0, min(block_size, end - f.tell())))
            if offset == 0 and not pending and looks_like_utf16(raw[:4096]):
                raise UsageError(f"{path}: looks like UTF-16; convert it to UTF-8 first (e.g. iconv -f UTF-16 -t UTF-8)")
            data = pending + raw
            if not data:
                return
            try:
                text, pending = data.decode("utf-8"), b""
            except UnicodeDecodeError as e:
                if not (raw and e.reason == "unexpected end of data"):
                    raise UsageError(f"{path}: not UTF-8 (invalid byte 0x{data[e.start]:02x} at byte offset {offset + e.start})") from None
                text, pending = data[: e.start].decode("utf-8"), data[e.start :]
            offset += len(data) - len(pending)
            yield text
