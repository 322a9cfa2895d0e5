"""The `makemore` command: train, sample, chat, score, eval, info, compare, plot. Each command parses its
options, calls one library function and renders the result; errors become one line, exit 2."""

from __future__ import annotations

import io
import re
import signal
import threading
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
                           TransferSpeedColumn)
from rich.table import Table
from rich.text import Text

from makemore import checkpoint, data, distributed, hf, models
from makemore import plot as plotting
from makemore import compare as comparison
from makemore import run as runs
from makemore import show as pictures
from makemore import sample as generate
from makemore import threads as threads_
from makemore import tokens
from makemore.chat import Conversation, Dropped
from makemore.errors import MakemoreError
from makemore.pairs import check_template
from makemore.sample import Output, Piece, Request, Sampling
from makemore.train import EVAL_ITEMS, TEST_ITEMS, Diverged, Eval, Step, TrainConfig, resolve_device
from safeio.cli import clean_errors, flags, print_json, stderr, tolerant_streams
from safeio.files import check_output, decode_text, read_input, read_stdin, shown
from tokenizer import cli as tokenizer_cli

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn to generate more of whatever a text file holds: items, one per line, or running text.")
app.add_typer(tokenizer_cli.app, name="tokenizer", help="Train and apply byte-level BPE tokenizers (also the `tokenizer` command).")
out = Console(highlight=False, markup=False, soft_wrap=True)

DataFile = Annotated[Optional[Path], typer.Argument(metavar="[DATA]", help="UTF-8 text: one item per line, or running text; or a built-in set: names (the default), shakespeare, census (see `makemore data`).", show_default=False)]
ModeOpt = Annotated[str, typer.Option(help="lines (one item per line), text (one running text), pairs (prompt/response records, JSON) or auto (decide from the file).")]
BlockSizeOpt = Annotated[Optional[int], typer.Option(help=f"Context in tokens (text mode default {data.TEXT_BLOCK_SIZE}; lines mode: the longest item + 1).")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Checkpoint file or run folder (default: the latest run in checkpoints/).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the split, the model's init and the batch order.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
MaxSteps = Annotated[int, typer.Option(help="Optimisation steps.")]
MaxSeconds = Annotated[Optional[float], typer.Option(help="Stop after this many seconds (the schedule follows).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Items (lines mode, default 32), windows (text mode, default 8) or records (pairs mode, default 16) per step.", show_default=False)]
LearningRate = Annotated[Optional[float], typer.Option(help="Peak learning rate (default: the model type's own).")]
EvalInterval = Annotated[int, typer.Option(help="Steps between evaluations of train and val loss.")]
Ema = Annotated[Optional[float], typer.Option(help=f"Evaluate and save a moving average of the weights with this decay (default {TrainConfig.ema}); 0 = off.", show_default=False)]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads (default: chosen, and while training, generating or scoring tuned to what is faster now; also MAKEMORE_THREADS).", show_default=False)]
TemperatureOpt = Annotated[float, typer.Option(help="Softmax temperature; 0 = greedy.")]
TopKOpt = Annotated[Optional[int], typer.Option(help="Sample only from the k likeliest tokens.")]
TopPOpt = Annotated[Optional[float], typer.Option(help="Nucleus: only from the likeliest tokens whose probability adds up to p.")]
MinPOpt = Annotated[Optional[float], typer.Option(help="Only tokens at least this fraction as likely as the likeliest.")]
StopOpt = Annotated[list[str], typer.Option("--stop", help="Streams and answers: end at this text, which is not printed (\\n, \\t and \\\\ are escapes); repeatable.", show_default=False)]
RepetitionPenaltyOpt = Annotated[float, typer.Option(help="Make tokens already in the context less likely (CTRL; 1 = off, 1.2 is usual); applied before the temperature.")]
DtypeOpt = Annotated[str, typer.Option(help="Weights in float32 or bfloat16 (half the memory; logits differ slightly, docs/models.md).")]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CacheDir = Annotated[Optional[Path], typer.Option(help="Where text mode keeps files it has encoded (default: $MAKEMORE_CACHE, else ~/.cache/makemore).", show_default=False)]
RESUME_MAY_CHANGE = ("max_steps", "max_seconds", "device", "threads", "compile", "json", "resume", "data_path", "cache_dir", "diagnostics")  # all else is the run's own
BAR_BYTES = 64 << 20  # a pass over a file this large shows a bar


def use_cache(folder: Path | None, bars: bool = True) -> None:
    """Text mode's token cache in `folder` (or its default), its passes over a large file shown as bars."""
    if folder is not None and folder.exists() and not folder.is_dir():
        raise MakemoreError(f"--cache-dir {folder}: is a file, not a folder")
    tokens.configure(folder, file_bars if bars else None)


def file_bars(label: str, total: int):
    """A bar on standard error for one pass over `total` bytes of a file (none for a small file); the
    function that advances it, which closes it at the end."""
    if total < BAR_BYTES:
        return lambda n: None
    bar = Progress(TextColumn(f"[bold]{label:>11}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                   console=stderr)
    task = bar.add_task(label, total=total)
    bar.start()

    def advance(n: int) -> None:
        bar.advance(task, n)
        if bar.tasks[0].completed >= total:
            bar.stop()

    return advance


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
        shown_at = [0.0]  # elapsed seconds at the last update

        def on_event(event: Step | Eval) -> None:
            if isinstance(event, Step):
                if event.step % 10 == 0 or event.elapsed - shown_at[0] >= 1.0:  # every 10 steps, or each second of slow ones (GPT-2)
                    shown_at[0] = event.elapsed
                    rate = event.step / event.elapsed if event.elapsed else None
                    speed = "-" if rate is None else f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"
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
    template: Annotated[Optional[Path], typer.Option(help="Pairs mode: the prompt template, a text file with {instruction}, {input} and {response} at its end (default: Alpaca's layout).", show_default=False)] = None,
    truncate: Annotated[bool, typer.Option(help="Pairs mode: cut records longer than the block size (default: an error).")] = False,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder from its last state (more steps or seconds allowed).")] = None,
    init_from: Annotated[Optional[Path], typer.Option(help="Fine-tune: start from this checkpoint's weights, config and tokenizer (a tenth of the learning rate, an evaluation at step 0).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start afresh in a run folder that already holds a checkpoint.")] = False,
    early_stop: Annotated[Optional[int], typer.Option(help="Stop after N evaluations without a better val loss.")] = None,
    ema: Ema = None,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (falls back to eager mode where it cannot).")] = False,
    deterministic: Annotated[bool, typer.Option(help="torch's deterministic algorithms and a fixed thread count: the same seed gives byte-identical files.")] = False,
    eval_items: Annotated[Optional[int], typer.Option(help=f"Items or windows of train and val that each evaluation measures, spread over a long text (default {EVAL_ITEMS:,}; fewer for a model as large as GPT-2).", show_default=False)] = None,
    test_items: Annotated[Optional[int], typer.Option(help=f"Items or windows of the test split that the final test loss measures (default {TEST_ITEMS:,}; fewer for a model as large as GPT-2).", show_default=False)] = None,
    cache_dir: CacheDir = None,
    threads: Threads = None,
    diagnostics: Annotated[Optional[int], typer.Option(help="Every N steps, record activations, gradients and update ratios per layer (diagnostics.jsonl; see `show training`).", show_default=False)] = None,
    dtype: Annotated[str, typer.Option(help="bfloat16: the matrix products in bfloat16 (autocast; weights, optimizer and evaluations stay float32), where the CPU or GPU has it: about 1.8x faster for GPT-2.")] = "float32",
    json: JsonOpt = False,
):
    """Train a model on FILE (default: the built-in names) and save the best checkpoint."""
    check_diagnostics(diagnostics, compile)
    if resume:
        refuse_given(ctx, RESUME_MAY_CHANGE, "--resume continues a run with its own options",
                     "only --max-steps, --max-seconds and --device may change")
    if init_from and (settings or type or tokenizer_path):
        raise MakemoreError("--init-from takes the model type, options and tokenizer from the checkpoint")
    rank = distributed.from_env(resolve_device(device))
    dev = distributed.device_for(rank, resolve_device(device))
    cfg = TrainConfig(max_steps=5000 if max_steps is None else max_steps, max_seconds=max_seconds, batch_size=batch_size, lr=lr,
                      eval_interval=eval_interval, seed=seed, device=dev, early_stop=early_stop, deterministic=deterministic,
                      ema=TrainConfig.ema if ema is None else ema, threads=thread_count(threads), eval_items=eval_items,
                      test_items=test_items, dtype=dtype)
    use_cache(cache_dir, bars=rank.main)
    if resume:
        run = runs.Run.resume(resume, data_path, max_steps, max_seconds, dev, rank, thread_count(threads))
    elif init_from:
        folder = out_dir or runs.default_folder(data_path, str(checkpoint.opened(init_from)[3].get("model_type")))  # its header: `fine_tune` loads and checks it
        run = runs.Run.fine_tune(folder, init_from, data_path, cfg, mode, overwrite, rank, pair_options(template, truncate), block_size)
    else:
        run = runs.Run.fresh(out_dir or runs.default_folder(data_path, type or "transformer"), data_path, type or "transformer", cfg,
                             parse_settings(settings), tokenizer_path, mode, block_size, overwrite, rank, pair_options(template, truncate))
    with run:
        fitted = fit_with_progress(run, rank, compile, diagnostics)
    if rank.main:
        render_fitted(run, fitted, rank, json)


def pair_options(template: Path | None, truncate: bool) -> dict:
    """--template (the file's text, checked) and --truncate, for the pairs data kind."""
    text = None
    if template is not None:
        text = check_template(decode_text(read_input(template, "template"), str(template)), f"--template {template}")
    return {"template": text, "truncate": truncate}


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


def fit_with_progress(run: runs.Run, rank, compile: bool, diagnostics: int | None = None) -> runs.Fitted:
    """`run.fit` behind a progress bar, Ctrl-C or SIGTERM asking it to stop after the step."""
    say = stderr if rank.main else Console(file=io.StringIO())
    say.print(run.dataset.describe() + (f"; resuming at step {run.state.step}" if run.state else "")
              + (f"; starting from {run.origin}" if run.origin and not run.state else ""))
    progress, track = training_progress(say)
    stop = Signals()
    try:
        with stop, progress:
            fitted = run.fit(track(run.model_type), stop.requested, rank, compile, warn=lambda m: say.print(flags(f"warning: {m}")),
                             diagnostics=diagnostics)
    except Diverged as e:
        raise diverged(e, say) from None
    finally:
        distributed.finish(rank)
    if fitted.interrupted and rank.main:
        say.print(f"interrupted at step {fitted.result.step}; saved {run.folder / checkpoint.LAST}; "
                  f"resume with: makemore train --resume {run.folder}")
        raise typer.Exit(stop.exit_code)
    return fitted


def check_diagnostics(diagnostics: int | None, compile: bool) -> None:
    if diagnostics is not None and diagnostics < 1:
        raise MakemoreError(f"`diagnostics` {diagnostics}: must be at least 1 (steps between records)")
    if diagnostics and compile:
        raise MakemoreError("`diagnostics` watches the eager model; leave out `compile`")


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
    temperature: TemperatureOpt = 1.0,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for reproducible samples.")] = None,
    prefix: Annotated[Optional[str], typer.Option("--prefix", "--prompt", help="Lines mode: start every item with this; text mode: the prompt (default: a new line).")] = None,
    min_len: Annotated[int, typer.Option(help="Lines mode: at least this many characters per item.")] = 0,
    max_len: Annotated[Optional[int], typer.Option(help="Lines mode: at most this many characters per item.")] = None,
    novel_only: Annotated[bool, typer.Option(help="Lines mode: only items not in the training set.")] = False,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Text mode: tokens to generate (default 500).", show_default=False)] = None,
    stream: Annotated[Optional[bool], typer.Option(help="Text mode: print text as it is made (default: on).", show_default=False)] = None,
    stop: StopOpt = [],
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    cache: Annotated[bool, typer.Option(help="Incremental decoding (KV cache / carried state); --no-cache reruns the whole context.")] = True,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    threads: Threads = None,
    json: JsonOpt = False,
):
    """New items (lines mode), a stream of text (text mode) or answers (pairs mode) from a trained model."""
    s = Sampling(temperature, top_k, top_p, min_p, repetition_penalty)
    threads_.start(threads, tune_decoding=seed is None)  # a seeded sample keeps the count: float sums depend on it
    ckpt = open_checkpoint(checkpoint_path, resolve_device(device), dtype)
    kind = ckpt.training.kind
    data.refuse_options(kind, {"min_len": min_len, "max_len": max_len is not None, "novel_only": novel_only,
                               "max_new_tokens": max_new_tokens is not None, "stream": stream is not None, "stop": bool(stop)},
                        str(ckpt.path))
    seen = data.training_items(ckpt.training.data)
    request = Request(s, n, seed, prefix, min_len, max_len, novel_only, max_new_tokens, cache, tuple(map(unescape, stop)),
                      data.template_of(ckpt.training.data))
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


def unescape(text: str) -> str:
    """`\\n`, `\\t` and `\\\\` typed in an option as the characters they stand for (a shell passes them literally)."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


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
def chat(
    checkpoint_path: CheckpointOpt = None,
    once: Annotated[Optional[str], typer.Option(help="Answer this one message and exit (with --json: as JSON).", show_default=False)] = None,
    temperature: TemperatureOpt = 1.0,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    stop: StopOpt = [],
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Tokens per answer at most (default: what the context leaves).", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for reproducible answers.")] = None,
    device: DeviceOpt = "cpu",
    threads: Threads = None,
    json: JsonOpt = False,
):
    """Talk to a model: each message is written with the run's prompt template and answered as it is made.
    Earlier turns stay in the context while they fit; Ctrl-C stops an answer, Ctrl-D ends the chat."""
    if json and once is None:
        raise MakemoreError("--json: only with --once (the chat itself is for people)")
    request = Request(Sampling(temperature, top_k, top_p, min_p, repetition_penalty), seed=seed, max_new_tokens=max_new_tokens,
                      stop=tuple(map(unescape, stop)))
    threads_.start(threads, tune_decoding=seed is None)
    ckpt = open_checkpoint(checkpoint_path, resolve_device(device))
    conv = Conversation(ckpt.model, ckpt.tokenizer, data.template_of(ckpt.training.data), request)
    if once is None:
        stderr.print(f"chatting with {ckpt.path}; Ctrl-C stops an answer, Ctrl-D ends", markup=False)
        converse(conv)
    elif json:
        print_json(next(e for e in conv.reply(once) if isinstance(e, Output)).row)
    else:
        answer(conv, once)


def converse(conv: Conversation) -> None:
    """Read a message, stream its answer, again, until the end of input; Ctrl-C stops an answer only."""
    while True:
        try:
            message = input("> ")
        except EOFError:
            out.print()
            return
        except KeyboardInterrupt:
            out.print()
            continue
        if not message.strip():
            continue
        try:
            answer(conv, message)
        except KeyboardInterrupt:
            out.print()
            stderr.print("(answer stopped)")
        except MakemoreError as e:
            stderr.print(Text.assemble(("error: ", "bold red"), flags(str(e))), soft_wrap=True)


def answer(conv: Conversation, message: str) -> None:
    for event in conv.reply(message):
        if isinstance(event, Dropped):
            which = "the oldest turn" if event.turns == 1 else f"the {event.turns} oldest turns"
            stderr.print(f"(left out {which} to fit the model's context)")
        elif isinstance(event, Piece):
            out.print(event.text, end="", soft_wrap=True)
    out.print()


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
    threads_.start(threads, tune_decoding=True)
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
    limit: Annotated[Optional[int], typer.Option(help=f"Items or windows to measure, spread evenly over the split or file (default {TEST_ITEMS:,}; fewer for a model as large as GPT-2).", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Measure all of it, however long.")] = False,
    cache_dir: CacheDir = None,
    threads: Threads = None,
    json: JsonOpt = False,
):
    """Loss (nats/token), perplexity, bits per character and per byte on the test split, or on FILE."""
    threads_.start(threads)
    if limit is not None and limit < 1:
        raise MakemoreError(f"`limit` {limit}: must be at least 1")
    use_cache(cache_dir)
    ckpt = open_checkpoint(checkpoint_path)
    result = runs.evaluate(ckpt, data_path, limit, every=all_)
    if json:
        print_json(result)
        return
    size = f"{result['items']} items" if "items" in result else f"{result['characters']:,} characters"
    out.print(f"{result['data']} ({result['on']}, {result['mode']} mode, {size}, {result['tokens']:,} tokens)")
    out.print(f"loss {result['loss']:.4f} nats/token   perplexity {result['perplexity']:.3f}   {result['bits_per_char']:.4f} bits/char"
              f"   {result['bits_per_byte']:.4f} bits/byte")
    if result["covered"] < result["of"]:
        out.print(f"measured on {result['covered']:,} of {result['of']:,} {result['unit']}, spread evenly (--all for every one)")


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
    ctx: typer.Context,
    data_path: DataFile = None,
    types: Annotated[str, typer.Option(help="Comma-separated model types (default: all).")] = ",".join(models.MODELS),
    runs_: Annotated[list[Path], typer.Option("--run", help="Instead of training: measure this trained or imported run (repeatable) on FILE, or on the test split of the first run trained on data.", show_default=False)] = [],
    all_: Annotated[bool, typer.Option("--all", help="With --run: measure every window or item, however long (default: a bounded number, spread evenly).")] = False,
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
    cache_dir: CacheDir = None,
    json: JsonOpt = False,
):
    """Train several model types on one split with one budget and seed; print a leaderboard. Or, with
    --run, rank runs already trained or imported by bits per byte on one split or file."""
    if runs_:
        refuse_given(ctx, ("data_path", "runs_", "all_", "threads", "cache_dir", "json"), "--run measures runs already trained",
                     "only FILE, --all, --threads, --cache-dir and --json go with it")
        threads_.start(threads)
        use_cache(cache_dir)
        rows, on = comparison.measure_runs(runs_, data_path, all_)
        if json:
            print_json({"on": on, "runs": rows})
        else:
            out.print(comparison.runs_table(rows, on))
        return
    if all_:
        raise MakemoreError("--all goes with --run (measuring runs already trained)")
    cfg = TrainConfig(max_steps=steps, max_seconds=max_seconds, batch_size=batch_size, lr=lr, eval_interval=eval_interval,
                      seed=seed, device=resolve_device(device), ema=TrainConfig.ema if ema is None else ema, threads=thread_count(threads))
    folder = out_dir or checkpoint.DEFAULT_DIR / f"compare-{data.stem(data_path)}"
    use_cache(cache_dir)
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
    runs_: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run folders of makemore train (each has a metrics.jsonl), or compare folders.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The PNG to write.")] = Path("curves.png"),
    x: Annotated[str, typer.Option("--x", help="The x axis: steps, time (wall seconds) or tokens (seen in training).")] = "steps",
    y: Annotated[str, typer.Option("--y", help="The y axis: loss (nats/token) or bits (per character).")] = "loss",
    json: JsonOpt = False,
):
    """Draw the loss curves of one or several runs into one PNG and print a summary table."""
    check_output(output, "plot", inputs=runs_, kind="png")
    summaries = [plotting.summarize(run, x, y) for run in plotting.runs_in(runs_)]
    for s in summaries:
        if s.skipped:
            stderr.print(f"warning: {s.path}: skipped line{'s' if len(s.skipped) > 1 else ''} "
                         f"{', '.join(map(str, s.skipped[:10]))}{' …' if len(s.skipped) > 10 else ''} (not a metrics row)")
    plotting.curves({s.row["run"]: s.series for s in summaries}, output, "val loss (solid), train loss (dotted)",
                    xlabel=plotting.X_AXES.get(x, x), ylabel=plotting.Y_AXES.get(y, y))
    rows = [s.row for s in summaries]
    if json:
        print_json({"output": str(output), "x": x, "y": y, "runs": rows,
                    "curves": {s.row["run"]: dict(zip(("x", "train", "val"), s.series)) for s in summaries}})
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
def data_(
    clear_cache: Annotated[bool, typer.Option(help="Remove every file text mode has encoded and kept (they are made again when needed).")] = False,
    cache_dir: CacheDir = None,
    json: JsonOpt = False,
):
    """The data sets built into makemore, usable by name in place of a file (a file of that name wins);
    and the cache of encoded text files."""
    if clear_cache:
        n, size = tokens.clear(cache_dir)
        print_json({"removed_files": n, "bytes": size}) if json else out.print(
            f"removed {n} files ({size / 1e6:,.1f} MB) from {tokens.cache_root(cache_dir)}")
        return
    entries, size = tokens.usage(cache_dir)
    cache = {"folder": str(tokens.cache_root(cache_dir)), "entries": entries, "bytes": size}
    rows = [{"name": name, "what": b.what, "bytes": len(data.builtin_bytes(name)), "source": b.source, "licence": b.licence}
            for name, b in data.BUILTINS.items()]
    if json:
        print_json({"builtin": rows, "cache": cache})
        return
    table = Table("name", "what", "size", "source", "licence")
    for r in rows:
        table.add_row(r["name"], r["what"], f"{r['bytes'] / 1e6:.2f} MB", r["source"], r["licence"])
    out.print(table)
    out.print(f"encoded text files: {entries} in {cache['folder']} ({size / 1e6:,.1f} MB); --clear-cache removes them")


show_app = typer.Typer(no_args_is_help=True, help="The lectures' pictures from your own data and models: PNGs, or their numbers with --json.")
app.add_typer(show_app, name="show")
PictureOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="The PNG to write (default: <picture>.png; with --json, none unless named).", show_default=False)]
DpiOpt = Annotated[int, typer.Option(help="Pixels per inch of the PNG.")]


def picture(output: Path | None, name: str, json: bool, inputs: list, dpi: int) -> Path | None:
    """Where the picture goes (None: --json alone), checked before any work, matplotlib with it."""
    if not 10 <= dpi <= 1000:
        raise MakemoreError(f"`dpi` {dpi}: must be from 10 to 1000")
    if output is None and json:
        return None
    path = check_output(output or Path(f"{name}.png"), "picture", inputs=inputs, kind="png")
    pictures.pyplot()
    return path


def shown_picture(result: dict, draw, path: Path | None, dpi: int, json: bool) -> None:
    """Draw `result` to `path` (if any), then print its numbers (--json) or say what was written."""
    size = draw(result, path, dpi) if path else None
    if json:
        print_json(result | ({"output": str(path), "size": list(size)} if path else {}))
    else:
        stderr.print(f"wrote {path} ({size[0]} x {size[1]} pixels)")


@show_app.command("counts")
@clean_errors(MakemoreError)
def show_counts(
    data_path: Annotated[Optional[Path], typer.Argument(metavar="[DATA]", help="A data file or a built-in set (default: the model's training data, else names).", show_default=False)] = None,
    checkpoint_path: Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="A bigram model: its learned table beside the counts.")] = None,
    smoothing: Annotated[float, typer.Option(help="Added to every count before the rows become probabilities (the lecture's 1).")] = 1.0,
    output: PictureOpt = None, dpi: DpiOpt = 60, json: JsonOpt = False,
):
    """The bigram count matrix of the data as the lecture draws it (each cell: the pair and its count), and its probabilities."""
    path = picture(output, "counts", json, [data_path, checkpoint_path], dpi)
    ckpt = checkpoint.load(checkpoint_path) if checkpoint_path else None
    result = pictures.counts(data_path, ckpt, smoothing)
    shown_picture(result, pictures.draw_counts, path, dpi, json)
    if not json:
        out.print(f"{result['data']}: {result['pairs']:,} pairs of {len(result['tokens'])} tokens; "
                  f"the counts' probabilities (smoothing {smoothing:g}): {result['nll']:.4f} nats/pair"
                  + (f"; the model's: {result['model']['nll']:.4f}" if "model" in result else ""))


@show_app.command("embeddings")
@clean_errors(MakemoreError)
def show_embeddings(checkpoint_path: CheckpointOpt = None, output: PictureOpt = None, dpi: DpiOpt = 100, json: JsonOpt = False):
    """The token embedding table in 2-D: its two dimensions, or a PCA with the variance each axis explains."""
    path = picture(output, "embeddings", json, [checkpoint_path], dpi)
    result = pictures.embeddings(open_checkpoint(checkpoint_path))
    shown_picture(result, pictures.draw_embeddings, path, dpi, json)
    if not json and result["explained"]:
        out.print(f"PCA of {result['dims']} dimensions: the axes explain {result['explained'][0]:.1%} and {result['explained'][1]:.1%} of the variance")


@show_app.command("attention")
@clean_errors(MakemoreError)
def show_attention(
    prompt: Annotated[str, typer.Option("--prompt", help="The text whose tokens attend to each other.")],
    checkpoint_path: CheckpointOpt = None, output: PictureOpt = None, dpi: DpiOpt = 80, json: JsonOpt = False,
):
    """Per block and head, a transformer's causal attention weights over the prompt's tokens."""
    path = picture(output, "attention", json, [checkpoint_path], dpi)
    result = pictures.attention(open_checkpoint(checkpoint_path), prompt)
    shown_picture(result, pictures.draw_attention, path, dpi, json)


@show_app.command("training")
@clean_errors(MakemoreError)
def show_training(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder trained with --diagnostics N.")],
    output: PictureOpt = None, dpi: DpiOpt = 80, json: JsonOpt = False,
):
    """The diagnostics of a run: activation and gradient histograms at the last record, update-to-data ratios over steps."""
    path = picture(output, "training", json, [run], dpi)
    shown_picture(pictures.training(run), pictures.draw_training, path, dpi, json)


show_app.command("merges")(tokenizer_cli.merges)  # the tokenizer's own listing, under both commands


def number(x, digits: int = 4) -> str:
    """A loss for a table: '-' where none was recorded (a null in the file)."""
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> None:
    tolerant_streams()
    app()
