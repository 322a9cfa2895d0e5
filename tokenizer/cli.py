"""The `tokenizer` command (filled in by the BPE work)."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def main() -> None:
    app()
