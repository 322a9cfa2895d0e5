"""The `makemore` command: train, sample, score, eval, info, compare, plot. Each command parses its
options, calls one library function and renders the result; errors become one line, exit 2."""

from __future__ import annotations

import io
import signal
import threading
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from makemore import checkpoint, data, distributed, hf, models
from makemore import plot as plotting
from makemore import compare as comparison
from makemore import run as runs
from makemore import sample as generate
from makemore import threads as threads_
from makemore.errors import MakemoreError
from makemore.sample import Output, Piece, Request, Sampling
from makemore.train import Diverged, Eval, Step, TrainConfig, resolve_device
from safeio.cli import clean_errors, flags, print_json, stderr, tolerant_streams
from safeio.files import check_output, decode_text, read_input, read_stdin, shown
from tokenizer import cli as tokenizer_cli

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn to generate more of whatever a text file holds: items, one per line, or running text.")
app.add_typer(tokenizer_cli.app, name="tokenizer", help="Train and apply byte-level BPE tokenizers (also the `tokenizer` command).")
out = Console(highlight=False, markup=False, soft_wrap=True)

DataFile = Annotated[Optional[Path], typer.Argument(metavar="[DATA]", help="UTF-8 text: one item per line, or running text; or a built-in set: names (the default), shakespeare, census (see `makemore data`).", show_default=False)]
ModeOpt = Annotated[str, typer.Option(help="lines (one item per line), text (one running text) or auto (decide from the file).")]
BlockSizeOpt = Annotated[Optional[int], typer.Option(help=f"Context in tokens (text mode default {data.TEXT_BLOCK_SIZE}; lines mode: the longest item + 1).")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Checkpoint file or run folder (default: the latest run in checkpoints/).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the split, the model's init and the batch order.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
MaxSteps = Annotated[int, typer.Option(help="Optimisation steps.")]
MaxSeconds = Annotated[Optional[float], typer.Option(help="Stop after this many seconds (the schedule follows).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Items (lines mode, default 32) or windows (text mode, default 8) per step.", show_default=False)]
LearningRate = Annotated[Optional[float], typer.Option(help="Peak learning rate (default: the model type's own).")]
EvalInterval = Annotated[int, typer.Option(help="Steps between evaluations of train and val loss.")]
Ema = Annotated[Optional[float], typer.Option(help=f"Evaluate and save a moving average of the weights with this decay (default {TrainConfig.ema}); 0 = off.", show_default=False)]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads (default: chosen, and while training tuned to what is faster now; also MAKEMORE_THREADS).", show_default=False)]
DtypeOpt = Annotated[str, typer.Option(help="Weights in float32 or bfloat16 (half the memory; logits differ slightly, docs/models.md).")]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
RESUME_MAY_CHANGE = ("max_steps", "max_seconds", "device", "threads", "compile", "json", "resume", "data_path")  # all else is the run's own


def parse_settings(settings: list[str]) -> dict[str, str]:
    options = {}
    for s in settings:
        key, eq, value = s.partition("=")
        if not eq or not key:
            raise MakemoreError(f"--set {shown(s)}: expected key=value, such as n_layer=6")
        options[key.strip()] = value.strip()
    return options


def training_progress(console: Console, quiet_evals: bool = False):
    """A rich progress bar for the trainer's events, and the callback that feeds it.

    Use the returned `track(description)` to start a bar; it returns the event callback."""
    progress = Progress(
        TextColumn("[bold]{task.description:>11}"), BarColumn(), TextColumn("step {task.fields[step]}"),
        TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"),
        TextColumn("{task.fields[speed]} steps/s"), TextColumn("{task.fields[threads]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console,
    )

    def track(description: str):
        task = progress.add_task(description, total=1.0, step=0, loss="-", val="-", speed="-", threads="")

        def on_event(event: Step | Eval) -> None:
            if isinstance(event, Step):
                if event.step % 10 == 0:
                    speed = f"{event.step / event.elapsed:.0f}" if event.elapsed else "-"
                    progress.update(task, completed=event.progress, step=event.step, loss=f"{event.loss:.3f}", speed=speed,
                                    threads=f"{event.threads} thread{'s' if event.threads > 1 else ''}")
            else:
                progress.update(task, val=f"{event.val_loss:.3f}")
                if not quiet_evals:
                    mark = " (best, saved)" if event.improved else ""
                    progress.console.print(f"step {event.step:>6}  train {event.train_loss:.4f}  val {event.val_loss:.4f}{mark}")

        return on_event

    return progress, track


@app.command()
@clean_errors(MakemoreError)
def train(
    ctx: typer.Context,
    data_path: DataFile = None,
    type: Annotated[Optional[str], typer.Option("--type", "-t", help=f"Model type: {', '.join(models.MODELS)} (default transformer).", show_default=False)] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimisation steps (default 5000), counted from the run's start.", show_default=False)] = None,
    max_seconds: MaxSeconds = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    eval_interval: EvalInterval = 500,
    seed: SeedOpt = 1337,
    device: DeviceOpt = "auto",
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: checkpoints/<data>-<type>).")] = None,
    settings: Annotated[list[str], typer.Option("--set", help="Model option key=value, e.g. --set n_layer=6; repeatable.")] = [],
    tokenizer_path: Annotated[Optional[Path], typer.Option("--tokenizer", help="A BPE tokenizer file (from `tokenizer train`; lines mode needs <|endoftext|>); default: characters.")] = None,
    mode: ModeOpt = "auto",
    block_size: BlockSizeOpt = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder from its last state (more steps or seconds allowed).")] = None,
    init_from: Annotated[Optional[Path], typer.Option(help="Fine-tune: start from this checkpoint's weights, config and tokenizer (a tenth of the learning rate, an evaluation at step 0).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start afresh in a run folder that already holds a checkpoint.")] = False,
    early_stop: Annotated[Optional[int], typer.Option(help="Stop after N evaluations without a better val loss.")] = None,
    ema: Ema = None,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (falls back to eager mode where it cannot).")] = False,
    deterministic: Annotated[bool, typer.Option(help="torch's deterministic algorithms and a fixed thread count: the same seed gives byte-identical files.")] = False,
    threads: Threads = None,
    json: JsonOpt = False,
):
    """Train a model on FILE (default: the built-in names) and save the best checkpoint."""
    if resume:
        refuse_given(ctx, RESUME_MAY_CHANGE, "--resume continues a run with its own options",
                     "only --max-steps, --max-seconds and --device may change")
    if init_from and (settings or type or tokenizer_path):
        raise MakemoreError("--init-from takes the model type, options and tokenizer from the checkpoint")
    rank = distributed.from_env(resolve_device(device))
    dev = distributed.device_for(rank, resolve_device(device))
    cfg = TrainConfig(max_steps=5000 if max_steps is None else max_steps, max_seconds=max_seconds, batch_size=batch_size, lr=lr,
                      eval_interval=eval_interval, seed=seed, device=dev, early_stop=early_stop, deterministic=deterministic,
                      ema=TrainConfig.ema if ema is None else ema, threads=thread_count(threads))
    if resume:
        run = runs.Run.resume(resume, data_path, max_steps, max_seconds, dev, rank, thread_count(threads))
    elif init_from:
        folder = out_dir or runs.default_folder(data_path, checkpoint.load(init_from).model_type)
        run = runs.Run.fine_tune(folder, init_from, data_path, cfg, mode, overwrite, rank, block_size)
    else:
        run = runs.Run.fresh(out_dir or runs.default_folder(data_path, type or "transformer"), data_path, type or "transformer", cfg,
                             parse_settings(settings), tokenizer_path, mode, block_size, overwrite, rank)
    with run:
        fitted = fit_with_progress(run, rank, compile)
    if rank.main:
        render_fitted(run, fitted, rank, json)


def thread_count(threads: int | None) -> int | None:
    """--threads, else MAKEMORE_THREADS, else None (chosen): checked, not yet applied."""
    return threads_.requested(threads)


def refuse_given(ctx: typer.Context, allowed: tuple[str, ...], what: str, hint: str) -> None:
    """An error naming every option the user typed (not left at its default) that is not in `allowed`."""
    given = [p for p in ctx.command.params if p.name not in allowed
             and getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")]
    if given:
        names = ", ".join(max(p.opts, key=len) for p in given)
        raise MakemoreError(f"{what}; it cannot change {names}: {hint}")


def fit_with_progress(run: runs.Run, rank, compile: bool) -> runs.Fitted:
    """`run.fit` behind a progress bar, Ctrl-C or SIGTERM asking it to stop after the step."""
    say = stderr if rank.main else Console(file=io.StringIO())
    say.print(run.dataset.describe() + (f"; resuming at step {run.state.step}" if run.state else "")
              + (f"; starting from {run.origin}" if run.origin and not run.state else ""))
    progress, track = training_progress(say)
    stop = Signals()
    try:
        with stop, progress:
            fitted = run.fit(track(run.model_type), stop.requested, rank, compile, warn=lambda m: say.print(flags(f"warning: {m}")))
    except Diverged as e:
        raise diverged(e, say) from None
    finally:
        distributed.finish(rank)
    if fitted.interrupted and rank.main:
        say.print(f"interrupted at step {fitted.result.step}; saved {run.folder / checkpoint.LAST}; "
                  f"resume with: makemore train --resume {run.folder}")
        raise typer.Exit(stop.exit_code)
    return fitted


def render_fitted(run: runs.Run, fitted: runs.Fitted, rank, json: bool) -> None:
    result = fitted.result
    summary = {
        "checkpoint": str(run.folder / checkpoint.FILENAME), "type": run.model_type,
        "parameters": models.n_params(fitted.checkpoint.model), "steps": result.step,
        "seconds": round(result.elapsed, 1), "steps_per_second": round(result.steps_per_second, 1),
        "best_val_loss": result.best_val_loss, "test_loss": fitted.test_loss,
        "stopped": result.stopped, "world_size": rank.world, "global_batch_size": run.cfg.batch_size * rank.world,
        "threads": torch.get_num_threads(),
    }
    if json:
        print_json(summary)
        return
    out.print(f"saved {summary['checkpoint']}: {run.model_type}, {summary['parameters']:,} parameters, "
              f"{summary['steps']} steps in {summary['seconds']} s; val {summary['best_val_loss']:.4f}, test {summary['test_loss']:.4f}"
              + ("" if rank.world == 1 else f"; {rank.world} processes, global batch {summary['global_batch_size']}")
              + (" (stopped early: no better val loss)" if result.stopped == "early-stop" else ""))


def diverged(e: Diverged, console: Console) -> typer.Exit:
    """A run whose loss stopped being finite: one line, exit code 1 (not bad input, but a failed run)."""
    console.print(Text.assemble(("error: ", "bold red"), flags(str(e))))
    return typer.Exit(1)


class Signals:
    """While active, SIGINT and SIGTERM ask training to stop after the current step (instead of
    killing it mid-save); `exit_code` is 130 or 143, as the shell reports such a stop."""

    def __init__(self):
        self.signal: int | None = None
        self.previous: dict = {}

    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or signal.SIGINT)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def open_checkpoint(path: Path | None, device: str = "cpu", dtype: str = "float32") -> checkpoint.Checkpoint:
    """The checkpoint named, or the latest one (saying which), its weights in `dtype`."""
    if dtype not in DTYPES:
        raise MakemoreError(f"`dtype` {shown(dtype)}: choose one of {', '.join(DTYPES)}")
    ckpt = checkpoint.load(path or checkpoint.latest(), device, DTYPES[dtype])
    if path is None:
        stderr.print(f"using {ckpt.path}")
    return ckpt


@app.command()
@clean_errors(MakemoreError)
def sample(
    n: Annotated[Optional[int], typer.Option("-n", help="How many samples (lines mode: items, default 20; text mode: streams, default 1).")] = None,
    checkpoint_path: CheckpointOpt = None,
    temperature: Annotated[float, typer.Option(help="Softmax temperature; 0 = greedy.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only from the k likeliest tokens.")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus: only from the likeliest tokens whose probability adds up to p.")] = None,
    min_p: Annotated[Optional[float], typer.Option(help="Only tokens at least this fraction as likely as the likeliest.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for reproducible samples.")] = None,
    prefix: Annotated[Optional[str], typer.Option("--prefix", "--prompt", help="Lines mode: start every item with this; text mode: the prompt (default: a new line).")] = None,
    min_len: Annotated[int, typer.Option(help="Lines mode: at least this many characters per item.")] = 0,
    max_len: Annotated[Optional[int], typer.Option(help="Lines mode: at most this many characters per item.")] = None,
    novel_only: Annotated[bool, typer.Option(help="Lines mode: only items not in the training set.")] = False,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Text mode: tokens to generate (default 500).", show_default=False)] = None,
    stream: Annotated[Optional[bool], typer.Option(help="Text mode: print text as it is made (default: on).", show_default=False)] = None,
    cache: Annotated[bool, typer.Option(help="Incremental decoding (KV cache / carried state); --no-cache reruns the whole context.")] = True,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    threads: Threads = None,
    json: JsonOpt = False,
):
    """New items (lines mode) or a stream of text (text mode) from a trained model."""
    s = Sampling(temperature, top_k, top_p, min_p)
    threads_.start(threads)
    ckpt = open_checkpoint(checkpoint_path, resolve_device(device), dtype)
    kind = ckpt.training.kind
    data.refuse_options(kind, {"min_len": min_len, "max_len": max_len is not None, "novel_only": novel_only,
                               "max_new_tokens": max_new_tokens is not None, "stream": stream is not None}, str(ckpt.path))
    seen = data.training_items(ckpt.training.data)
    request = Request(s, n, seed, prefix, min_len, max_len, novel_only, max_new_tokens, cache)
    show = stream is not False and not json  # pieces of a stream as they come
    rows: list[Output] = []
    streamed = False  # the current output's text is on the screen already
    try:
        for event in generate.generate(kind, ckpt.model, ckpt.tokenizer, request, seen):
            if isinstance(event, Piece):
                if show:
                    out.print(event.text, end="", soft_wrap=True)
                    streamed = True
                continue
            rows.append(event)
            if not json:
                render_sample(event, streamed)
            streamed = False
    except KeyboardInterrupt:
        out.print()
        raise typer.Exit(130) from None
    if json:
        print_json([r.row for r in rows])
    elif kind.novelty:
        report_novelty(rows, 20 if n is None else n, seen, novel_only, min_len)


def render_sample(output: Output, streamed: bool) -> None:
    new = output.row.get("new")
    tag = Text("") if new is None else (Text("new  ", "green") if new else Text("seen ", "dim"))
    out.print(Text.assemble(tag, "" if streamed else output.text))


def report_novelty(rows: list[Output], n: int, seen: set | None, novel_only: bool, min_len: int) -> None:
    if seen is None:
        stderr.print("(training data not found or changed: cannot tell new samples from seen ones)")
    if len(rows) < n:
        wanted = " and ".join(w for w, on in (("new", novel_only), (f"at least {min_len} characters long", min_len)) if on)
        stderr.print(f"only {len(rows)} of {n} samples were {wanted} after {generate.NOVEL_TRIES} tries per sample")
    if seen is not None:
        stderr.print(f"{sum(r.row['new'] for r in rows)} of {len(rows)} are new (not in the training set)")


@app.command()
@clean_errors(MakemoreError)
def score(
    strings: Annotated[Optional[list[str]], typer.Argument(help="Strings to score (default: --file, or standard input, one per line).", show_default=False)] = None,
    checkpoint_path: CheckpointOpt = None,
    file: Annotated[Optional[Path], typer.Option(help="Score each line of this file.")] = None,
    sort: Annotated[bool, typer.Option(help="Likeliest first.")] = False,
    tokens: Annotated[bool, typer.Option(help="Show each token's log-probability.")] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    threads: Threads = None,
    json: JsonOpt = False,
):
    """Log-probability of each string under the model (lines mode: as a whole item), and bits per character."""
    threads_.start(threads)
    ckpt = open_checkpoint(checkpoint_path, resolve_device(device), dtype)
    texts, where = score_inputs(strings, file)
    rows, failed = [], 0
    for text, place in zip(texts, where):
        try:
            sc = generate.score(ckpt.model, ckpt.tokenizer, ckpt.training.kind, text)
        except MakemoreError as e:
            stderr.print(Text.assemble(("error: ", "bold red"), flags(f"{place}: {e}")), soft_wrap=True)
            failed += 1
            continue
        rows.append({"text": sc.text, "logprob": sc.logprob, "bits_per_char": sc.bits_per_char, "chars": sc.chars}
                    | ({"tokens": [{"piece": p, "logprob": lp} for p, lp in sc.tokens]} if tokens else {}))
    if sort:
        rows.sort(key=lambda r: -r["logprob"])
    if json:
        print_json(rows)
    elif rows:  # (when every string failed, the errors above are all there is to show)
        table = Table("text", "log-prob", "bits/char", *(["tokens"] if tokens else []), box=None)
        for r in rows:
            extra = [" ".join(f"{t['piece']!r}:{t['logprob']:.2f}" for t in r["tokens"])] if tokens else []
            table.add_row(Text(r["text"]), f"{r['logprob']:.3f}", f"{r['bits_per_char']:.3f}", *extra)
        out.print(table)
    if failed:
        raise typer.Exit(2)


def score_inputs(strings: list[str] | None, file: Path | None) -> tuple[list[str], list[str]]:
    """The strings to score and where each came from (an argument, a file's line, standard input's line)."""
    if strings and file:
        raise MakemoreError("give strings or --file, not both")
    if strings:
        return list(strings), [f"argument {k + 1}" for k in range(len(strings))]
    text = read_stdin() if file is None else decode_text(read_input(file), str(file))
    lines, numbers = data.lines_of(text)
    return lines, [f"{file or 'standard input'}:{k}" for k in numbers]


@app.command("eval")
@clean_errors(MakemoreError)
def eval_(
    data_path: Annotated[Optional[Path], typer.Argument(metavar="[DATA]", help="Evaluate on this file (default: the checkpoint's test split).", show_default=False)] = None,
    checkpoint_path: CheckpointOpt = None,
    threads: Threads = None,
    json: JsonOpt = False,
):
    """Loss (nats/token), perplexity, bits per character and per byte on the test split, or on FILE."""
    threads_.start(threads)
    result = runs.evaluate(open_checkpoint(checkpoint_path), data_path)
    if json:
        print_json(result)
        return
    size = f"{result['items']} items" if "items" in result else f"{result['characters']:,} characters"
    out.print(f"{result['data']} ({result['on']}, {result['mode']} mode, {size}, {result['tokens']:,} tokens)")
    out.print(f"loss {result['loss']:.4f} nats/token   perplexity {result['perplexity']:.3f}   {result['bits_per_char']:.4f} bits/char"
              f"   {result['bits_per_byte']:.4f} bits/byte")


@app.command()
@clean_errors(MakemoreError)
def info(
    path: Annotated[Optional[Path], typer.Argument(help="Checkpoint (default: the latest run).", show_default=False)] = None,
    json: JsonOpt = False,
):
    """Model type, parameter count, config, tokenizer and training state of a checkpoint."""
    ckpt = open_checkpoint(path)
    t = ckpt.training
    result = {
        "checkpoint": str(ckpt.path), "type": ckpt.model_type, "parameters": models.n_params(ckpt.model),
        "config": vars(ckpt.model.config), "tokenizer": {"type": ckpt.tokenizer.kind, "vocab_size": ckpt.tokenizer.vocab_size},
        "training": t.to_json(),
    }
    if json:
        print_json(result)
        return
    table = Table(show_header=False, box=None)
    for key in ("checkpoint", "type"):
        table.add_row(key, result[key])
    table.add_row("parameters", f"{result['parameters']:,}")
    table.add_row("config", ", ".join(f"{k}={v}" for k, v in result["config"].items()))
    table.add_row("tokenizer", f"{ckpt.tokenizer.kind}, vocabulary {ckpt.tokenizer.vocab_size}")
    if t.origin:
        table.add_row("imported", f"{t.origin.get('format')} {t.origin.get('model_type')} from {t.origin.get('path')}")
    if t.data:
        table.add_row("data", f"{t.data['name']} (sha256 {t.data['sha256'][:12]}…)")
    table.add_row("training", f"{t.step} steps; best val loss {number(t.best_val_loss)} at step {'-' if t.best_step is None else t.best_step}"
                  + (f"; test loss {number(t.test_loss)}" if t.test_loss is not None else ""))
    if t.options:
        o = t.options
        table.add_row("options", f"batch size {o.get('batch_size')}, lr {o.get('lr')}"
                      + (f", ema {o['ema']}" if o.get("ema") else "") + (f", seed {o['seed']}" if "seed" in o else ""))
    out.print(table)


@app.command()
@clean_errors(MakemoreError)
def compare(
    data_path: DataFile = None,
    types: Annotated[str, typer.Option(help="Comma-separated model types (default: all).")] = ",".join(models.MODELS),
    steps: MaxSteps = 3000,
    max_seconds: Annotated[Optional[float], typer.Option(help="Wall-time budget per type (the schedule follows).")] = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    eval_interval: EvalInterval = 500,
    ema: Ema = None,
    seed: SeedOpt = 1337,
    device: DeviceOpt = "auto",
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: checkpoints/compare-<data>).")] = None,
    tokenizer_path: Annotated[Optional[Path], typer.Option("--tokenizer", help="A BPE tokenizer file; default: characters.")] = None,
    mode: ModeOpt = "auto",
    block_size: BlockSizeOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Train again into a compare folder that already holds these types' models.")] = False,
    threads: Threads = None,
    json: JsonOpt = False,
):
    """Train several model types on one split with one budget and seed; print a leaderboard."""
    cfg = TrainConfig(max_steps=steps, max_seconds=max_seconds, batch_size=batch_size, lr=lr, eval_interval=eval_interval,
                      seed=seed, device=resolve_device(device), ema=TrainConfig.ema if ema is None else ema, threads=thread_count(threads))
    folder = out_dir or checkpoint.DEFAULT_DIR / f"compare-{data.stem(data_path)}"
    chosen = comparison.check(types, folder, data_path, overwrite)
    dataset = data.prepare(data_path, seed, tokenizer_path, mode, block_size)
    for t in chosen:
        runs.model_config(t, dataset, None, cfg.batch_size)  # each fits in memory, before any trains
    stderr.print(dataset.describe())
    progress, track = training_progress(stderr, quiet_evals=True)
    try:
        with progress:
            rows = comparison.compare(dataset, chosen, cfg, folder, on_start=track, overwrite=overwrite)
    except Diverged as e:
        raise diverged(e, stderr) from None
    table_path, png_path = comparison.write_report(rows, folder)
    if json:
        print_json([r.summary() for r in sorted(rows, key=lambda r: r.test_loss)])
    else:
        out.print(comparison.table(rows, f"{dataset.name} ({dataset.kind} mode): {steps} steps"
                                   + (f" or {max_seconds:g} s" if max_seconds else "") + " per type; loss in nats/token"))
    stderr.print(f"wrote {table_path}" + (f" and {png_path}" if png_path else ""))
    if png_path is None:
        stderr.print("no loss-curve plot: matplotlib is not installed (pip install 'makemore[plot]')")


@app.command()
@clean_errors(MakemoreError)
def plot(
    runs_: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run folders of makemore train (each has a metrics.jsonl).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The PNG to write.")] = Path("curves.png"),
    json: JsonOpt = False,
):
    """Draw the loss curves of one or several runs into one PNG and print a summary table."""
    check_output(output, "plot", inputs=runs_, kind="png")
    summaries = [plotting.summarize(run) for run in runs_]
    for s in summaries:
        if s.skipped:
            stderr.print(f"warning: {s.path}: skipped line{'s' if len(s.skipped) > 1 else ''} "
                         f"{', '.join(map(str, s.skipped[:10]))}{' …' if len(s.skipped) > 10 else ''} (not a metrics row)")
    plotting.curves({s.row["run"]: s.series for s in summaries}, output, "val loss (solid), train loss (dotted)")
    rows = [s.row for s in summaries]
    if json:
        print_json({"output": str(output), "runs": rows})
        return
    table = Table("run", "steps", "best val", "at step", "last val", "tokens/s", "wall s")
    for r in rows:
        table.add_row(Text(r["run"]), str(r["steps"]), number(r["best_val_loss"]), str(r["best_step"]), number(r["last_val_loss"]),
                      f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-", f"{r['wall_s']:.1f}")
    out.print(table)
    stderr.print(f"wrote {output}")


@app.command("import")
@clean_errors(MakemoreError)
def import_(
    sources: Annotated[list[Path], typer.Argument(metavar="FOLDER_OR_FILES...", help="A Hugging Face GPT-2 folder, or its files: config.json, model.safetensors (or its index and shards), tokenizer.json (or vocab.json and merges.txt).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="The run folder to make.")],
    overwrite: Annotated[bool, typer.Option(help="Replace a model already in that folder.")] = False,
    json: JsonOpt = False,
):
    """Import a GPT-2 checkpoint as a run folder that sample, score, eval, info and train --init-from read."""
    ckpt = hf.import_folder(sources, out_dir, overwrite)
    row = {"checkpoint": str(ckpt.path), "parameters": models.n_params(ckpt.model), "vocab_size": ckpt.tokenizer.vocab_size,
           "n_positions": ckpt.model.config.positions}
    if json:
        print_json(row)
        return
    out.print(f"saved {row['checkpoint']}: GPT-2, {row['parameters']:,} parameters, vocabulary {row['vocab_size']:,}, "
              f"{row['n_positions']} positions")


@app.command()
@clean_errors(MakemoreError)
def export(
    run: Annotated[Path, typer.Argument(help="A run folder or checkpoint.")],
    format: Annotated[str, typer.Option("--format", help="huggingface: config.json, model.safetensors, tokenizer.json.")] = "huggingface",
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="The folder to write.")] = Path("export"),
    json: JsonOpt = False,
):
    """Export a transformer run as a Hugging Face GPT-2 folder (transformers and tokenizers load it)."""
    if format != "huggingface":
        raise MakemoreError(f"`format` {shown(format)}: choose huggingface")
    paths = hf.export_folder(run, out_dir)
    if json:
        print_json({"files": [str(p) for p in paths]})
        return
    out.print(f"wrote {', '.join(str(p) for p in paths)}")


@app.command("data")
@clean_errors(MakemoreError)
def data_(json: JsonOpt = False):
    """The data sets built into makemore, usable by name in place of a file (a file of that name wins)."""
    rows = [{"name": name, "what": b.what, "bytes": len(data.builtin_bytes(name)), "source": b.source, "licence": b.licence}
            for name, b in data.BUILTINS.items()]
    if json:
        print_json(rows)
        return
    table = Table("name", "what", "size", "source", "licence")
    for r in rows:
        table.add_row(r["name"], r["what"], f"{r['bytes'] / 1e6:.2f} MB", r["source"], r["licence"])
    out.print(table)


def number(x, digits: int = 4) -> str:
    """A loss for a table: '-' where none was recorded (a null in the file)."""
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> None:
    tolerant_streams()
    app()
