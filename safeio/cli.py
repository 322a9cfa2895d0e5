"""Small pieces both command-line tools share: error handling and the stderr console.

Bad input raises a `UsageError` (each package has its own subclass) in the library; `clean_errors`
turns it into one red line on stderr and exit code 2, never a traceback. The library names its
arguments in backquotes (`top_p`); `flags` turns them into the options a user typed (--top-p).
An operating-system error (a file that cannot be read or written) and running out of memory are
reported the same way, as a last line of defence behind the checks made before any work starts. Typer's own usage errors (a bad integer, a
missing file argument) become one line too. Nothing the user typed is read as rich markup: both
consoles have markup off, and styles are given as `Text` objects.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys

import typer
from rich.console import Console
from rich.text import Text
from typer import rich_utils

from safeio import UsageError
from safeio.files import finite

stderr = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)  # a message is one line, however long


def flags(message: str) -> str:
    """The library's `argument` names as the command-line options they come from: `top_p` -> --top-p, `n` -> -n."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: "-n" if m[1] == "n" else "--" + m[1].replace("_", "-"), message)


def fail(message: str) -> typer.Exit:
    if os.environ.get("RANK", "0") != "0":  # under torchrun every rank meets the same bad input: rank 0 says it
        return typer.Exit(2)
    stderr.print(Text.assemble(("error: ", "bold red"), flags(" ".join(str(message).split("\n")))), soft_wrap=True)
    return typer.Exit(2)


def os_error_message(e: OSError) -> str:
    where = e.filename if e.filename is not None else "file"
    return f"{where}: {e.strerror or type(e).__name__}"


def clean_errors(*errors: type[Exception]):
    """Decorate a command so that a UsageError (and `errors`) end it with one line and exit code 2."""
    caught = (UsageError, *errors)

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except caught as e:
                raise fail(str(e)) from None
            except OSError as e:
                raise fail(os_error_message(e)) from None
            except MemoryError:
                raise fail("out of memory; use a smaller model, batch or data file") from None

        return wrapper

    return decorate


def _one_line_usage_error(e) -> None:
    """Typer's usage errors as one line ("error: Invalid value for '--top': ..."), like ours."""
    if type(e).__name__ == "NoArgsIsHelpError":
        return
    ctx = getattr(e, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    stderr.print(Text.assemble(("error: ", "bold red"), " ".join(e.format_message().split()) + hint), soft_wrap=True)


rich_utils.rich_format_error = _one_line_usage_error  # typer looks it up when a usage error happens


def tolerant_streams() -> None:
    """A character the terminal's encoding cannot show (PYTHONIOENCODING=ascii, a C locale) is written
    as an escape such as \\xe9, never a UnicodeEncodeError halfway through the output."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(finite(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
