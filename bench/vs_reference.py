"""makemore against the reference single-file makemore, side by side in one run, on names.txt.

1. Per training step: median milliseconds per step at batch 32 for mlp, rnn, gru and transformer,
   each at its own default size: ours from the trainer's step events (`bench/train_speed.py`'s
   way), the reference from its printed "step time" (its data loader at `-n 0`, no workers).
2. The whole process: `makemore train names.txt --type transformer --max-steps 2000` against the
   reference's `makemore.py -i names.txt --max-steps 2000 -n 0`, both evaluating every 500 steps,
   wall time from start to exit.

`--avx2` forces torch's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2) in
every process, to stand in for an AVX2-only machine. The reference needs its own dependency,
tensorboard (`pip install tensorboard`), in the same environment.

    python bench/vs_reference.py --reference PATH/TO/makemore [--avx2] [--steps 400] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout, seconds


OURS_STEP = """
import json, statistics, sys, torch
from makemore import models, runs
from makemore.train import Step, TrainConfig, train
prep = runs.prepare(sys.argv[1])
out = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
for t in sys.argv[3].split(","):
    torch.manual_seed(0)
    model = models.build(t, models.make_config(t, prep.tokenizer.vocab_size, prep.block_size))
    times, last = [], [0.0]
    def on_event(e):
        if isinstance(e, Step):
            times.append(e.elapsed - last[0]); last[0] = e.elapsed
    train(model, prep.splits["train"], prep.splits["val"], TrainConfig(max_steps=int(sys.argv[2]), eval_interval=10**9), on_event=on_event)
    out[t] = 1000 * statistics.median(times[20:])
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="a checkout of the single-file makemore")
    ap.add_argument("--data", default=str(NAMES))
    ap.add_argument("--steps", type=int, default=400, help="steps per type for the per-step medians")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each, taken in turns; medians reported")
    ap.add_argument("--avx2", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.avx2:
        env |= {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    data = str(Path(args.data).resolve())
    reference = str((args.reference / "makemore.py").resolve())
    ours_ms: dict[str, list[float]] = {t: [] for t in TYPES}
    ref_ms: dict[str, list[float]] = {t: [] for t in TYPES}
    ours_wall, ref_wall = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(args.rounds):  # ours and the reference in turns: the machine's drift falls on both
            ours = json.loads(run([sys.executable, "-c", OURS_STEP, data, str(args.steps), ",".join(TYPES)], work, env)[0])
            for t in TYPES:
                ours_ms[t].append(ours[t])
                out, _ = run([sys.executable, reference, "-i", data, "-o", str(work / f"ref-{t}"), "--type", t, "-n", "0",
                              "--max-steps", str(args.steps)], work, env)
                ref_ms[t].append(statistics.median(float(m) for m in re.findall(r"step time ([\d.]+)ms", out)[2:]))
            ours_wall.append(run([sys.executable, "-m", "makemore", "train", data, "--type", "transformer", "--max-steps", "2000",
                                  "--eval-interval", "500", "--out", str(work / "ours-2000"), "--overwrite"], work, env)[1])
            ref_wall.append(run([sys.executable, reference, "-i", data, "-o", str(work / "ref-2000"), "--type", "transformer",
                                 "-n", "0", "--max-steps", "2000"], work, env)[1])
            print(f"round {r + 1}: " + json.dumps({"ours_ms": ours, "reference_ms": {t: ref_ms[t][-1] for t in TYPES},
                                                   "ours_s": ours_wall[-1], "reference_s": ref_wall[-1]}), file=sys.stderr, flush=True)
    med = statistics.median
    rows = [{"type": t, "ours_ms": med(ours_ms[t]), "reference_ms": med(ref_ms[t]), "ratio": med(ref_ms[t]) / med(ours_ms[t])}
            for t in TYPES]
    ours_wall, ref_wall = med(ours_wall), med(ref_wall)
    whole = {"ours_s": ours_wall, "reference_s": ref_wall, "ratio": ref_wall / ours_wall}
    machine = describe(ours["capability"] + (" (forced)" if args.avx2 else ""), ours["threads"]) + f"; medians of {args.rounds} rounds"
    if args.json:
        print(json.dumps({"machine": machine, "per_step": rows, "whole_process": whole}, indent=2))
        return
    table = Table(title=f"makemore vs the reference, {Path(args.data).name}, batch 32; CPU {machine}")
    for col in ("what", "ours", "reference", "speed-up"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for r in rows:
        table.add_row(f"{r['type']}: ms per step (median)", f"{r['ours_ms']:.2f}", f"{r['reference_ms']:.2f}", f"{r['ratio']:.2f}x")
    table.add_row("transformer, 2,000 steps: whole process, s", f"{whole['ours_s']:.1f}", f"{whole['reference_s']:.1f}", f"{whole['ratio']:.2f}x")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
