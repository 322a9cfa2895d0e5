"""Training speed and quality per model type, through the same `makemore compare` machinery.

For each type: parameters, median ms per step and steps/s at batch 32, and the test loss after a
fixed step budget, on ../shared/data/names.txt when present (else the built-in names).

    python bench/train_speed.py [--steps 3000] [--types mlp,gru] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from machine import describe
from makemore import data, models
from makemore.compare import compare
from makemore.train import TrainConfig

NAMES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "names.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--types", default=",".join(models.MODELS))
    ap.add_argument("--data", default=str(NAMES) if NAMES.exists() else None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    prep = data.prepare(args.data, seed=1337)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, eval_interval=max(args.steps // 4, 1))
    with tempfile.TemporaryDirectory() as tmp:
        rows = compare(prep, args.types.split(","), cfg, Path(tmp))
    machine = (f"{describe(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())}, torch {torch.__version__}, "
               f"Python {platform.python_version()}")
    if args.json:
        print(json.dumps({"data": prep.name, "steps": args.steps, "batch_size": args.batch_size, "machine": machine,
                          "rows": [r.summary() for r in rows]}, indent=2))
        return
    table = Table(title=f"{prep.name}, batch {args.batch_size}, {args.steps} steps; {machine}")
    for col in ("type", "parameters", "ms/step", "steps/s", "test loss", "wall s"):
        table.add_column(col, justify="left" if col == "type" else "right")
    for r in rows:
        table.add_row(r.type, f"{r.parameters:,}", f"{r.ms_per_step:.2f}", f"{r.steps_per_second:.1f}",
                      f"{r.test_loss:.4f}", f"{r.seconds:.1f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
