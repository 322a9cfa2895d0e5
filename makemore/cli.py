"""The `makemore` command: train, sample, eval, info (and compare). Each command parses its
options, calls one library function and renders the result; errors become one line, exit 2."""

from __future__ import annotations

import codecs
import io
import signal
import threading

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import torch

from makemore import checkpoint, distributed, models, runs
from makemore import compare as comparison
from makemore.errors import MakemoreError
from makemore.runlock import RunLock
from makemore import sample as generate
from makemore.sample import Sampling
from makemore.train import Diverged, Eval, Step, TrainConfig, resolve_device
from tokenizer import cli as tokenizer_cli
from tokenizer.cliutil import clean_errors, print_json, stderr, tolerant_streams
from tokenizer.files import check_folder, check_output, decode_text, read_input, read_stdin
from tokenizer.files import shown

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn to generate more of whatever a text file holds: items, one per line, or running text.")
app.add_typer(tokenizer_cli.app, name="tokenizer", help="Train and apply byte-level BPE tokenizers (also the `tokenizer` command).")
out = Console(highlight=False, markup=False, soft_wrap=True)

DataFile = Annotated[Optional[Path], typer.Argument(help="UTF-8 text: one item per line, or running text (default: the built-in names).", show_default=False)]
ModeOpt = Annotated[str, typer.Option(help="lines (one item per line), text (one running text) or auto (decide from the file).")]
BlockSizeOpt = Annotated[Optional[int], typer.Option(help=f"Context in tokens (text mode default {runs.TEXT_BLOCK_SIZE}; lines mode: the longest item + 1).")]
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
    return check_output(folder / checkpoint.FILENAME, "checkpoint", inputs, owner=True)


@app.command()
@clean_errors(MakemoreError)
def train(
    ctx: typer.Context,
    data: DataFile = None,
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
    init_from: Annotated[Optional[Path], typer.Option(help="Fine-tune: start from this checkpoint's weights, config and tokenizer.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start afresh in a run folder that already holds a checkpoint.")] = False,
    early_stop: Annotated[Optional[int], typer.Option(help="Stop after N evaluations without a better val loss.")] = None,
    ema: Ema = None,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (falls back to eager mode where it cannot).")] = False,
    deterministic: Annotated[bool, typer.Option(help="torch's deterministic algorithms: the same seed gives byte-identical checkpoints.")] = False,
    json: JsonOpt = False,
):
    """Train a model on FILE (default: the built-in names) and save the best checkpoint."""
    if resume:
        refuse_given(ctx, RESUME_MAY_CHANGE, "--resume continues a run with its own options",
                     "only --max-steps, --max-seconds and --device may change")
    if init_from and (settings or type or tokenizer_path or block_size):
        raise MakemoreError("--init-from takes the model type, options, tokenizer and block size from the checkpoint")
    rank = distributed.from_env(resolve_device(device))
    dev = distributed.device_for(rank, resolve_device(device))
    if resume:
        if not resume.exists():
            raise MakemoreError(f"--resume {resume}: no such run folder")
        folder = resume if resume.is_dir() else resume.parent
        check_run_folder(folder, [])
    else:
        type = type or "transformer"
        models.lookup(type)
        cfg = TrainConfig(max_steps=5000 if max_steps is None else max_steps, max_seconds=max_seconds, batch_size=batch_size, lr=lr,
                          eval_interval=eval_interval, seed=seed, device=dev, early_stop=early_stop, deterministic=deterministic,
                          ema=TrainConfig.ema if ema is None else ema)
        options = parse_settings(settings)
        models.make_config(type, 1, 1, **options)  # reject bad options before reading any data
        source = checkpoint.load(init_from) if init_from else None
        folder = out_dir or checkpoint.DEFAULT_DIR / run_dir(data, source.model_type if source else type)
        check_run_folder(folder, [data, source.path if source else None])  # before any data is read
        runs.check_unused(folder, overwrite)
    lock = RunLock(folder)
    try:
        if rank.main and folder.is_dir():
            lock.acquire()  # before reading the run's state; a new folder is locked once the data is read
        if resume:
            plan = runs.plan_resume(folder, data, max_steps, max_seconds, dev)
        elif source:
            plan = runs.plan_init_from(source, data, seed, mode, cfg)
        else:
            prep = runs.prepare(data, seed, tokenizer_path, mode, block_size)
            plan = runs.Plan(type, prep, cfg, config=runs.model_config(type, prep, options, cfg.batch_size))
        if rank.main:
            lock.acquire()
            if not resume:
                runs.start_fresh(folder, overwrite)
        run_training(plan, folder, rank, compile, json, resume is not None)
    finally:
        lock.release()


RESUME_MAY_CHANGE = ("max_steps", "max_seconds", "device", "compile", "json", "resume", "data")  # all else is the run's own


def refuse_given(ctx: typer.Context, allowed: tuple[str, ...], what: str, hint: str) -> None:
    """An error naming every option the user typed (not left at its default) that is not in `allowed`."""
    given = [p for p in ctx.command.params if p.name not in allowed
             and getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")]
    if given:
        names = ", ".join(max(p.opts, key=len) for p in given)
        raise MakemoreError(f"{what}; it cannot change {names}: {hint}")


def run_training(plan: runs.Plan, folder: Path, rank, compile: bool, json: bool, resumed: bool) -> None:
    """Train `plan` into `folder` (whose lock the caller holds) with a progress bar; print the summary."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if plan.cfg.deterministic and not was_deterministic:  # only when asked: the call imports torch's compiler (1 s)
        torch.use_deterministic_algorithms(True)
    say = stderr if rank.main else Console(file=io.StringIO())
    say.print(plan.prep.describe() + (f"; resuming at step {plan.state.step}" if resumed else "")
              + (f"; starting from {plan.origin}" if plan.origin and not plan.state else ""))
    progress, track = training_progress(say)
    stop = Signals()
    try:
        with stop, progress:
            fitted = runs.fit(plan.model_type, plan.prep, plan.cfg, folder / checkpoint.FILENAME, plan.config,
                              track(plan.model_type), model=plan.model, state=plan.state, origin=plan.origin,
                              should_stop=stop.requested, rank=rank, compile=compile, warn=lambda m: say.print(f"warning: {m}"))
    except Diverged as e:
        raise diverged(e, say) from None
    finally:
        if plan.cfg.deterministic and not was_deterministic:
            torch.use_deterministic_algorithms(False)
        distributed.finish(rank)
    if not rank.main:
        return
    if fitted.interrupted:
        say.print(f"interrupted at step {fitted.result.step}; saved {folder / checkpoint.LAST}; "
                  f"resume with: makemore train --resume {folder}")
        raise typer.Exit(stop.exit_code)
    summary = {
        "checkpoint": str(folder / checkpoint.FILENAME), "type": plan.model_type,
        "parameters": models.n_params(fitted.checkpoint.model), "steps": fitted.result.step,
        "seconds": round(fitted.result.elapsed, 1), "steps_per_second": round(fitted.result.steps_per_second, 1),
        "best_val_loss": fitted.result.best_val_loss, "test_loss": fitted.test_loss,
        "stopped": fitted.result.stopped, "world_size": rank.world,
        "global_batch_size": (plan.cfg.batch_size or plan.prep.splits["train"].default_batch_size) * rank.world,
    }
    if json:
        print_json(summary)
    else:
        out.print(f"saved {summary['checkpoint']}: {plan.model_type}, {summary['parameters']:,} parameters, "
                  f"{summary['steps']} steps in {summary['seconds']} s; val {summary['best_val_loss']:.4f}, test {summary['test_loss']:.4f}"
                  + ("" if rank.world == 1 else f"; {rank.world} processes, global batch {summary['global_batch_size']}")
                  + (" (stopped early: no better val loss)" if fitted.result.stopped == "early-stop" else ""))


def diverged(e: Diverged, console: Console) -> typer.Exit:
    """A run whose loss stopped being finite: one line, exit code 1 (not bad input, but a failed run)."""
    console.print(Text.assemble(("error: ", "bold red"), str(e)))
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


def open_checkpoint(path: Path | None, device: str = "cpu") -> checkpoint.Checkpoint:
    """The checkpoint named, or the latest one (saying which)."""
    ckpt = checkpoint.load(path or checkpoint.latest(), device)
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
    cache: Annotated[bool, typer.Option(help="Incremental decoding (KV cache, carried state); --no-cache reruns the context.")] = True,
    device: DeviceOpt = "cpu",
    json: JsonOpt = False,
):
    """New items (lines mode) or a stream of text (text mode) from a trained model."""
    s = Sampling(temperature, top_k, top_p, min_p)
    ckpt = open_checkpoint(checkpoint_path, resolve_device(device))
    if runs.ckpt_mode(ckpt) == "text":
        refuse_options_of("lines", ckpt, (("--min-len", min_len), ("--max-len", max_len is not None), ("--novel-only", novel_only)))
        n = 1 if n is None else n
        if not 1 <= n <= MAX_STREAMS:
            raise MakemoreError(f"-n {n}: text mode makes 1 to {MAX_STREAMS} streams")
        return sample_text(ckpt, n, s, seed, prefix, 500 if max_new_tokens is None else max_new_tokens, stream is not False, cache, json)
    refuse_options_of("text", ckpt, (("--max-new-tokens", max_new_tokens is not None), ("--stream/--no-stream", stream is not None)),
                      " (its items end by themselves; see --max-len)")
    n = 20 if n is None else n
    seen = runs.training_items(ckpt)
    if novel_only and seen is None:
        raise MakemoreError(f"--novel-only: {ckpt.path}'s training data is not found or has changed, so new cannot be told from seen")
    items = generate.novel_items(ckpt.model, ckpt.tokenizer, n, s, seed, prefix or "", min_len, max_len, cache,
                                 seen if novel_only else None)
    rows = [{"text": it.text, "new": None if seen is None else it.text not in seen, "logprob": it.logprob} for it in items]
    if json:
        print_json(rows)
        return
    if seen is None:
        stderr.print("(training data not found or changed: cannot tell new samples from seen ones)")
    for row in rows:
        tag = Text("") if row["new"] is None else (Text("new  ", "green") if row["new"] else Text("seen ", "dim"))
        out.print(Text.assemble(tag, row["text"]))
    if len(rows) < n:
        wanted = " and ".join(w for w, on in (("new", novel_only), (f"at least {min_len} characters long", min_len)) if on)
        stderr.print(f"only {len(rows)} of {n} samples were {wanted} after {generate.NOVEL_TRIES} tries per sample")
    if seen is not None:
        k = sum(r["new"] for r in rows)
        stderr.print(f"{k} of {len(rows)} are new (not in the training set)")


MAX_STREAMS = 100  # text mode: streams per call


def refuse_options_of(mode: str, ckpt, options, hint: str = "") -> None:
    """An error for the first of `options` ((name, given) pairs) that only means something in `mode`,
    given for `ckpt`, a model of the other mode."""
    for name, given in options:
        if given:
            other = "lines" if mode == "text" else "text"
            raise MakemoreError(f"{name}: a {mode}-mode option; {ckpt.path} is a {other}-mode model{hint}")


def sample_text(ckpt, n: int, s, seed, prompt, max_new_tokens: int, stream: bool, cache: bool, json: bool) -> None:
    """Text mode: the prompt, then `max_new_tokens` tokens, printed as they come (whole characters only)."""
    tok = ckpt.tokenizer
    ids = generate.encode_prompt(tok, prompt, "--prompt") if prompt else generate.default_prompt(tok)
    if not ids:
        ids = generate.default_prompt(tok)
    results = []
    for k in range(n):
        text = TextStream(tok)
        show = stream and not json
        if show and prompt:
            out.print(prompt, end="", soft_wrap=True)
        try:
            for i in generate.stream_text(ckpt.model, tok, ids, max_new_tokens, s, None if seed is None else seed + k, cache):
                piece = text.add(i)
                if show and piece:
                    out.print(piece, end="", soft_wrap=True)
        except KeyboardInterrupt:
            if show:
                out.print()
            stderr.print(f"stopped after {len(text.ids)} tokens")
            raise typer.Exit(130) from None
        results.append({"prompt": prompt or "", "text": text.finish(), "tokens": len(text.ids)})
        if show:
            out.print(text.tail)
        elif not json:
            out.print((prompt or "") + results[-1]["text"], soft_wrap=True)
    if json:
        print_json(results)


class TextStream:
    """Decodes generated ids to text as they come; a character split across tokens waits for its rest."""

    def __init__(self, tok):
        self.tok, self.ids = tok, []
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.parts: list[str] = []
        self.tail = ""

    def add(self, i: int) -> str:
        self.ids.append(i)
        raw = self.tok.decode_bytes([i]) if hasattr(self.tok, "decode_bytes") else self.tok.decode([i]).encode("utf-8")
        piece = self.decoder.decode(raw)
        self.parts.append(piece)
        return piece

    def finish(self) -> str:
        self.tail = self.decoder.decode(b"", final=True)
        self.parts.append(self.tail)
        return "".join(self.parts)


@app.command()
@clean_errors(MakemoreError)
def score(
    strings: Annotated[Optional[list[str]], typer.Argument(help="Strings to score (default: --file, or standard input, one per line).", show_default=False)] = None,
    checkpoint_path: CheckpointOpt = None,
    file: Annotated[Optional[Path], typer.Option(help="Score each line of this file.")] = None,
    sort: Annotated[bool, typer.Option(help="Likeliest first.")] = False,
    tokens: Annotated[bool, typer.Option(help="Show each token's log-probability.")] = False,
    device: DeviceOpt = "cpu",
    json: JsonOpt = False,
):
    """Log-probability of each string under the model (lines mode: as a whole item), and bits per character."""
    ckpt = open_checkpoint(checkpoint_path, resolve_device(device))
    if strings and file:
        raise MakemoreError("give strings or --file, not both")
    if file is not None:
        lines, numbers = data_lines(file)
        where = [f"{file}:{k}" for k in numbers]
    elif strings:
        lines, where = list(strings), [f"argument {k + 1}" for k in range(len(strings))]
    else:
        lines, numbers = data_lines(None)
        where = [f"standard input:{k}" for k in numbers]
    rows, failed = [], 0
    mode = runs.ckpt_mode(ckpt)
    for text, place in zip(lines, where):
        try:
            sc = generate.score(ckpt.model, ckpt.tokenizer, text, mode)
        except MakemoreError as e:
            stderr.print(Text.assemble(("error: ", "bold red"), f"{place}: {e}"), soft_wrap=True)
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


def data_lines(path: Path | None) -> tuple[list[str], list[int]]:
    """The non-blank lines of a file (or of standard input) and their line numbers."""
    from makemore.data import lines_of

    text = read_stdin() if path is None else decode_text(read_input(path), str(path))
    return lines_of(text)


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
    if "step" in t:
        table.add_row("training", f"{t['step']} steps; best val loss {number(t.get('best_val_loss'))} at step {t.get('best_step', '-')}"
                      + (f"; test loss {number(t['test_loss'])}" if "test_loss" in t else ""))
    if isinstance(t.get("options"), dict):
        o = t["options"]
        table.add_row("options", f"batch size {o.get('batch_size')}, lr {o.get('lr')}"
                      + (f", ema {o['ema']}" if o.get("ema") else "") + (f", seed {o['seed']}" if "seed" in o else ""))
    out.print(table)


@app.command()
@clean_errors(MakemoreError)
def compare(
    data: DataFile = None,
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
    json: JsonOpt = False,
):
    """Train several model types on one split with one budget and seed; print a leaderboard."""
    chosen = list(dict.fromkeys(t.strip() for t in types.split(",") if t.strip()))  # each type once
    if not chosen:
        raise MakemoreError("--types: name at least one model type")
    for t in chosen:
        models.lookup(t)
    cfg = TrainConfig(max_steps=steps, max_seconds=max_seconds, batch_size=batch_size, lr=lr,
                      eval_interval=eval_interval, seed=seed, device=resolve_device(device), ema=TrainConfig.ema if ema is None else ema)
    folder = out_dir or checkpoint.DEFAULT_DIR / f"compare-{'names' if data is None else Path(data).stem}"
    for t in chosen:
        check_run_folder(folder / t, [data])
        runs.check_unused(folder / t, overwrite)
    check_output(folder / "leaderboard.md", "leaderboard", kind="text")
    check_output(folder / "loss_curves.png", "plot", kind="png")
    prep = runs.prepare(data, seed, tokenizer_path, mode, block_size)
    for t in chosen:
        runs.model_config(t, prep, None, cfg.batch_size)  # each fits in memory, before any trains
    stderr.print(prep.describe())
    progress, track = training_progress(stderr, quiet_evals=True)
    try:
        with progress:
            rows = comparison.compare(prep, chosen, cfg, folder, on_start=track, overwrite=overwrite)
    except Diverged as e:
        raise diverged(e, stderr) from None
    table_path, png_path = comparison.write_report(rows, folder)
    if json:
        print_json([r.summary() for r in sorted(rows, key=lambda r: r.test_loss)])
    else:
        table = Table(title=f"{prep.name} ({prep.mode} mode): {steps} steps" + (f" or {max_seconds:g} s" if max_seconds else "")
                      + " per type; loss in nats/token")
        for col in ("type", "params", "train", "val", "test", "bits/char", "steps/s", "seconds"):
            table.add_column(col, justify="left" if col == "type" else "right")
        for r in sorted(rows, key=lambda r: r.test_loss):
            table.add_row(r.type, f"{r.parameters:,}", f"{r.train_loss:.4f}", f"{r.val_loss:.4f}", f"{r.test_loss:.4f}",
                          f"{r.test_bits_per_char:.4f}", f"{r.steps_per_second:.1f}", f"{r.seconds:.1f}")
        out.print(table)
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
    from makemore import plot as plotting

    check_output(output, "plot", inputs=runs_, kind="png")
    series, rows = {}, []
    for run in runs_:
        metrics, path, skipped = plotting.read_metrics(run)
        if skipped:
            stderr.print(f"warning: {path}: skipped line{'s' if len(skipped) > 1 else ''} "
                         f"{', '.join(map(str, skipped[:10]))}{' …' if len(skipped) > 10 else ''} (not a metrics row)")
        evals = [r for r in metrics if "val_loss" in r]
        best = min((r for r in evals if r["val_loss"] is not None), key=lambda r: r["val_loss"])
        speeds = [r["tokens_per_s"] for r in metrics if r.get("tokens_per_s")]
        rows.append({"run": str(run), "steps": max(r["step"] for r in metrics), "best_val_loss": best["val_loss"],
                     "best_step": best["step"], "last_val_loss": evals[-1]["val_loss"],
                     "tokens_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None, "wall_s": max(r.get("wall") or 0 for r in metrics)})
        series[str(run)] = ([r["step"] for r in evals], [r.get("eval_train_loss") for r in evals], [r["val_loss"] for r in evals])
    if plotting.matplotlib_pyplot() is None:
        raise MakemoreError(f"plot needs matplotlib, the optional plot extra: {plotting.EXTRA}")
    plotting.curves(series, output, "val loss (solid), train loss (dotted)")
    if json:
        print_json({"output": str(output), "runs": rows})
        return
    table = Table("run", "steps", "best val", "at step", "last val", "tokens/s", "wall s")
    for r in rows:
        table.add_row(Text(r["run"]), str(r["steps"]), number(r["best_val_loss"]), str(r["best_step"]), number(r["last_val_loss"]),
                      f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-", f"{r['wall_s']:.1f}")
    out.print(table)
    stderr.print(f"wrote {output}")


def number(x, digits: int = 4) -> str:
    """A loss for a table: '-' where none was recorded (a null in the file)."""
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> None:
    tolerant_streams()
    app()
