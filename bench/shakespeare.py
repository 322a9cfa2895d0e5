"""Shakespeare in three minutes: makemore's text mode against the reference GPT's CPU recipe, in one run.

1. The anchor (optional, `--nanogpt PATH` to a nanoGPT checkout): its published CPU recipe for
   characters (4 layers, 4 heads, 128 channels, block 64, batch 12, 2,000 iterations, no dropout),
   on the same file split as its own prepare script does (first 90% train, last 10% val). It reports
   val loss as the mean of 20 random val batches.
2. Ours: `makemore train FILE --max-seconds S` with text mode's defaults, then `makemore eval` on
   our val slice (characters 90-95%) and on the anchor's val slice (90-100%), both in full.
3. With `--bpe 512,2048`: the same budget on BPE tokens (a tokenizer trained on our train slice),
   measured in bits per character on our val slice, so characters and BPE compare on one scale.

    python bench/shakespeare.py [--nanogpt ../anchors/nanoGPT] [--seconds 180] [--bpe 512,2048] [--json]

Each run is its own process, one after another (never two at once on this 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from machine import describe
from makemore.data import split_text

ROOT = Path(__file__).resolve().parent.parent  # the checkout whose code is measured (run from a frozen clone while editing)
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
MAKEMORE = [sys.executable, "-m", "makemore"]
TOKENIZER = [sys.executable, "-m", "tokenizer"]


def run(cmd: list[str], cwd: Path) -> tuple[str, float]:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout, seconds


def anchor(nanogpt: Path, text: str, work: Path) -> dict:
    """nanoGPT's CPU recipe on characters, data laid out as its prepare script would (90/10 split)."""
    data = work / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    n = len(text)
    np.array([stoi[c] for c in text[: int(n * 0.9)]], dtype=np.uint16).tofile(data / "train.bin")
    np.array([stoi[c] for c in text[int(n * 0.9) :]], dtype=np.uint16).tofile(data / "val.bin")
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    shutil.copy(nanogpt / "configurator.py", work / "configurator.py")  # it execs this from the working folder
    cmd = [sys.executable, str(nanogpt / "train.py"), str(nanogpt / "config" / "train_shakespeare_char.py"),
           "--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
           "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
           "--lr_decay_iters=2000", "--dropout=0.0", f"--out_dir={work / 'out'}"]
    out, seconds = run(cmd, work)
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", out)
    step, train_loss, val_loss = evals[-1]
    row = {"run": "nanoGPT CPU recipe (chars)", "steps": int(step), "wall_s": seconds,
            "val_loss_own_slice": float(val_loss), "best_val_loss_own_slice": min(float(v) for _, _, v in evals)}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def ours(data: Path, seconds: float, work: Path, name: str, slices: dict[str, Path], tokenizer: Path | None = None) -> dict:
    cmd = [*MAKEMORE, "train", str(data), "--max-seconds", str(seconds), "--out", str(work / name), "--json"]
    if tokenizer:
        cmd += ["--tokenizer", str(tokenizer)]
    out, wall = run(cmd, work)
    summary = json.loads(out)
    row = {"run": name, "steps": summary["steps"], "wall_s": wall, "train_s": summary["seconds"],
           "val_loss": summary["best_val_loss"], "parameters": summary["parameters"]}
    for label, path in slices.items():
        ev = json.loads(run([*MAKEMORE, "eval", str(path), "-c", str(work / name), "--json"], work)[0])
        row[f"{label}_loss"] = ev["loss"]
        row[f"{label}_bpc"] = ev["bits_per_char"]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHAKESPEARE))
    ap.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout, to run its CPU recipe beside ours")
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--bpe", default="", help="comma-separated BPE vocabulary sizes to train on as well")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    text = Path(args.data).read_text(encoding="utf-8")
    machine = f"{describe(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())}, torch {torch.__version__}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        slices = {"val": work / "val-slice.txt", "anchor_val": work / "anchor-val-slice.txt"}
        slices["val"].write_text(split_text(text)["val"], encoding="utf-8")
        slices["anchor_val"].write_text(text[int(len(text) * 0.9) :], encoding="utf-8")
        if args.nanogpt:
            rows.append(anchor(args.nanogpt.resolve(), text, work / "anchor"))
        rows.append(ours(Path(args.data).resolve(), args.seconds, work, "makemore (chars)", slices))
        for vocab in [int(v) for v in args.bpe.split(",") if v]:
            (work / "train-slice.txt").write_text(split_text(text)["train"], encoding="utf-8")
            tok = work / f"bpe{vocab}.json"
            run([*TOKENIZER, "train", str(work / "train-slice.txt"), "--vocab-size", str(vocab), "-o", str(tok)], work)
            rows.append(ours(Path(args.data).resolve(), args.seconds, work, f"makemore (BPE {vocab})", {"val": slices["val"]}, tok))
    if args.json:
        print(json.dumps({"machine": machine, "seconds": args.seconds, "rows": rows}, indent=2))
        return
    table = Table(title=f"tinyshakespeare, {args.seconds:g} s of training; CPU {machine}")
    for col in ("run", "steps", "wall s", "val loss (own slice)", "val loss, chars 90-95%", "bits/char 90-95%",
                "val loss, chars 90-100%"):
        table.add_column(col, justify="left" if col == "run" else "right")
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        table.add_row(r["run"], str(r["steps"]), f"{r['wall_s']:.1f}", fmt(r.get("val_loss_own_slice")),
                      fmt(r.get("val_loss") if "BPE" not in r["run"] else None), fmt(r.get("val_bpc")),
                      fmt(r.get("anchor_val_loss")))
    Console(width=200).print(table)
    if any("val_bpc" in r for r in rows):
        print("bits/char = loss per token x tokens / (ln 2 x characters); for characters it is loss / ln 2 =",
              f"{1 / math.log(2):.4f} x loss")


if __name__ == "__main__":
    main()
