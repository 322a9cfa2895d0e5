"""makemore against the reference single-file makemore, side by side in one run, on names.txt.

1. Per training step: median milliseconds per step at batch 32 for mlp, rnn, gru and transformer,
   each at its own default size, both trained in one process in alternating chunks of steps
   (`bench/step_pairs.py`): ours through the trainer, the reference through its own data loader
   (no workers, as `-n 0`), model and optimizer, timed as its training loop times a step.
   Two more rows run our rnn and gru at the reference's size (hidden state 64 where ours has 128
   by default), so the comparison of the code is also one of equal arithmetic.
2. The whole process, ours and the reference run in turns (`--rounds`, medians): `makemore train names.txt --type transformer --max-steps 2000` against the
   reference's `makemore.py -i names.txt --max-steps 2000 -n 0`, both evaluating every 500 steps,
   wall time from start to exit.

`--avx2` forces torch's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2) in
every process, to stand in for an AVX2-only machine. The reference needs its own dependency,
tensorboard (`pip install tensorboard`), in the same environment.

    python bench/vs_reference.py --reference PATH/TO/makemore [--avx2] [--chunks 8] [--rounds 3] [--json]
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

from rich.console import Console
from rich.table import Table

from machine import describe

ROOT = Path(__file__).resolve().parent.parent
NAMES = ROOT.parent / "shared" / "data" / "names.txt"
TYPES = ("mlp", "rnn", "gru", "transformer")
SAME_SIZE = ("rnn:n_hidden=64", "gru:n_hidden=64")  # ours at the reference's size: its hidden state is 64, ours 128


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="a checkout of the single-file makemore")
    ap.add_argument("--data", default=str(NAMES))
    ap.add_argument("--chunk", type=int, default=50, help="per step: steps per turn")
    ap.add_argument("--chunks", type=int, default=8, help="per step: turns of each model")
    ap.add_argument("--rounds", type=int, default=3, help="whole process: runs of each, taken in turns; medians reported")
    ap.add_argument("--avx2", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.avx2:
        env |= {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    data = str(Path(args.data).resolve())
    reference = str((args.reference / "makemore.py").resolve())
    ours_wall, ref_wall = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = json.loads(run([sys.executable, str(ROOT / "bench" / "step_pairs.py"), data, str(args.reference.resolve()),
                                "--chunk", str(args.chunk), "--chunks", str(args.chunks), "--types", ",".join(TYPES + SAME_SIZE)], work, env)[0])
        print(json.dumps(pairs), file=sys.stderr, flush=True)
        for r in range(args.rounds):  # whole processes, ours and the reference in turns
            ours_wall.append(run([sys.executable, "-m", "makemore", "train", data, "--type", "transformer", "--max-steps", "2000",
                                  "--eval-interval", "500", "--out", str(work / "ours-2000"), "--overwrite"], work, env)[1])
            ref_wall.append(run([sys.executable, reference, "-i", data, "-o", str(work / "ref-2000"), "--type", "transformer",
                                 "-n", "0", "--max-steps", "2000"], work, env)[1])
            print(f"round {r + 1}: ours {ours_wall[-1]:.1f} s, reference {ref_wall[-1]:.1f} s", file=sys.stderr, flush=True)
    rows = [{"type": t, "ours_ms": pairs[t]["ours_ms"], "reference_ms": pairs[t]["reference_ms"],
             "ratio": pairs[t]["reference_ms"] / pairs[t]["ours_ms"]} for t in TYPES + SAME_SIZE]
    ours_wall, ref_wall = statistics.median(ours_wall), statistics.median(ref_wall)
    whole = {"ours_s": ours_wall, "reference_s": ref_wall, "ratio": ref_wall / ours_wall}
    machine = describe(pairs["capability"] + (" (forced)" if args.avx2 else ""), pairs["threads"])
    if args.json:
        print(json.dumps({"machine": machine, "per_step": rows, "whole_process": whole}, indent=2))
        return
    table = Table(title=f"makemore vs the reference, {Path(args.data).name}, batch 32; CPU {machine}")
    for col in ("what", "ours", "reference", "speed-up"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for r in rows:
        what = r["type"].replace(":n_hidden=64", " at the reference's size (hidden 64)")
        table.add_row(f"{what}: ms per step (median of {pairs['steps'] - args.chunks})", f"{r['ours_ms']:.2f}", f"{r['reference_ms']:.2f}", f"{r['ratio']:.2f}x")
    table.add_row(f"transformer, 2,000 steps: whole process, s (median of {args.rounds})", f"{whole['ours_s']:.1f}", f"{whole['reference_s']:.1f}", f"{whole['ratio']:.2f}x")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
