"""Training speed with the CPU to itself and with one other busy process, per model type and data kind.

Each cell is a `makemore train ... --max-seconds S --json` run in a fresh process (steps/s as the
command reports it, evaluations off), in turns: code under test vs an anchor (another checkout of
makemore, `--anchor PATH`, run with the same Python), uncontended, then with a competing process that
keeps one core busy (a Python busy loop, as a browser tab or a second training would). A cell is
the median of `--rounds` runs.

    .venv/bin/python bench/threads.py --anchor /tmp/makemore-before [--seconds 6] [--rounds 1] [--types transformer,gru]

Reads ../shared/data/names.txt and tinyshakespeare.txt when they are there, else the built-in sets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TYPES = "bigram,mlp,rnn,gru,lstm,bow,wavenet,transformer"


def data_for(kind: str) -> str:
    local = SHARED / ("names.txt" if kind == "lines" else "tinyshakespeare.txt")
    return str(local) if local.exists() else ("names" if kind == "lines" else "shakespeare")


def steps_per_second(code: Path, model_type: str, kind: str, seconds: float, env: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "makemore", "train", data_for(kind), "--type", model_type, "--max-steps", "10000000",
                "--max-seconds", str(seconds), "--eval-interval", "10000000", "--out", str(Path(tmp) / "run"), "--json"]
        if kind == "text":
            args += ["--mode", "text"]
        done = subprocess.run(args, cwd=tmp, env=dict(os.environ, PYTHONPATH=str(code), **env), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{code}: {model_type} {kind}: {done.stderr[-500:]}")
        return json.loads(done.stdout)["steps_per_second"]


class Busy:
    """One process that keeps a core busy while the block runs."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchor", type=Path, required=True, help="another makemore checkout to compare with (e.g. a git worktree of the previous commit)")
    ap.add_argument("--types", default=TYPES)
    ap.add_argument("--kinds", default="lines,text")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--env", default="", help="extra environment for the code under test, e.g. MAKEMORE_THREADS=2")
    args = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.env.split(",") if kv)
    console = Console()
    started = time.time()
    rows = []
    for kind in args.kinds.split(","):
        for model_type in args.types.split(","):
            cell = {}
            for load in ("idle", "busy"):
                runs = {"anchor": [], "new": []}
                for _ in range(args.rounds):
                    for who, code, env in (("anchor", args.anchor, {}), ("new", ROOT, extra)):
                        if load == "busy":
                            with Busy():
                                runs[who].append(steps_per_second(code, model_type, kind, args.seconds, env))
                        else:
                            runs[who].append(steps_per_second(code, model_type, kind, args.seconds, env))
                for who in runs:
                    cell[(who, load)] = statistics.median(runs[who])
            rows.append((kind, model_type, cell))
            console.print(f"{kind} {model_type}: " + ", ".join(f"{w} {l} {v:.1f}" for (w, l), v in cell.items()))
    console.print(f"steps/s, {args.seconds:g} s runs, median of {args.rounds}; {describe(torch.backends.cpu.get_cpu_capability())}; "
                  f"anchor {args.anchor}; busy = beside one busy process")
    table = Table()
    for col in ("kind", "type", "anchor idle", "anchor busy", "busy/idle", "new idle", "new busy", "busy/idle ", "new/anchor idle"):
        table.add_column(col, justify="left" if col in ("kind", "type") else "right", no_wrap=True)
    for kind, model_type, c in rows:
        table.add_row(kind, model_type, f"{c['anchor', 'idle']:.1f}", f"{c['anchor', 'busy']:.1f}",
                      f"{c['anchor', 'busy'] / c['anchor', 'idle']:.2f}", f"{c['new', 'idle']:.1f}", f"{c['new', 'busy']:.1f}",
                      f"{c['new', 'busy'] / c['new', 'idle']:.2f}", f"{c['new', 'idle'] / c['anchor', 'idle']:.2f}")
    console.print(table)
    console.print(f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
