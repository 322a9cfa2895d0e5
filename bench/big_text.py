"""A text far larger than a run needs in memory: encode once in parallel into the token cache, train from
the memory map, start the second run from the cache.

It writes a generated text of --gb gigabytes (lines of words drawn at random from Shakespeare's,
seeded, so no part repeats another), trains a BPE tokenizer (ours, GPT-4 split, 2,048 tokens) on its
first 4 MB, and measures, each command in its own process:
  - tiktoken's single-string throughput, encoding the first --tiktoken-mb of the same file with our
    tokenizer's ranks (the same ids), in this process;
  - `makemore train FILE` cold (no cache entry) and again (the entry found), for characters and for
    the BPE tokenizer: wall time of a run of a few steps, the encode's time and throughput (the first
    run's wall time less the second's), and the peak RSS of the largest process; and a run of one
    step with one-window evaluations on the warm cache, whose wall time bounds the time from the
    command to the first step;
  - the cache's size on disk.

    python bench/big_text.py [--gb 1] [--folder /tmp/makemore-big] [--tiktoken-mb 256] [--jobs 2] [--json]

Nothing else may run meanwhile (the machine's two cores are the encoder's).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import cpu_name  # noqa: E402

from makemore import data  # noqa: E402

RSS = """import resource, subprocess, sys, time
t = time.perf_counter(); done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(repr((done.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.stdout, done.stderr[-2000:])))"""


def generate(path: Path, gigabytes: float, seed: int = 0, jobs: int = 1) -> None:
    """Lines of 3-14 words of Shakespeare's, with punctuation, until `gigabytes`; the same every time.
    With `jobs`, that many parts (seeds `seed`, `seed` + 1, ...) made at once and joined."""
    target = int(gigabytes * 1e9)
    if path.exists() and path.stat().st_size >= target:
        return
    if jobs > 1:
        parts = [(path.with_name(f"{path.stem}-part{k}.txt"), gigabytes / jobs, seed + k) for k in range(jobs)]
        with multiprocessing.Pool(jobs) as pool:
            pool.starmap(generate, parts)
        with open(path.with_suffix(".part"), "wb") as out:
            for part, _, _ in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
                part.unlink()
        path.with_suffix(".part").rename(path)
        return
    words = re.findall(r"[A-Za-z']+", data.builtin_bytes("shakespeare").decode())
    rng, size = random.Random(seed), 0
    ends = [".", ",", "!", "?", ";", "", ""]
    with open(path.with_suffix(".part"), "w", encoding="utf-8") as f:
        while size < target:
            lines = []
            for _ in range(20_000):
                ws = rng.choices(words, k=rng.randint(3, 14))
                lines.append(" ".join(ws) + rng.choice(ends) + "\n")
            block = "".join(lines)
            f.write(block)
            size += len(block)
    path.with_suffix(".part").rename(path)


def measured(args: list[str]) -> dict:
    """A command's exit code, wall time and the peak RSS of its largest process (MB)."""
    raw = subprocess.run([sys.executable, "-c", RSS, *args], capture_output=True, text=True, check=True).stdout
    code, wall, rss_kb, out, err = eval(raw)  # noqa: S307 -- our own wrapper's repr
    if code:
        raise SystemExit(f"{' '.join(args)} failed ({code}):\n{err}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(rss_kb / 1024), "out": out}


def tiktoken_speed(path: Path, tok, megabytes: int) -> float | None:
    try:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe
    except ImportError:
        return None
    from tokenizer.export import export

    ranks = export(tok, "tiktoken", path.parent / "bench.tiktoken")
    enc = tiktoken.Encoding("ours", pat_str=tok.regex, mergeable_ranks=load_tiktoken_bpe(str(ranks)), special_tokens={})
    with open(path, "rb") as f:
        raw = f.read(megabytes * 1_000_000)
    text = raw[: raw.rfind(b"\n") + 1].decode()
    t = time.perf_counter()
    enc.encode_ordinary(text)
    return len(text.encode()) / 1e6 / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--folder", type=Path, default=Path("/tmp/makemore-big"))
    ap.add_argument("--tiktoken-mb", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=1, help="make the text in this many parts at once (seeds 0, 1, ...)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    a.folder.mkdir(parents=True, exist_ok=True)
    text_path = a.folder / f"generated-{a.gb:g}gb.txt"
    t = time.perf_counter()
    generate(text_path, a.gb, jobs=a.jobs)
    print(f"data: {text_path} ({text_path.stat().st_size / 1e9:.2f} GB, made or found in {time.perf_counter() - t:.0f} s)", file=sys.stderr)
    from tokenizer.train import train as train_bpe

    with open(text_path, encoding="utf-8") as f:
        sample = f.read(4_000_000)
    tok = train_bpe([sample], 2048, "gpt4")
    tok_path = tok.save(a.folder / "bench-bpe.json")
    mb = text_path.stat().st_size / 1e6
    rows = {}
    for name, extra in (("characters", []), ("BPE 2048", ["--tokenizer", str(tok_path)])):
        cache = a.folder / f"cache-{name.split()[0].lower()}"
        shutil.rmtree(cache, ignore_errors=True)
        cmd = [str(Path(sys.executable).parent / "makemore"), "train", str(text_path), "--mode", "text", "--type", "transformer",
               "--max-steps", str(a.steps), "--eval-interval", str(a.steps), "--eval-items", "20", "--test-items", "20",
               "--cache-dir", str(cache), "--out", str(a.folder / f"run-{name.split()[0].lower()}"), "--overwrite", "--json", *extra]
        first = measured(cmd)
        second = measured(cmd)
        one_step = [*cmd[:8], "1", "--eval-interval", "1", "--eval-items", "1", "--test-items", "1", *cmd[15:]]
        start = measured(one_step)  # the command to its first step, and the little after it: a 1-step run
        encode_s = first["wall_s"] - second["wall_s"]
        disk = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        rows[name] = {"first_run_s": first["wall_s"], "second_run_s": second["wall_s"], "start_s": start["wall_s"],
                      "encode_s": round(encode_s, 1),
                      "encode_mb_per_s": round(mb / encode_s, 1), "peak_rss_first_mb": first["peak_rss_mb"],
                      "peak_rss_second_mb": second["peak_rss_mb"], "cache_mb": round(disk / 1e6)}
        print(name, rows[name], file=sys.stderr)
    speed = tiktoken_speed(text_path, tok, a.tiktoken_mb)
    result = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "file_gb": round(mb / 1e3, 2), "steps": a.steps,
              "tiktoken_single_string_mb_per_s": round(speed, 1) if speed else None, "runs": rows}
    if a.json:
        print(json.dumps(result, indent=1))
        return
    print(f"\n{result['cpu']}, {result['cores']} cores; a generated text of {result['file_gb']} GB; runs of {a.steps} steps (transformer)")
    print(f"| | {' | '.join(rows)} |\n|---|{'---|' * len(rows)}")
    labels = [("first run, s (encode + train)", "first_run_s"), ("second run, s (command to done)", "second_run_s"),
              ("second run's start, s (a 1-step run: command to done)", "start_s"), ("encode, s", "encode_s"), ("encode, MB/s (all cores)", "encode_mb_per_s"),
              ("peak RSS first run, MB", "peak_rss_first_mb"), ("peak RSS second run, MB", "peak_rss_second_mb"),
              ("cache on disk, MB", "cache_mb")]
    for label, key in labels:
        print(f"| {label} | {' | '.join(str(r[key]) for r in rows.values())} |")
    if speed:
        print(f"| tiktoken, one string, one thread, MB/s (same BPE) | | {speed:.1f} |")


if __name__ == "__main__":
    main()
