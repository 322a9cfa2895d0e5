"""The `tokenizer` command: train, encode, decode, inspect, merges, stats, export. Each command parses,
calls one library function and renders; bad input is one red line and exit code 2."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import tokenizer as tk
from tokenizer import imports
from safeio.cli import clean_errors, print_json, stderr, tolerant_streams
from tokenizer.errors import TokenizerError
from tokenizer.export import FORMATS, WHOLE_TEXT, export as export_tokenizer
from safeio.files import check_output, check_readable, decode_text, read_blocks, read_input, read_stdin, shown
from tokenizer.patterns import PATTERNS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train and apply byte-level BPE tokenizers.")
out = Console(highlight=False, markup=False, soft_wrap=True)

TokOpt = Annotated[Path, typer.Option("--tokenizer", "-t", help="Tokenizer file (from `tokenizer train`).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def load_bpe(path: Path) -> tk.BPETokenizer:
    tok = tk.load(path)
    if not isinstance(tok, tk.BPETokenizer):
        raise TokenizerError(f"{path}: a {tok.kind} tokenizer; this command needs a BPE tokenizer")
    return tok


def read_text(text: str | None, file: Path | None) -> str:
    if text is not None and file is not None:
        raise TokenizerError("give TEXT or --file, not both")
    if file is not None:
        return decode_text(read_input(file), str(file))
    return text if text is not None else read_stdin()


@app.command()
@clean_errors()
def train(
    corpus: Annotated[Path, typer.Argument(help="UTF-8 text to learn from.")],
    vocab_size: Annotated[int, typer.Option(help="Tokens in all: 256 bytes + merges + special tokens.")] = 4096,
    pattern: Annotated[str, typer.Option(help=f"Pre-split pattern: {', '.join(PATTERNS)}.")] = "gpt4",
    special: Annotated[list[str], typer.Option(help="A special token, e.g. '<|endoftext|>'; repeatable.")] = [],
    min_frequency: Annotated[int, typer.Option(help="Stop when the best pair occurs fewer times than this.")] = 2,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the tokenizer.")] = Path("tokenizer.json"),
    json: JsonOpt = False,
):
    """Learn a byte-level BPE tokenizer from CORPUS."""
    check_readable(corpus, "corpus")
    check_output(output, "tokenizer file", inputs=[corpus], kind="json")
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=stderr, transient=True)
    with progress:
        task = progress.add_task("counting chunks", total=None)

        def on_progress(stage: str, done: int, total: int) -> None:
            if done % 16 == 0 or done == total:
                progress.update(task, description=stage, completed=done, total=total)

        tok = tk.train(corpus, vocab_size, pattern, special, min_frequency, on_progress)
    tok.save(output)
    summary = {"output": str(output), "vocab_size": tok.vocab_size, "merges": len(tok.merges), "special": tok.special,
               "pattern": pattern}
    if json:
        print_json(summary)
        return
    out.print(f"wrote {output}: {tok.vocab_size} tokens ({len(tok.merges)} merges, {len(tok.special)} special)")
    if tok.vocab_size < vocab_size:
        stderr.print(f"stopped below --vocab-size {vocab_size}: no pair occurs {min_frequency} or more times")


@app.command()
@clean_errors()
def encode(
    text: Annotated[Optional[str], typer.Argument(help="Text to encode (default: standard input).", show_default=False)] = None,
    tokenizer: TokOpt = Path("tokenizer.json"),
    file: Annotated[Optional[Path], typer.Option(help="Encode this file instead.")] = None,
    allow_special: Annotated[bool, typer.Option(help="Encode special tokens in the text as their ids.")] = False,
    json: JsonOpt = False,
):
    """Print the token ids of TEXT."""
    tok = load_bpe(tokenizer)
    ids = tok.encode(read_text(text, file), allowed_special="all" if allow_special else ())
    if json:
        print_json(ids)
    else:
        out.print(" ".join(map(str, ids)), soft_wrap=True)


@app.command()
@clean_errors()
def decode(
    ids: Annotated[Optional[list[str]], typer.Argument(help="Token ids (default: read from standard input).", show_default=False)] = None,
    tokenizer: TokOpt = Path("tokenizer.json"),
    strict: Annotated[bool, typer.Option(help="Fail on ids that split a character instead of printing U+FFFD.")] = False,
):
    """Print the text of token ids."""
    tok = load_bpe(tokenizer)
    words = ids if ids else read_stdin().replace(",", " ").replace("[", " ").replace("]", " ").split()
    parsed = []
    for w in words:
        if len(w) > 20 and w.lstrip("+-").isdigit():
            raise TokenizerError(f"token id {shown(w, 40)}: too large ({len(w):,} digits)")
        try:
            parsed.append(int(w))
        except ValueError:
            raise TokenizerError(f"token id {shown(w)} is not an integer") from None
    sys.stdout.write(tok.decode(parsed, strict=strict) + "\n")


def visible(piece: str) -> str:
    return piece.replace("\n", "↵").replace("\r", "␍").replace("\t", "→")


@app.command()
@clean_errors()
def inspect(
    text: Annotated[str, typer.Argument(help="Text to look at.")],
    tokenizer: TokOpt = Path("tokenizer.json"),
    allow_special: Annotated[bool, typer.Option(help="Encode special tokens in the text as their ids.")] = False,
):
    """Show how TEXT splits into tokens: pieces in alternating colours with their ids under them."""
    tok = load_bpe(tokenizer)
    ids = tok.encode(text, allowed_special="all" if allow_special else ())
    styles = ("black on bright_cyan", "black on bright_yellow")
    width = max(20, out.width)
    top, bottom, used = Text(), Text(), 0
    for k, i in enumerate(ids):
        piece, label = visible(tok.id_to_piece(i)), str(i)
        cell = max(len(piece), len(label)) + 1
        if used + cell > width and used:
            out.print(top)
            out.print(bottom)
            top, bottom, used = Text(), Text(), 0
        top.append(piece.ljust(cell - 1), style=styles[k % 2]).append(" ")
        bottom.append(label.ljust(cell), style="dim")
        used += cell
    out.print(top)
    out.print(bottom)
    chars = len(text)
    out.print(f"{len(ids)} tokens, {chars} characters, {chars / max(len(ids), 1):.2f} characters/token")


@app.command()
@clean_errors()
def merges(
    tokenizer: TokOpt = Path("tokenizer.json"),
    top: Annotated[Optional[int], typer.Option(help="Only the first N merges (the most frequent pairs when trained).")] = None,
    json: JsonOpt = False,
):
    """The merges in the order they were learned, as readable pairs: ' ' + 't' -> ' t' (bytes of a split character as <d0>)."""
    if top is not None and top < 0:
        raise TokenizerError(f"--top {top}: must be 0 or more")
    rows = load_bpe(tokenizer).merge_list()[:top]
    if json:
        print_json(rows)
        return
    for r in rows:
        out.print(f"{r['rank']:>5}  {quoted(r['left'])} + {quoted(r['right'])} -> {quoted(r['merged'])}  (id {r['id']})")


def quoted(piece: str) -> str:
    return "'" + visible(piece).replace("'", "\\'") + "'"


@app.command()
@clean_errors()
def stats(
    corpus: Annotated[Path, typer.Argument(help="UTF-8 text to measure on.")],
    tokenizer: TokOpt = Path("tokenizer.json"),
    top: Annotated[int, typer.Option(help="How many of the longest tokens to list.")] = 10,
    json: JsonOpt = False,
):
    """Tokens, bytes per token, share of the vocabulary used and the longest tokens, on CORPUS."""
    if top < 0:
        raise TokenizerError(f"--top {top}: must be 0 or more")
    tok = load_bpe(tokenizer)
    counts: Counter = Counter()
    n_bytes = 0
    for block in read_blocks(corpus):
        counts.update(tok.encode_ordinary(block))
        n_bytes += len(block.encode("utf-8"))
    n_tokens = sum(counts.values())
    longest = sorted(tok.id_bytes, key=lambda i: (-len(tok.id_bytes[i]), i))[:top]
    result = {
        "corpus": str(corpus), "tokens": n_tokens, "bytes": n_bytes, "bytes_per_token": n_bytes / max(n_tokens, 1),
        "vocab_size": tok.vocab_size, "vocab_used": len(counts), "vocab_used_share": len(counts) / tok.vocab_size,
        "longest": [{"id": i, "piece": tok.id_to_piece(i), "bytes": len(tok.id_bytes[i])} for i in longest],
    }
    if json:
        print_json(result)
        return
    out.print(f"{corpus}: {n_tokens:,} tokens, {n_bytes:,} bytes, {result['bytes_per_token']:.3f} bytes/token")
    out.print(f"vocabulary used: {len(counts):,} of {tok.vocab_size:,} ({100 * result['vocab_used_share']:.1f}%)")
    table = Table("id", "bytes", "piece", title="longest tokens")
    for row in result["longest"]:
        table.add_row(str(row["id"]), str(row["bytes"]), repr(row["piece"]))
    out.print(table)


@app.command()
@clean_errors()
def export(
    tokenizer: TokOpt = Path("tokenizer.json"),
    format: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")] = "huggingface",
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write.")] = Path("tokenizer.export"),
):
    """Write the tokenizer as a tiktoken rank file or a Hugging Face tokenizer.json."""
    tok = load_bpe(tokenizer)
    check_output(output, "export file", inputs=[tokenizer], kind="text" if format == "tiktoken" else "json")
    path = export_tokenizer(tok, format, output)
    out.print(f"wrote {path} ({format})")
    if format == "tiktoken":
        stderr.print(f"use with tiktoken.Encoding(name, pat_str={tok.regex or WHOLE_TEXT!r}, "
                     f"mergeable_ranks=tiktoken.load.load_tiktoken_bpe({str(path)!r}), special_tokens={tok.special!r})",
                     markup=False, soft_wrap=True)


@app.command("import")
@clean_errors()
def import_(
    name: Annotated[Optional[str], typer.Argument(help="A tiktoken encoding to load through tiktoken: gpt2, r50k_base, cl100k_base, ...", show_default=False)] = None,
    tiktoken_file: Annotated[Optional[Path], typer.Option("--tiktoken", help="A tiktoken rank file (base64 token and rank per line).")] = None,
    huggingface: Annotated[Optional[Path], typer.Option(help="A Hugging Face byte-level BPE tokenizer.json.")] = None,
    pattern: Annotated[Optional[str], typer.Option(help=f"With --tiktoken: the pre-split pattern ({', '.join(PATTERNS)}; default gpt4).", show_default=False)] = None,
    special: Annotated[list[str], typer.Option(help="With --tiktoken: a special token as TOKEN=ID; repeatable.")] = [],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the tokenizer.")] = Path("tokenizer.json"),
    json: JsonOpt = False,
):
    """Turn a tiktoken rank file, a Hugging Face tokenizer.json or a named tiktoken encoding into a tokenizer file."""
    given = [x for x in (name, tiktoken_file, huggingface) if x is not None]
    if len(given) != 1:
        raise TokenizerError("give exactly one of: a NAME, --tiktoken FILE, --huggingface FILE")
    if tiktoken_file is None and (pattern is not None or special):
        source = "--huggingface" if huggingface is not None else "a named encoding"
        raise TokenizerError(f"{'--pattern' if pattern is not None else '--special'}: only for --tiktoken; "
                             f"{source} brings its own pattern and special tokens")
    check_output(output, "tokenizer file", inputs=[tiktoken_file, huggingface], kind="json")
    if tiktoken_file is not None:
        tok = imports.import_tiktoken(tiktoken_file, pattern or "gpt4", special)
    elif huggingface is not None:
        tok = imports.import_huggingface(huggingface)
    else:
        tok = imports.import_named(name)
    tok.save(output)
    summary = {"output": str(output), "vocab_size": tok.vocab_size, "merges": len(tok.merges), "special": tok.special,
               "pattern": tok.pattern}
    if json:
        print_json(summary)
    else:
        out.print(f"wrote {output}: {len(tok.merges)} merges, {len(tok.special)} special tokens, pattern {tok.pattern}")


def main() -> None:
    tolerant_streams()
    app()
