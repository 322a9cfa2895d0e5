"""Loss curves as a PNG (matplotlib, the optional `plot` extra) and the runs' metrics they come from.

`read_metrics` reads a run folder's metrics.jsonl (a line cut short by a crash is skipped);
`curves` draws val loss (solid) and train loss (dotted) of several runs into one figure, on a log
step axis when their lengths differ by much, and writes it atomically.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from makemore.errors import MakemoreError
from tokenizer.files import write_atomic

EXTRA = "pip install 'makemore[plot]'"


def read_metrics(run: Path) -> list[dict]:
    if not run.exists():
        raise MakemoreError(f"{run}: no such run folder")
    folder = run if run.is_dir() else run.parent
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise MakemoreError(f"{folder}: no metrics.jsonl (is it a run folder of makemore train?)")
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    if not any("val_loss" in r for r in rows):
        raise MakemoreError(f"{path}: no evaluations recorded yet")
    return rows


def matplotlib_pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def curves(series: dict[str, tuple[list[int], list[float | None], list[float | None]]], path: Path, title: str) -> bool:
    """A PNG of each run's (steps, train losses, val losses); False when matplotlib is missing."""
    plt = matplotlib_pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    longest = [max(steps) for steps, _, _ in series.values() if steps]
    for name, (steps, train, val) in series.items():
        (line,) = ax.plot(steps, val, label=name)
        ax.plot(steps, train, linestyle=":", color=line.get_color())
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
