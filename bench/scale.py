"""Scale: the transformer on names.txt with and without --compile, and in 1 vs 2 DDP processes.

Each configuration is `makemore train` (or torchrun) in its own process, one after another, with a
step budget and one evaluation at the end; speeds are the median of the run's metrics.jsonl rows
(tokens/s) and steps over training seconds. On a 2-core machine two processes share the cores that
one process's threads used, so DDP is expected to be no faster here: the figure is what it is.

    python bench/scale.py [--steps 1500] [--data ../shared/data/names.txt] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from machine import describe

ROOT = Path(__file__).resolve().parent.parent
NAMES = ROOT.parent / "shared" / "data" / "names.txt"


def run(label: str, cmd: list[str], work: Path, out: str, env: dict | None = None) -> dict:
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    rows = [json.loads(line) for line in (work / out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    row = {"run": label, "steps": summary["steps"], "seconds": summary["seconds"], "steps_per_second": summary["steps_per_second"],
           "tokens_per_s": statistics.median(speeds), "global_batch": summary["global_batch_size"],
           "test_loss": summary["test_loss"], "warning": warning[0] if warning else ""}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--data", default=str(NAMES))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    base = [sys.executable, "-m", "makemore", "train", str(Path(args.data).resolve()), "--type", "transformer",
            "--max-steps", str(args.steps), "--eval-interval", str(args.steps), "--json"]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows.append(run("eager, 1 process", [*base, "--out", "eager"], work, "eager"))
        rows.append(run("--compile, 1 process", [*base, "--compile", "--out", "compiled"], work, "compiled"))
        ddp = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "makemore", *base[3:], "--out", "ddp"]
        rows.append(run("eager, 2 DDP processes (1 thread each)", ddp, work, "ddp", {"OMP_NUM_THREADS": "1"}))
    machine = f"{describe(torch.backends.cpu.get_cpu_capability())}, torch {torch.__version__}"
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return
    table = Table(title=f"transformer on {Path(args.data).name}, {args.steps} steps; CPU {machine}")
    for col in ("run", "global batch", "steps/s", "tokens/s (median)", "test loss"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in rows:
        table.add_row(r["run"], str(r["global_batch"]), f"{r['steps_per_second']:.1f}", f"{r['tokens_per_s']:,.0f}", f"{r['test_loss']:.4f}")
    Console(width=200).print(table)
    for r in rows:
        if r["warning"]:
            print(f"{r['run']}: {r['warning']}")


if __name__ == "__main__":
    main()
