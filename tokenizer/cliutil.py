"""Small pieces both command-line tools share: error handling and the stderr console.

Bad input raises a project error in the library; `clean_errors` turns it into one red line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys

import typer
from rich.console import Console
from rich.text import Text

from tokenizer.errors import TokenizerError

stderr = Console(stderr=True, highlight=False)


def fail(message: str) -> typer.Exit:
    stderr.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(2)


def clean_errors(*errors: type[Exception]):
    """Decorate a command so that `errors` (and TokenizerError) end it with one line and exit code 2."""
    caught = (TokenizerError, *errors)

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except caught as e:
                raise fail(str(e)) from None

        return wrapper

    return decorate


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
