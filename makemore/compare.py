"""Compare: train several model types on one split with one budget and seed, and rank them; or
measure runs already trained (or imported) on one split or file, and rank them by bits per byte.

Every type is a `run.Run` on the one prepared data set, as `makemore train` is, so the leaderboard measures
exactly what users get. Speed is the median time of one optimisation step, read from the
trainer's step events (robust to evaluation pauses and to a noisy machine).
The report is a markdown table and, when matplotlib is installed, a PNG of the loss curves.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from makemore import checkpoint, data, models
from makemore.errors import MakemoreError
from makemore.plot import curves
from makemore.run import Run, check_run_folder, evaluate
from makemore.train import Eval, Step, TrainConfig
from safeio.files import check_output, write_atomic


@dataclass
class Row:
    type: str
    parameters: int
    train_loss: float
    val_loss: float
    test_loss: float
    test_bits_per_char: float
    steps: int
    ms_per_step: float  # median
    seconds: float  # wall time, evaluations included
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train loss, val loss)

    @property
    def steps_per_second(self) -> float:
        return 1000 / self.ms_per_step if self.ms_per_step else 0.0

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("curve")
        return d | {"steps_per_second": round(self.steps_per_second, 1)}


class StepTimer:
    """Collects the trainer's events; the median step time ignores the pauses for evaluation."""

    def __init__(self, forward: Callable | None = None):
        self.forward = forward
        self.times: list[float] = []
        self.curve: list[tuple[int, float, float]] = []
        self._last = 0.0

    def __call__(self, event: Step | Eval) -> None:
        if isinstance(event, Step):
            self.times.append(event.elapsed - self._last)
            self._last = event.elapsed
        else:
            self.curve.append((event.step, event.train_loss, event.val_loss))
            self._last = event.elapsed  # the next step's time starts after this evaluation
        if self.forward:
            self.forward(event)

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.times) if self.times else 0.0


def check(types: str, out_root: Path, data_path, overwrite: bool) -> list[str]:
    """The types named (each once, in order), checked with their run folders before any data is read."""
    chosen = list(dict.fromkeys(t.strip() for t in types.split(",") if t.strip()))
    if not chosen:
        raise MakemoreError("`types`: name at least one model type")
    for name in chosen:
        models.lookup(name)
        check_run_folder(out_root / name, [data_path], overwrite)
    check_output(out_root / "leaderboard.md", "leaderboard", kind="text")
    check_output(out_root / "loss_curves.png", "plot", kind="png")
    return chosen


def compare(
    dataset: data.Dataset,
    types: list[str],
    cfg: TrainConfig,
    out_root: Path,
    on_start: Callable[[str], Callable | None] | None = None,
    overwrite: bool = False,
) -> list[Row]:
    """Train each of `types` on `dataset` with `cfg` (each at its own default lr unless `cfg.lr` is set)
    into `out_root/<type>`; `overwrite` replaces earlier models there.

    `on_start(type)` may return an event callback for that type's training (a progress bar).
    """
    rows = []
    for name in types:
        timer = StepTimer(on_start(name) if on_start else None)
        with Run.new(out_root / name, dataset, name, cfg, overwrite=overwrite) as run:
            fitted = run.fit(on_event=timer)
        final = fitted.result.history[-1]
        best = next(e for e in fitted.result.history if e.step == fitted.result.best_step)
        rows.append(Row(
            type=name, parameters=models.n_params(fitted.checkpoint.model), train_loss=best.train_loss,
            val_loss=best.val_loss, test_loss=fitted.test_loss, test_bits_per_char=fitted.test_bits_per_char, steps=final.step, ms_per_step=timer.median_ms,
            seconds=fitted.result.elapsed, curve=timer.curve,
        ))
    return rows


def table(rows: list[Row], title: str) -> Table:
    """The leaderboard for the terminal, best test loss first."""
    t = Table(title=title)
    for col in ("type", "params", "train", "val", "test", "bits/char", "steps/s", "seconds"):
        t.add_column(col, justify="left" if col == "type" else "right")
    for r in sorted(rows, key=lambda r: r.test_loss):
        t.add_row(r.type, f"{r.parameters:,}", f"{r.train_loss:.4f}", f"{r.val_loss:.4f}", f"{r.test_loss:.4f}",
                  f"{r.test_bits_per_char:.4f}", f"{r.steps_per_second:.1f}", f"{r.seconds:.1f}")
    return t


def markdown(rows: list[Row]) -> str:
    lines = [
        "| type | parameters | train loss | val loss | test loss | test bits/char | steps | steps/s | ms/step | wall time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: r.test_loss):
        lines.append(
            f"| {r.type} | {r.parameters:,} | {r.train_loss:.4f} | {r.val_loss:.4f} | {r.test_loss:.4f} | {r.test_bits_per_char:.4f} | "
            f"{r.steps} | {r.steps_per_second:.1f} | {r.ms_per_step:.2f} | {r.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> bool:
    """A PNG of the val (solid) and train (dotted) loss curves; False when matplotlib is missing."""
    series = {f"{r.type} (test {r.test_loss:.3f})": ([c[0] for c in r.curve], [c[1] for c in r.curve], [c[2] for c in r.curve])
              for r in rows}
    return curves(series, path, "val loss (solid), train loss (dotted)", required=False)


def write_report(rows: list[Row], folder: Path) -> tuple[Path, Path | None]:
    """Write `leaderboard.md` and `loss_curves.png` (if matplotlib is there) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "leaderboard.md"
    write_atomic(table, markdown(rows).encode())
    png = folder / "loss_curves.png"
    return table, png if plot(rows, png) else None


def measure_runs(paths: list[Path], data_path: str | Path | None, every: bool = False) -> tuple[list[dict], str]:
    """Each run's test loss, bits per character and bits per byte on the file at `data_path`, or else on
    the test split of the first run that was trained on data (an imported model was not), each
    through its own tokenizer; sorted by bits per byte, the figure that compares a character model
    with a BPE one. Each run measures its default windows (`run.evaluate`), or all with `every`. Also
    says what they were measured on. One model is in memory at a time."""
    split_of = None
    if data_path is None:
        for path in paths:
            record = checkpoint.training_of(path)
            if record.data:
                split_of, on = record, f"the test split of {path}"
                break
        else:
            raise MakemoreError("none of these runs was trained on data (imported ones are not): name a FILE to measure them on")
    rows = []
    for path in paths:
        ckpt = checkpoint.load(path)
        try:
            result = evaluate(ckpt, data_path, every=every, split_of=split_of)
        except MakemoreError as e:
            raise MakemoreError(f"{path}: {e}") from None
        tok = ckpt.tokenizer
        rows.append({"run": str(path), "type": ckpt.model_type, "parameters": models.n_params(ckpt.model),
                     "tokenizer": f"{TOKENIZER_LABELS[tok.kind]} {tok.vocab_size:,}"} | result)
        del ckpt  # before the next one is loaded
    if split_of is None:
        on = f"{result['data']} ({result['mode']} mode)"
    return sorted(rows, key=lambda r: r["bits_per_byte"]), on


TOKENIZER_LABELS = {"char": "chars", "bpe": "BPE"}  # by `Tokenizer.kind`


def runs_table(rows: list[dict], on: str) -> Table:
    """The leaderboard of `measure_runs` for the terminal."""
    t = Table(title=f"on {on}: loss in nats/token; bits per byte compares different tokenizers")
    for col in ("run", "type", "params", "tokens", "loss", "bits/char", "bits/byte", "measured"):
        t.add_column(col, justify="left" if col in ("run", "type", "tokens") else "right")
    for r in rows:
        t.add_row(r["run"], r["type"], f"{r['parameters']:,}", r["tokenizer"], f"{r['loss']:.4f}", f"{r['bits_per_char']:.4f}",
                  f"{r['bits_per_byte']:.4f}", f"{r['covered']:,}/{r['of']:,}")
    return t
