"""The run: one training in one folder, from a data file to a saved, evaluated model.

A `Run` starts fresh (`Run.fresh`, or `Run.new` on data already prepared), continues its folder
(`Run.resume`) or fine-tunes another checkpoint (`Run.fine_tune`). Whichever way it starts, it
checks the folder before any data is read, holds the folder's lock (one writer), prepares the
data, builds or loads the model and resolves every training option once. Then `fit` runs the
one training loop, keeps the best checkpoint (only ever replaced by a better one) and the last
state beside it, and measures the test loss at the end, reporting events to a callback.
`evaluate` measures a checkpoint on its own test split or on any file. Only rank 0 writes files;
nothing here prints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from makemore import checkpoint, data, diagnostics as diagnosing, memory, models
from makemore.checkpoint import Checkpoint, TrainingRecord
from makemore.distributed import SINGLE, Rank
from makemore.errors import MakemoreError
from makemore.models.base import LanguageModel
from makemore.runlock import RunLock
from makemore.train import TEST_ITEMS, Eval, Step, TrainConfig, TrainState, evaluate as evaluate_split, items_for, loss_fn, make_optimizer, resolve, train
from safeio.files import check_folder, check_output, finite

METRICS = "metrics.jsonl"


@dataclass
class Fitted:
    checkpoint: Checkpoint
    result: TrainState
    test_loss: float | None  # None when training was interrupted
    test_bits_per_char: float | None

    @property
    def interrupted(self) -> bool:
        return self.result.stopped == "interrupted"


@dataclass
class Run:
    folder: Path
    dataset: data.Dataset
    model_type: str
    model: LanguageModel
    cfg: TrainConfig  # resolved: every default filled, once
    state: TrainState | None = None  # where a resumed run continues from
    origin: str | None = None  # the checkpoint a fine-tuning started from
    lock: RunLock | None = None
    imported: dict | None = None  # where the model came from when it was imported (`TrainingRecord.origin`), kept by fine-tuning

    @classmethod
    def fresh(cls, folder: Path, data_path: str | Path | None, model_type: str, cfg: TrainConfig, options: dict | None = None,
              tokenizer_path: str | Path | None = None, mode: str = "auto", block_size: int | None = None,
              overwrite: bool = False, rank: Rank = SINGLE, data_options: dict | None = None) -> Run:
        """A new model of `model_type` (with `options`, key=value) on the file at `data_path` (None: the built-in names);
        `data_options` are the data kind's own (pairs: template, truncate)."""
        models.make_config(model_type, 1, 1, **(options or {}))  # bad options are refused before any data is read
        check_run_folder(folder, [data_path], overwrite)
        lock = claim(folder, rank)
        with released_on_error(lock):
            dataset = data.prepare(data_path, cfg.seed, tokenizer_path, mode, block_size, options=data_options)
        return cls.new(folder, dataset, model_type, cfg, options, overwrite, rank, lock)

    @classmethod
    def new(cls, folder: Path, dataset: data.Dataset, model_type: str, cfg: TrainConfig, options: dict | None = None,
            overwrite: bool = False, rank: Rank = SINGLE, lock: RunLock | None = None) -> Run:
        """A new model of `model_type` on `dataset`, in `folder` (cleared of an earlier run's state)."""
        lock = lock or claim(folder, rank)
        with released_on_error(lock):
            config = model_config(model_type, dataset, options, cfg.batch_size)
            start_fresh(folder, lock, rank, overwrite)
        torch.manual_seed(cfg.seed)
        model = models.build(model_type, config)
        return cls(folder, dataset, model_type, model, resolve(cfg, model, type(dataset)), lock=lock)

    @classmethod
    def fine_tune(cls, folder: Path, source_path: str | Path, data_path: str | Path | None, cfg: TrainConfig,
                  mode: str = "auto", overwrite: bool = False, rank: Rank = SINGLE, data_options: dict | None = None,
                  block_size: int | None = None) -> Run:
        """The model, config and tokenizer of the checkpoint at `source_path`, trained on new data (with
        a shorter `block_size` where the model's positions allow: GPT-2's 1024 is slow on a CPU); an
        evaluation at step 0 shows where it starts, and the learning rate defaults lower (`resolve`)."""
        source = checkpoint.load(source_path)
        if block_size is not None:
            source.model.config = shorter_block(source.model.config, block_size, source.model_type)
        check_run_folder(folder, [data_path, source.path], overwrite)
        lock = claim(folder, rank)
        with released_on_error(lock):
            dataset = data.prepare(data_path, cfg.seed, mode=mode, block_size=source.model.config.block_size, tok=source.tokenizer,
                                   options=data_options)
            start_fresh(folder, lock, rank, overwrite)
        cfg = resolve(dataclasses.replace(cfg, eval_at_start=True), source.model, type(dataset), fine_tune=True)
        return cls(folder, dataset, source.model_type, source.model, cfg, origin=str(Path(source.path).resolve()), lock=lock,
                   imported=source.training.origin)

    @classmethod
    def resume(cls, folder: Path, data_path: str | Path | None = None, max_steps: int | None = None,
               max_seconds: float | None = None, device: str = "cpu", rank: Rank = SINGLE, threads: int | None = None) -> Run:
        """Continue the run in `folder` from its last state, with its own options; the budgets may grow."""
        if not folder.exists():
            raise MakemoreError(f"`resume` {folder}: no such run folder")
        folder = folder if folder.is_dir() else folder.parent
        check_run_folder(folder, [], overwrite=True)
        lock = claim(folder, rank)
        with released_on_error(lock):
            return cls._resume(folder, data_path, max_steps, max_seconds, device, lock, threads)

    @classmethod
    def _resume(cls, folder: Path, data_path, max_steps, max_seconds, device: str, lock: RunLock, threads: int | None) -> Run:
        last = folder / checkpoint.LAST
        if not last.is_file():
            raise MakemoreError(f"`resume` {folder}: no {checkpoint.LAST} there: nothing to resume (train it without `resume`)")
        ckpt = checkpoint.load(last)
        rec = ckpt.training
        if not rec.options or not rec.data:
            raise MakemoreError(f"{last}: damaged checkpoint metadata (no training options or data record)")
        if max_steps is not None and max_steps <= rec.step:  # before the data is read and encoded again
            raise MakemoreError(f"`max_steps` {max_steps}: the run in {folder} is already at step {rec.step}; give more steps")
        stored = rec.data.get("path", rec.data["name"])
        if data_path is not None and data.read_source(data_path).sha256 != rec.data["sha256"]:
            raise MakemoreError(f"`resume` {folder}: {data_path} is not the data this run was trained on ({stored}); "
                                f"to train on other data, use `init_from`")
        budgets = {k: v for k, v in (("max_steps", max_steps), ("max_seconds", max_seconds), ("threads", threads)) if v is not None}
        try:
            cfg = TrainConfig(**rec.options | {"device": device} | budgets)
        except TypeError as e:
            raise MakemoreError(f"{last}: damaged training options ({e})") from None
        dataset = data.prepare(stored, rec.data["split_seed"], mode=data.kind_of(rec.data).kind,
                               block_size=ckpt.model.config.block_size, tok=ckpt.tokenizer, options=data.kind_of(rec.data).options_of(rec.data))
        if dataset.sha256 != rec.data["sha256"]:
            raise MakemoreError(f"{stored}: the file has changed since this run started; it cannot be resumed exactly")
        dataset.name = rec.data["name"]  # as the run knew it (it was read from the recorded absolute path)
        best = checkpoint.load(folder / checkpoint.FILENAME) if (folder / checkpoint.FILENAME).is_file() else None
        cfg = resolve(cfg, ckpt.model, type(dataset))
        state = TrainState(optimizer=make_optimizer(ckpt.model, cfg), best_weights=best.model.state_dict() if best else None)
        tensors, info = checkpoint.read_state(last)
        try:
            state.load_state_dict(tensors, info)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise MakemoreError(f"{last}: damaged training state ({type(e).__name__}: {e}); start again with `overwrite`") from None
        saved = best.training.best_val_loss if best else None
        if saved is not None and saved < state.best_val_loss:  # killed after a better save than the last state knew:
            state.best_val_loss, state.best_step = saved, best.training.best_step or state.step  # the file decides
        return cls(folder, dataset, ckpt.model_type, ckpt.model, cfg, state=state, origin=rec.init_from, lock=lock, imported=rec.origin)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        if self.lock:
            self.lock.release()

    def record(self, st: TrainState, **extra) -> TrainingRecord:
        best = st.best_val_loss if math.isfinite(st.best_val_loss) else None
        return TrainingRecord(step=st.step, best_step=st.best_step, best_val_loss=best, data=self.dataset.record(),
                              options=dataclasses.asdict(self.cfg), init_from=self.origin, origin=self.imported, **extra)

    def fit(self, on_event: Callable | None = None, should_stop: Callable[[], bool] | None = None, rank: Rank = SINGLE,
            compile: bool = False, warn: Callable[[str], None] = lambda message: None, diagnostics: int | None = None) -> Fitted:
        """Train until the budget; save the best model as it improves and `last.safetensors` (the latest
        weights and training state) at the end; then measure the test loss. With `diagnostics` N,
        every N steps the activations, gradients and update ratios go to diagnostics.jsonl."""
        cfg, model, folder, splits = self.cfg, self.model, self.folder, self.dataset.splits
        model.to(cfg.device)
        ckpt = Checkpoint(self.model_type, model, self.dataset.tokenizer, TrainingRecord())
        out = folder / checkpoint.FILENAME
        if rank.main:
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(folder)
        log = MetricsLog(folder / METRICS, cfg.eval_interval // 10, timings=not cfg.deterministic) if rank.main else None

        def on_improved(st: TrainState) -> None:
            if rank.main:
                ckpt.training = self.record(st)
                checkpoint.save(ckpt, out)

        def events(event) -> None:
            if log:
                log(event)
            if on_event:
                on_event(event)

        net = compiled_forward(model, splits["train"], warn) if compile else None
        if rank.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(net if net is not None else model)
        switched = cfg.deterministic and not torch.are_deterministic_algorithms_enabled()
        if switched:  # only when asked, and back only then: each call imports torch's compiler (1.8 s)
            torch.use_deterministic_algorithms(True)
        watch = None
        if diagnostics and rank.main:
            watch = diagnosing.Diagnostics(model, diagnostics, folder / diagnosing.FILENAME, self.state.step if self.state else 0)
        try:
            result = train(model, splits["train"], splits["val"], cfg, self.state, events, on_improved, should_stop, rank, net, watch)
        finally:
            if switched:
                torch.use_deterministic_algorithms(False)
            if watch:
                watch.close()
        if rank.world > 1 and not rank.same(sum(float(p.detach().double().sum()) for p in model.parameters())):
            raise MakemoreError("the training processes ended with different parameters; the run is not saved")
        if rank.main:
            ckpt.training = self.record(result, stopped=result.stopped)
            checkpoint.save(ckpt, folder / checkpoint.LAST, result.latest_weights, result.state_dict(timings=not cfg.deterministic))
        if result.stopped == "interrupted":
            return Fitted(ckpt, result, None, None)
        test = measure(model, splits["test"], cfg.test_items)
        test_loss, bpc = test["loss"], test["bits_per_char"]
        timing = {} if cfg.deterministic else {"seconds": round(result.elapsed, 2), "steps_per_second": round(result.steps_per_second, 2)}
        ckpt.training = self.record(result, test_loss=test_loss, test_bits_per_char=bpc, **timing)
        if rank.main:
            ckpt.path = checkpoint.save(ckpt, out)
        return Fitted(ckpt, result, test_loss, bpc)


def shorter_block(config, block_size: int, model_type: str):
    """`config` training on `block_size` positions of its positional table (a transformer's `n_positions`)."""
    if block_size == config.block_size:
        return config
    if not hasattr(config, "n_positions"):
        raise MakemoreError(f"`block_size` {block_size}: a {model_type} fine-tunes at its own block size ({config.block_size})")
    if not 1 <= block_size <= config.positions:
        raise MakemoreError(f"`block_size` {block_size}: the model has {config.positions} positions; give 1 to {config.positions}")
    return dataclasses.replace(config, block_size=block_size, n_positions=config.positions)


def default_folder(data_path: str | Path | None, model_type: str) -> Path:
    """checkpoints/<data>-<type>: where a run goes when no folder is named."""
    return checkpoint.DEFAULT_DIR / f"{data.stem(data_path)}-{model_type}"


def check_run_folder(folder: Path, inputs: list, overwrite: bool = False) -> None:
    """Before any data is read: `folder` can be a run folder, its checkpoint is none of the `inputs`,
    and it holds no model unless `overwrite` says to replace it."""
    if folder.exists() and not folder.is_dir():
        raise MakemoreError(f"`out` {folder}: is a file, not a run folder")
    check_folder(folder, f"`out` {folder}")
    check_output(folder / checkpoint.FILENAME, "checkpoint", inputs, owner=True)
    check_unused(folder, overwrite)


def check_unused(folder: Path, overwrite: bool) -> None:
    if (folder / checkpoint.FILENAME).exists() and not overwrite:
        raise MakemoreError(f"{folder}: already holds a trained model; continue it (`resume` {folder}), "
                            f"start afresh (`overwrite`) or train into another `out`")


def claim(folder: Path, rank: Rank) -> RunLock:
    """The folder's lock, taken now if the folder exists (a new folder is locked once the data is read)."""
    lock = RunLock(folder)
    if rank.main and folder.is_dir():
        lock.acquire()
    return lock


@contextmanager
def released_on_error(lock: RunLock) -> Iterator[None]:
    """The lock is let go if the block fails (a run that never starts holds no folder)."""
    try:
        yield
    except BaseException:
        lock.release()
        raise


def start_fresh(folder: Path, lock: RunLock, rank: Rank, overwrite: bool) -> None:
    """A new training's first act in its folder, now that the data is read: take the lock (rank 0),
    check the folder again (another training may have finished there meanwhile) and clear an
    earlier run's state and curves."""
    if not rank.main:
        return
    lock.acquire()
    check_unused(folder, overwrite)
    clear_earlier(folder)


def clear_earlier(folder: Path) -> None:
    """Remove an earlier run's training state and curves from `folder`, which a new model takes over
    (a fresh training, an import): a resume or a plot would otherwise take them for the new one's."""
    for name in (checkpoint.LAST, METRICS, diagnosing.FILENAME):
        (folder / name).unlink(missing_ok=True)


def model_config(model_type: str, dataset: data.Dataset, options: dict | None, batch_size: int | None):
    """The config of a new model for `dataset`, its memory need checked before anything is allocated."""
    batch_size = batch_size or dataset.default_batch_size
    config = models.make_config(model_type, dataset.tokenizer.vocab_size, dataset.block_size, dataset.kind, **(options or {}))
    n = memory.count_params(lambda: models.build(model_type, config))
    need = memory.training_bytes(n, batch_size, dataset.block_size, dataset.tokenizer.vocab_size, config.width)
    memory.require(need, f"training this {model_type} ({n:,} parameters, batch {batch_size} x {dataset.block_size} tokens)",
                   "use a smaller model (`set`) or `batch_size`")
    return config


class MetricsLog:
    """Appends one JSON line per evaluation, and per `every` steps, to a run's metrics.jsonl."""

    def __init__(self, path: Path, every: int, timings: bool = True):
        self.path, self.every, self.timings = path, max(1, every), timings  # no timings: the same seed, the same bytes
        self.tokens, self.since = 0, None
        self.seen = last_tokens(path)  # tokens trained on so far (a resumed run counts on)

    def __call__(self, event: Step | Eval) -> None:
        if isinstance(event, Step):
            self.tokens += event.tokens
            self.seen += event.tokens
            if event.step % self.every:
                return
            speed = self.tokens / (event.elapsed - self.since) if self.since is not None else None  # none for the first row
            row = {"step": event.step, "train_loss": event.loss, "lr": event.lr, "grad_norm": event.grad_norm,
                   "tokens_per_s": speed, "wall": event.elapsed, "tokens": self.seen}
            self.tokens, self.since = 0, event.elapsed
        else:
            row = {"step": event.step, "eval_train_loss": event.train_loss, "val_loss": event.val_loss, "wall": event.elapsed}
        if not self.timings:
            row.update((k, None) for k in ("tokens_per_s", "wall") if k in row)
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(finite(row)) + "\n")
        except OSError as e:  # a full disk, say: name this file, not "file"
            raise OSError(e.errno, e.strerror, str(self.path)) from None


def last_tokens(path: Path) -> int:
    """The tokens count of the last step row in a metrics.jsonl (0 for none, or a file from before the count)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(row, dict) and type(row.get("tokens")) is int:
            return row["tokens"]
    return 0


def remove_stale_temp_files(folder: Path) -> None:
    """Temporary files a killed save left behind (`.model.safetensors.XXXX.tmp`)."""
    if folder.is_dir():
        for name in (checkpoint.FILENAME, checkpoint.LAST):
            for tmp in folder.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def compiled_forward(model, split, warn: Callable[[str], None]):
    """`torch.compile(model)`, tried on one small batch; on any failure a warning and None (eager)."""
    try:
        compiled = torch.compile(model)
        x, y, _ = split.batch(2, torch.Generator().manual_seed(0))
        loss_fn(compiled(x), y).backward()
        model.zero_grad(set_to_none=True)
        return compiled
    except Exception as e:  # noqa: BLE001 -- no compiler, unsupported platform: any failure means eager
        model.zero_grad(set_to_none=True)
        warn(f"`compile`: torch.compile does not work here ({type(e).__name__}); training in eager mode")
        return None


def metrics(loss: float, n_tokens: int, n_chars: int, bytes_per_char: float = 1.0) -> dict:
    """Loss in nats per token, perplexity, bits per character (the end of an item counts as one) and
    bits per UTF-8 byte (the figure that compares models with different tokenizers)."""
    bits_per_char = loss * n_tokens / (math.log(2) * max(n_chars, 1))
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_char": bits_per_char,
        "bits_per_byte": bits_per_char / bytes_per_char,
        "tokens": n_tokens,
    }


def measure(model, split, limit: int | None, bytes_per_char: float = 1.0) -> dict:
    """`metrics` of `model` on `limit` items or windows of `split` (all of it where None or fewer), and
    how many it covered of how many. Bits per character of a part use the split's characters per token."""
    loss, n_tokens = evaluate_split(model, split, limit)
    n_chars = split.n_chars * n_tokens / max(split.targets, 1)
    unit = "items" if isinstance(split, data.Items) else "windows"
    return metrics(loss, n_tokens, n_chars, bytes_per_char) | {"covered": split.covered(limit), "of": len(split), "unit": unit}


def evaluate(ckpt: Checkpoint, path: str | Path | None = None, limit: int | None = None, every: bool = False,
             split_of: TrainingRecord | None = None) -> dict:
    """Metrics of `ckpt` on `limit` items or windows (default: as many as its size allows, `items_for`;
    all of them with `every`) of the file at `path`, or, when `path` is None, of the test split of the
    run `split_of` describes (default: its own; `compare --run` measures several runs on one split,
    each through its own tokenizer)."""
    limit = None if every else limit or items_for(ckpt.model, TEST_ITEMS)
    block_size = ckpt.model.config.block_size
    if path is None:
        record = split_of or ckpt.training
        kind = record.kind
        src = data.source_of(record.data, str(ckpt.path))
        split, which = kind.test_split(src, record.data, ckpt.tokenizer, block_size), "test split"
    else:
        kind = ckpt.training.kind
        src = data.read_source(path)
        split, which = kind.encode_file(src, ckpt.tokenizer, block_size, **kind.options_of(ckpt.training.data)), "file"
    return ({"data": src.name, "on": which, "mode": kind.kind, **kind.sizes_of(split)}
            | measure(ckpt.model, split, limit, src.bytes_per_char))  # the file's: its splits differ little
