"""Generation speed: tokens per second for each model type in text mode, cached and uncached.

The cache is the models' incremental interface (KV cache, carried hidden state, sliding window);
uncached reruns the whole visible context for every token (`--no-cache`). Untrained models at
text mode's default sizes with a 65-character vocabulary (speed does not depend on the weights),
batch 1, greedy, median of 5 runs taken in turns; the transformer's row uses block size 256 as
well as the default 128.

    python bench/generate.py [--tokens 500] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from machine import describe
from makemore import models
from makemore.sample import Sampling, stream_text
from tokenizer import CharTokenizer

VOCAB = 65


def tokens_per_second(model, n: int, repeats: int) -> tuple[float, float]:
    """Cached and uncached tokens/s, medians of `repeats` runs taken in turns, so that the machine's
    ups and downs fall on both alike."""
    tok = CharTokenizer("".join(chr(33 + i) for i in range(VOCAB - 1)))
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(repeats):
        for cache in (True, False):
            start = time.perf_counter()
            for _ in stream_text(model, tok, [1], n, Sampling(temperature=0), seed=r, cache=cache):
                pass
            times[cache].append(time.perf_counter() - start)
    return n / statistics.median(times[True]), n / statistics.median(times[False])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    cases = [(t, 128) for t in models.MODELS] + [("transformer", 256)]
    for name, block in cases:
        model = models.build(name, models.make_config(name, VOCAB, block, "text")).eval()
        cached, plain = tokens_per_second(model, args.tokens, args.repeats)
        rows.append({"type": name, "block_size": block, "cached_tokens_per_s": cached, "uncached_tokens_per_s": plain,
                     "speedup": cached / plain})
    machine = f"{describe(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())}, torch {torch.__version__}"
    if args.json:
        print(json.dumps({"machine": machine, "tokens": args.tokens, "rows": rows}, indent=2))
        return
    table = Table(title=f"generation, {args.tokens} new tokens, batch 1, greedy; CPU {machine}")
    for col in ("type", "block", "cached tokens/s", "uncached tokens/s", "cached / uncached"):
        table.add_column(col, justify="left" if col == "type" else "right")
    for r in rows:
        table.add_row(r["type"], str(r["block_size"]), f"{r['cached_tokens_per_s']:,.0f}", f"{r['uncached_tokens_per_s']:,.0f}",
                      f"{r['speedup']:.1f}x")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
