"""Loss curves as a PNG (matplotlib, the optional `plot` extra) and the runs' metrics they come from.

`read_metrics` reads a run folder's metrics.jsonl (a line cut short by a crash, or with a field of
the wrong type, is skipped and its number returned);
`runs_in` opens a `compare` folder into its runs; `summarize` puts steps, wall time or tokens
seen on the x axis and loss (nats per token) or bits per character on the y axis;
`curves` draws val loss (solid) and train loss (dotted) of several runs into one figure, on a log
x axis when their lengths differ by much (a run with one evaluation as a point), and writes it atomically.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from makemore import checkpoint
from makemore.errors import MakemoreError
from safeio.files import write_atomic

EXTRA = "pip install 'makemore[plot]'"


NUMBERS = ("train_loss", "eval_train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "wall", "tokens")  # null where not finite


def read_metrics(run: Path) -> tuple[list[dict], Path, list[int]]:
    """The rows of a run's metrics.jsonl, its path, and the numbers of the lines skipped: cut short
    by a crash, not an object with a step, or a field that is neither a number nor null."""
    if not run.exists():
        raise MakemoreError(f"{run}: no such run folder")
    folder = run if run.is_dir() else run.parent
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise MakemoreError(f"{folder}: no metrics.jsonl (is it a run folder of makemore train?)")
    rows, skipped = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            row = None
        if isinstance(row, dict) and usable(row):
            rows.append(row)
        elif line.strip():
            skipped.append(number)
    if not any(isinstance(r.get("val_loss"), (int, float)) for r in rows):
        raise MakemoreError(f"{path}: no evaluation with a val loss recorded yet")
    return rows, path, skipped


def usable(row: dict) -> bool:
    step = row.get("step")
    if type(step) is not int or step < 0 or not ("train_loss" in row or "val_loss" in row):
        return False
    return all(row.get(k) is None or (isinstance(row[k], (int, float)) and not isinstance(row[k], bool)) for k in NUMBERS)


@dataclass
class Summary:
    """One run's metrics for `makemore plot`: its table row, its curves and the lines skipped."""

    row: dict
    series: tuple[list[int], list[float | None], list[float | None]]  # steps, train losses, val losses
    path: Path
    skipped: list[int]


X_AXES = {"steps": "step", "time": "wall time (s)", "tokens": "tokens seen"}
Y_AXES = {"loss": "loss (nats/token)", "bits": "bits per character"}


def runs_in(paths: list[Path]) -> list[Path]:
    """The run folders named, a `compare` folder (no metrics.jsonl of its own) opened into its runs."""
    found = []
    for path in paths:
        inner = sorted(p.parent for p in path.glob("*/metrics.jsonl")) if path.is_dir() and not (path / "metrics.jsonl").exists() else []
        found += inner or [path]
    return found


def tokens_at(metrics: list[dict], step: int) -> float | None:
    """Tokens seen by `step`: the count of the last step row at or before it, plus its rate since."""
    rows = [r for r in metrics if isinstance(r.get("tokens"), (int, float)) and 0 < r["step"] <= step]
    if not rows:
        return None
    last = max(rows, key=lambda r: r["step"])
    return last["tokens"] + (step - last["step"]) * last["tokens"] / last["step"]


def x_values(metrics: list[dict], evals: list[dict], x: str, path: Path) -> list[float]:
    if x not in X_AXES:
        raise MakemoreError(f"`x` {x}: choose one of {', '.join(X_AXES)}")
    if x == "steps":
        return [r["step"] for r in evals]
    values = [r.get("wall") for r in evals] if x == "time" else [tokens_at(metrics, r["step"]) for r in evals]
    if any(v is None for v in values):
        why = "no wall times (a --deterministic run)" if x == "time" else "no token counts (a run from before they were recorded)"
        raise MakemoreError(f"{path}: {why}; use `x` steps")
    return values


def bits_per_nat(run: Path) -> float:
    """Bits per character per nat per token of a run: its test split's ratio (characters per token differ
    with the tokenizer), or 1 / ln 2 for characters (one token per character, an item's end counted)."""
    t = checkpoint.training_of(run)  # the header alone: no weights are needed
    if t.test_loss and t.test_bits_per_char is not None:
        return t.test_bits_per_char / t.test_loss
    if checkpoint.tokenizer_of(run).kind == "char":
        return 1 / math.log(2)
    raise MakemoreError(f"{run}: no test result to turn nats per token into bits per character; finish the run or use `y` loss")


def summarize(run: Path, x: str = "steps", y: str = "loss") -> Summary:
    metrics, path, skipped = read_metrics(run)
    if y not in Y_AXES:
        raise MakemoreError(f"`y` {y}: choose one of {', '.join(Y_AXES)}")
    evals = [r for r in metrics if "val_loss" in r]
    best = min((r for r in evals if r["val_loss"] is not None), key=lambda r: r["val_loss"])
    speeds = sorted(r["tokens_per_s"] for r in metrics if r.get("tokens_per_s"))
    row = {"run": str(run), "steps": max(r["step"] for r in metrics), "best_val_loss": best["val_loss"], "best_step": best["step"],
           "last_val_loss": evals[-1]["val_loss"], "tokens_per_s": speeds[len(speeds) // 2] if speeds else None,
           "wall_s": max(r.get("wall") or 0 for r in metrics)}
    scale = bits_per_nat(run) if y == "bits" else 1.0
    train, val = ([None if v is None else v * scale for v in (r.get(k) for r in evals)] for k in ("eval_train_loss", "val_loss"))
    return Summary(row, (x_values(metrics, evals, x, path), train, val), path, skipped)


def matplotlib_pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def curves(series: dict[str, tuple[list[float], list[float | None], list[float | None]]], path: Path, title: str,
           required: bool = True, xlabel: str = X_AXES["steps"], ylabel: str = Y_AXES["loss"]) -> bool:
    """A PNG of each run's (steps, train losses, val losses). Without matplotlib: an error naming the
    extra, or (not `required`) False."""
    plt = matplotlib_pyplot()
    if plt is None:
        if required:
            raise MakemoreError(f"plot needs matplotlib, the optional plot extra: {EXTRA}")
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    longest = [max(steps) for steps, _, _ in series.values() if steps]
    for name, (steps, train, val) in series.items():
        nan = float("nan")  # a null loss (not finite when measured) leaves a gap
        marker = "o" if len(steps) == 1 else None  # one evaluation: a point, not an invisible line
        (line,) = ax.plot(steps, [nan if v is None else v for v in val], label=name, marker=marker)
        ax.plot(steps, [nan if v is None else v for v in train], linestyle=":", color=line.get_color(), marker=marker, fillstyle="none")
    if longest and max(longest) > 20 * max(1, min(longest)):
        ax.set_xscale("log")  # runs of very different lengths share one axis
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, png.getvalue())
    return True
