"""Loss curves as a PNG (matplotlib, the optional `plot` extra) and the runs' metrics they come from.

`read_metrics` reads a run folder's metrics.jsonl (a line cut short by a crash, or with a field of
the wrong type, is skipped and its number returned);
`curves` draws val loss (solid) and train loss (dotted) of several runs into one figure, on a log
step axis when their lengths differ by much, and writes it atomically.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from makemore.errors import MakemoreError
from safeio.files import write_atomic

EXTRA = "pip install 'makemore[plot]'"


NUMBERS = ("train_loss", "eval_train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "wall")  # null where not finite


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


def summarize(run: Path) -> Summary:
    metrics, path, skipped = read_metrics(run)
    evals = [r for r in metrics if "val_loss" in r]
    best = min((r for r in evals if r["val_loss"] is not None), key=lambda r: r["val_loss"])
    speeds = sorted(r["tokens_per_s"] for r in metrics if r.get("tokens_per_s"))
    row = {"run": str(run), "steps": max(r["step"] for r in metrics), "best_val_loss": best["val_loss"], "best_step": best["step"],
           "last_val_loss": evals[-1]["val_loss"], "tokens_per_s": speeds[len(speeds) // 2] if speeds else None,
           "wall_s": max(r.get("wall") or 0 for r in metrics)}
    series = ([r["step"] for r in evals], [r.get("eval_train_loss") for r in evals], [r["val_loss"] for r in evals])
    return Summary(row, series, path, skipped)


def matplotlib_pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def curves(series: dict[str, tuple[list[int], list[float | None], list[float | None]]], path: Path, title: str,
           required: bool = True) -> bool:
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
        (line,) = ax.plot(steps, [nan if v is None else v for v in val], label=name)
        ax.plot(steps, [nan if v is None else v for v in train], linestyle=":", color=line.get_color())
    if longest and max(longest) > 20 * max(1, min(longest)):
        ax.set_xscale("log")  # runs of very different lengths share one axis
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, png.getvalue())
    return True
