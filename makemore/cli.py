"""The `makemore` command: train, sample, eval, info (and compare). Each command parses its
options, calls one library function and renders the result; errors become one line, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from makemore import checkpoint, models, runs
from makemore import compare as comparison
from makemore.errors import MakemoreError
from makemore.sample import check_options, generate
from makemore.train import Eval, Step, TrainConfig, resolve_device
from tokenizer import cli as tokenizer_cli
from tokenizer.cliutil import clean_errors, print_json, stderr
from tokenizer.files import check_folder, check_output

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn to generate more of whatever a text file holds: items, one per line, or running text.")
app.add_typer(tokenizer_cli.app, name="tokenizer", help="Train and apply byte-level BPE tokenizers (also the `tokenizer` command).")
out = Console(highlight=False, markup=False)

DataFile = Annotated[Optional[Path], typer.Argument(help="UTF-8 text: one item per line, or running text (default: the built-in names).", show_default=False)]
ModeOpt = Annotated[str, typer.Option(help="lines (one item per line), text (one running text) or auto (decide from the file).")]
BlockSizeOpt = Annotated[Optional[int], typer.Option(help=f"Context in tokens (text mode default {runs.TEXT_BLOCK_SIZE}; lines mode: the longest item + 1).")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Checkpoint file or run folder (default: the latest run in checkpoints/).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the split, the model's init and the batch order.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
MaxSteps = Annotated[int, typer.Option(help="Optimisation steps.")]
MaxSeconds = Annotated[Optional[float], typer.Option(help="Stop after this many seconds (the schedule follows).")]
BatchSize = Annotated[int, typer.Option(help="Items per step.")]
LearningRate = Annotated[Optional[float], typer.Option(help="Peak learning rate (default: the model type's own).")]
EvalInterval = Annotated[int, typer.Option(help="Steps between evaluations of train and val loss.")]


def parse_settings(settings: list[str]) -> dict[str, str]:
    options = {}
    for s in settings:
        key, eq, value = s.partition("=")
        if not eq or not key:
            raise MakemoreError(f"--set {s!r}: expected key=value, such as n_layer=6")
        options[key.strip()] = value.strip()
    return options


def training_progress(console: Console, quiet_evals: bool = False):
    """A rich progress bar for the trainer's events, and the callback that feeds it.

    Use the returned `track(description)` to start a bar; it returns the event callback."""
    progress = Progress(
        TextColumn("[bold]{task.description:>11}"), BarColumn(), TextColumn("step {task.fields[step]}"),
        TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"),
        TextColumn("{task.fields[speed]} steps/s"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console,
    )

    def track(description: str):
        task = progress.add_task(description, total=1.0, step=0, loss="-", val="-", speed="-")

        def on_event(event: Step | Eval) -> None:
            if isinstance(event, Step):
                if event.step % 10 == 0:
                    speed = f"{event.step / event.elapsed:.0f}" if event.elapsed else "-"
                    progress.update(task, completed=event.progress, step=event.step, loss=f"{event.loss:.3f}", speed=speed)
            else:
                progress.update(task, val=f"{event.val_loss:.3f}")
                if not quiet_evals:
                    mark = " (best, saved)" if event.improved else ""
                    progress.console.print(f"step {event.step:>6}  train {event.train_loss:.4f}  val {event.val_loss:.4f}{mark}")

        return on_event

    return progress, track


def run_dir(data: Path | None, model_type: str) -> str:
    stem = "names" if data is None else Path(data).stem
    return f"{stem}-{model_type}"


def check_run_folder(folder: Path, inputs: list) -> Path:
    """The checkpoint path in run folder `folder`, checked writable before any data is read."""
    if folder.exists() and not folder.is_dir():
        raise MakemoreError(f"--out {folder}: is a file, not a run folder")
    check_folder(folder, f"--out {folder}")
    return check_output(folder / checkpoint.FILENAME, "checkpoint", inputs)


@app.command()
@clean_errors(MakemoreError)
def train(
    data: DataFile = None,
    type: Annotated[str, typer.Option("--type", "-t", help=f"Model type: {', '.join(models.MODELS)}.")] = "transformer",
    max_steps: MaxSteps = 5000,
    max_seconds: MaxSeconds = None,
    batch_size: BatchSize = 32,
    lr: LearningRate = None,
    eval_interval: EvalInterval = 500,
    seed: SeedOpt = 1337,
    device: DeviceOpt = "auto",
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: checkpoints/<data>-<type>).")] = None,
    settings: Annotated[list[str], typer.Option("--set", help="Model option key=value, e.g. --set n_layer=6; repeatable.")] = [],
    tokenizer_path: Annotated[Optional[Path], typer.Option("--tokenizer", help="A BPE tokenizer file (from `tokenizer train`; lines mode needs <|endoftext|>); default: characters.")] = None,
    mode: ModeOpt = "auto",
    block_size: BlockSizeOpt = None,
    json: JsonOpt = False,
):
    """Train a model on FILE (default: the built-in names) and save the best checkpoint."""
    models.lookup(type)
    cfg = TrainConfig(max_steps=max_steps, max_seconds=max_seconds, batch_size=batch_size, lr=lr,
                      eval_interval=eval_interval, seed=seed, device=resolve_device(device))
    options = parse_settings(settings)
    models.make_config(type, 1, 1, **options)  # reject bad options before reading any data
    path = check_run_folder(out_dir or checkpoint.DEFAULT_DIR / run_dir(data, type), [data])
    prep = runs.prepare(data, seed, tokenizer_path, mode, block_size)
    stderr.print(prep.describe())
    config = runs.model_config(type, prep, options, cfg.batch_size)
    progress, track = training_progress(stderr)
    with progress:
        fitted = runs.fit(type, prep, cfg, path, config, track(type))
    summary = {
        "checkpoint": str(fitted.checkpoint.path), "type": type, "parameters": models.n_params(fitted.checkpoint.model),
        "steps": fitted.result.step, "seconds": round(fitted.result.elapsed, 1),
        "steps_per_second": round(fitted.result.steps_per_second, 1), "best_val_loss": fitted.result.best_val_loss,
        "test_loss": fitted.test_loss,
    }
    if json:
        print_json(summary)
    else:
        out.print(f"saved {summary['checkpoint']}: {type}, {summary['parameters']:,} parameters, "
                  f"{summary['steps']} steps in {summary['seconds']} s; val {summary['best_val_loss']:.4f}, test {summary['test_loss']:.4f}")


def open_checkpoint(path: Path | None) -> checkpoint.Checkpoint:
    path = path or checkpoint.latest()
    ckpt = checkpoint.load(path)
    stderr.print(f"using {ckpt.path}")
    return ckpt


@app.command()
@clean_errors(MakemoreError)
def sample(
    n: Annotated[int, typer.Option("-n", help="How many samples.")] = 20,
    checkpoint_path: CheckpointOpt = None,
    temperature: Annotated[float, typer.Option(help="Softmax temperature; 0 = greedy.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only from the k likeliest tokens.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for reproducible samples.")] = None,
    prompt: Annotated[str, typer.Option(help="Start every sample with this text.")] = "",
    json: JsonOpt = False,
):
    """Print new items sampled from a trained model, marking those already in its training data."""
    check_options(n, temperature, top_k)
    ckpt = open_checkpoint(checkpoint_path)
    texts = generate(ckpt.model, ckpt.tokenizer, n, temperature, top_k, seed, prompt)
    seen = runs.training_items(ckpt)
    rows = [{"text": t, "new": None if seen is None else t not in seen} for t in texts]
    if json:
        print_json(rows)
        return
    if seen is None:
        stderr.print("(training data not found or changed: cannot tell new samples from seen ones)")
    for row in rows:
        tag = Text("") if row["new"] is None else (Text("new  ", "green") if row["new"] else Text("seen ", "dim"))
        out.print(Text.assemble(tag, row["text"]))
    if seen is not None:
        k = sum(r["new"] for r in rows)
        stderr.print(f"{k} of {len(rows)} are new (not in the training set)")


@app.command("eval")
@clean_errors(MakemoreError)
def eval_(
    data: Annotated[Optional[Path], typer.Argument(help="Evaluate on this file (default: the checkpoint's test split).", show_default=False)] = None,
    checkpoint_path: CheckpointOpt = None,
    json: JsonOpt = False,
):
    """Loss (nats/token), perplexity and bits per character on the test split, or on FILE."""
    ckpt = open_checkpoint(checkpoint_path)
    result = runs.evaluate_file(ckpt, str(data) if data else None)
    if json:
        print_json(result)
        return
    size = f"{result['items']} items" if "items" in result else f"{result['characters']:,} characters"
    out.print(f"{result['data']} ({result['on']}, {result['mode']} mode, {size}, {result['tokens']:,} tokens)")
    out.print(f"loss {result['loss']:.4f} nats/token   perplexity {result['perplexity']:.3f}   {result['bits_per_char']:.4f} bits/char")


@app.command()
@clean_errors(MakemoreError)
def info(
    path: Annotated[Optional[Path], typer.Argument(help="Checkpoint (default: the latest run).", show_default=False)] = None,
    json: JsonOpt = False,
):
    """Model type, parameter count, config, tokenizer and training state of a checkpoint."""
    ckpt = open_checkpoint(path)
    tok = ckpt.tokenizer.to_dict()
    result = {
        "checkpoint": str(ckpt.path), "type": ckpt.model_type, "parameters": models.n_params(ckpt.model),
        "config": vars(ckpt.model.config),
        "tokenizer": {"type": tok["type"], "vocab_size": ckpt.tokenizer.vocab_size},
        "training": ckpt.training,
    }
    if json:
        print_json(result)
        return
    table = Table(show_header=False, box=None)
    table.add_row("checkpoint", result["checkpoint"])
    table.add_row("type", result["type"])
    table.add_row("parameters", f"{result['parameters']:,}")
    table.add_row("config", ", ".join(f"{k}={v}" for k, v in result["config"].items()))
    table.add_row("tokenizer", f"{tok['type']}, vocabulary {ckpt.tokenizer.vocab_size}")
    t = ckpt.training
    if "data" in t:
        table.add_row("data", f"{t['data']['name']} (sha256 {t['data']['sha256'][:12]}…)")
    if "best_val_loss" in t:
        table.add_row("training", f"{t['step']} steps; best val loss {t['best_val_loss']:.4f} at step {t['best_step']}"
                      + (f"; test loss {t['test_loss']:.4f}" if "test_loss" in t else ""))
    out.print(table)


@app.command()
@clean_errors(MakemoreError)
def compare(
    data: DataFile = None,
    types: Annotated[str, typer.Option(help="Comma-separated model types (default: all).")] = ",".join(models.MODELS),
    steps: MaxSteps = 3000,
    max_seconds: Annotated[Optional[float], typer.Option(help="Wall-time budget per type (the schedule follows).")] = None,
    batch_size: BatchSize = 32,
    lr: LearningRate = None,
    eval_interval: EvalInterval = 500,
    seed: SeedOpt = 1337,
    device: DeviceOpt = "auto",
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: checkpoints/compare-<data>).")] = None,
    tokenizer_path: Annotated[Optional[Path], typer.Option("--tokenizer", help="A BPE tokenizer file; default: characters.")] = None,
    mode: ModeOpt = "auto",
    block_size: BlockSizeOpt = None,
    json: JsonOpt = False,
):
    """Train several model types on one split with one budget and seed; print a leaderboard."""
    chosen = list(dict.fromkeys(t.strip() for t in types.split(",") if t.strip()))  # each type once
    if not chosen:
        raise MakemoreError("--types: name at least one model type")
    for t in chosen:
        models.lookup(t)
    cfg = TrainConfig(max_steps=steps, max_seconds=max_seconds, batch_size=batch_size, lr=lr,
                      eval_interval=eval_interval, seed=seed, device=resolve_device(device))
    folder = out_dir or checkpoint.DEFAULT_DIR / f"compare-{'names' if data is None else Path(data).stem}"
    for t in chosen:
        check_run_folder(folder / t, [data])
    check_output(folder / "leaderboard.md", "leaderboard")
    prep = runs.prepare(data, seed, tokenizer_path, mode, block_size)
    stderr.print(prep.describe())
    for t in chosen:
        runs.model_config(t, prep, None, cfg.batch_size)  # each fits in memory, before any trains
    progress, track = training_progress(stderr, quiet_evals=True)
    with progress:
        rows = comparison.compare(prep, chosen, cfg, folder, on_start=track)
    table_path, png_path = comparison.write_report(rows, folder)
    if json:
        print_json([r.summary() for r in sorted(rows, key=lambda r: r.test_loss)])
    else:
        table = Table(title=f"{prep.name}: {steps} steps" + (f" or {max_seconds:g} s" if max_seconds else "") + " per type; loss in nats/token")
        for col in ("type", "params", "train", "val", "test", "steps/s", "seconds"):
            table.add_column(col, justify="left" if col == "type" else "right")
        for r in sorted(rows, key=lambda r: r.test_loss):
            table.add_row(r.type, f"{r.parameters:,}", f"{r.train_loss:.4f}", f"{r.val_loss:.4f}", f"{r.test_loss:.4f}",
                          f"{r.steps_per_second:.1f}", f"{r.seconds:.1f}")
        out.print(table)
    stderr.print(f"wrote {table_path}" + (f" and {png_path}" if png_path else ""))
    if png_path is None:
        stderr.print("no loss-curve plot: matplotlib is not installed (pip install 'makemore[plot]')")


def main() -> None:
    app()
