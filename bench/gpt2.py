"""GPT-2 124M on a CPU: makemore against transformers, on one random-weight model that transformers
makes (the speed does not depend on the weights), in one process with the same threads for both.

- generation: tokens/s for 256 new tokens after a 32-token prompt, greedy, batch 1; ours through
  `sample.stream_text` (the KV cache), theirs through `generate(use_cache=True)`;
- a fine-tuning step at block 256, batch 4: ours is the training loop's step (forward, loss,
  backward, clipped fused AdamW), in float32 and, where the CPU has bfloat16 arithmetic, with
  `--dtype bfloat16` (autocast); theirs a forward with labels, backward, `clip_grad_norm_` and
  `torch.optim.AdamW` in float32; neither has dropout;
- import-to-first-token: seconds and peak RSS from a model folder to the first generated token, each
  in a fresh child process (ours: `makemore import`, then load and sample; theirs: `from_pretrained`
  and `generate`); and the peak RSS of our sampling alone, from the imported run.

Medians of `--repeats` runs taken in turns (ours, theirs, ours, ...), so the machine's ups and downs
fall on both alike. The tokenizer is a synthetic byte-level BPE of GPT-2's 50,257 ids (bytes and
pairs of bytes): the speed does not depend on it.

    python bench/gpt2.py [--repeats 3] [--threads N] [--json]
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

VOCAB, PROMPT, NEW, BLOCK, BATCH = 50257, 32, 256, 256, 4


def make_folder(folder: Path) -> None:
    """A 124M GPT-2 with random weights (transformers' init), saved with a 50,257-id tokenizer."""
    import transformers

    from tokenizer import EOT, BPETokenizer
    from tokenizer.export import huggingface_json

    torch.manual_seed(0)
    config = transformers.GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    merges = [(a, b) for a in range(256) for b in range(256)][: VOCAB - 257]
    tok = BPETokenizer(merges, "gpt2", {EOT: VOCAB - 1})
    (folder / "tokenizer.json").write_text(json.dumps(huggingface_json(tok), ensure_ascii=False), encoding="utf-8")


def medians(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, over `repeats` rounds that take them in turns."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def median_pair(ours, theirs, repeats: int) -> tuple[float, float]:
    m = medians({"ours": ours, "theirs": theirs}, repeats)
    return m["ours"], m["theirs"]


def bfloat16_generation(run: Path, repeats: int) -> float:
    """Our tokens/s with bfloat16 weights (`sample --dtype bfloat16`): half the bytes each token reads."""
    from makemore import checkpoint
    from makemore.sample import Sampling, stream_text

    c = checkpoint.load(run, dtype=torch.bfloat16)
    times = []
    for _ in range(repeats + 1):  # the first warms up
        start = time.perf_counter()
        list(stream_text(c.model, c.tokenizer, list(range(PROMPT)), NEW, Sampling(temperature=0)))
        times.append(time.perf_counter() - start)
    return NEW / statistics.median(times[1:])


def generation(ours_ckpt, theirs, repeats: int) -> tuple[float, float]:
    from makemore.sample import Sampling, stream_text

    prompt = torch.randint(VOCAB - 1, (PROMPT,), generator=torch.Generator().manual_seed(1)).tolist()
    ids = torch.tensor([prompt])

    def ours():
        made = list(stream_text(ours_ckpt.model, ours_ckpt.tokenizer, prompt, NEW, Sampling(temperature=0)))
        assert len(made) == NEW

    def hf():
        with torch.inference_mode():
            out = theirs.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, use_cache=True, pad_token_id=0)
        assert out.shape[1] == PROMPT + NEW

    ours(), hf()  # warm up both
    a, b = median_pair(ours, hf, repeats)
    return NEW / a, NEW / b


def fine_tune_step(ours_model, theirs, repeats: int) -> tuple[float, float, float | None, float | None]:
    """Seconds per step: ours in float32, theirs, and ours with `train --dtype bfloat16` (None where the
    CPU has no bfloat16 arithmetic); and the loss of one batch under that autocast minus float32's."""
    from makemore.models.base import onednn
    from makemore.train import TrainConfig, bfloat16_native, loss_fn, make_optimizer, mixed_precision, training_loss

    g = torch.Generator().manual_seed(2)
    x = torch.randint(VOCAB, (BATCH, BLOCK + 1), generator=g)
    ours_model.train()
    opt = make_optimizer(ours_model, TrainConfig(lr=1e-5, ema=0.0))
    theirs.train()
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-5, weight_decay=0.1)

    def ours(dtype: str = "float32"):
        with onednn(ours_model.onednn or dtype == "bfloat16"):  # as the training loop's step
            with mixed_precision(TrainConfig(dtype=dtype)):
                loss = training_loss(ours_model(x[:, :-1]), x[:, 1:])
            opt.zero_grad()
            loss.backward()
        opt.step(opt.grad_norm(), 1.0)

    def hf():
        loss = theirs(x[:, :-1], labels=x[:, :-1]).loss  # their labels shift inside: the same targets
        their_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        their_opt.step()

    fns = {"ours": ours, "theirs": hf} | ({"bf16": lambda: ours("bfloat16")} if bfloat16_native("cpu") else {})
    for fn in fns.values():
        fn()  # warm up
    m = medians(fns, repeats)
    gap = None
    if "bf16" in fns:
        with torch.no_grad(), onednn(True):
            losses = []
            for dtype in ("float32", "bfloat16"):
                with mixed_precision(TrainConfig(dtype=dtype)):
                    losses.append(float(loss_fn(ours_model(x[:, :-1]), x[:, 1:])))
        gap = losses[1] - losses[0]
    return m["ours"], m["theirs"], m.get("bf16"), gap


def bfloat16_loss(run: Path) -> tuple[float, float]:
    """Loss per token on 1,024 tokens of tinyshakespeare, float32 and bfloat16 weights (one file)."""
    from makemore import checkpoint, data
    from makemore.train import loss_fn

    losses = []
    for dtype in (torch.float32, torch.bfloat16):
        c = checkpoint.load(run, dtype=dtype)
        ids = torch.tensor(c.tokenizer.encode_ordinary(data.read_source("shakespeare").text[:20000])[:1025])[None]
        with torch.no_grad():
            losses.append(float(loss_fn(c.model(ids[:, :-1]).float(), ids[:, 1:])))
        del c
    return losses[0], losses[1]


CHILD = {
    "ours": "from makemore import hf, checkpoint; from makemore.sample import Sampling, stream_text\n"
            "hf.import_folder([Path(sys.argv[2])], Path(sys.argv[3]), overwrite=True)\n"
            "c = checkpoint.load(sys.argv[3]); next(stream_text(c.model, c.tokenizer, [1] * 32, 1, Sampling(temperature=0)))",
    "theirs": "import transformers\n"
              "m = transformers.GPT2LMHeadModel.from_pretrained(sys.argv[2]).eval()\n"
              "m.generate(torch.ones(1, 32, dtype=torch.long), max_new_tokens=1, do_sample=False, pad_token_id=0)",
    "ours-sample": "from makemore import checkpoint; from makemore.sample import Sampling, stream_text\n"
                   "c = checkpoint.load(sys.argv[3]); list(stream_text(c.model, c.tokenizer, [1] * 32, 256, Sampling(temperature=0)))",
}


def child(which: str, folder: Path, run: Path, threads: int) -> tuple[float, float]:
    """Seconds (from the child's start, torch imported) and peak RSS (MB) of one child process. The
    peak is the child's own VmHWM: its rusage would count this process's RSS at the fork."""
    code = (f"import sys, time, torch; from pathlib import Path; torch.set_num_threads({threads}); t = time.perf_counter()\n"
            + CHILD[which] + "\nprint(time.perf_counter() - t)"
            + "\nprint(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")
    out = subprocess.run([sys.executable, "-c", code, which, str(folder), str(run)], stdout=subprocess.PIPE, check=True,
                         env=os.environ | {"HF_HUB_OFFLINE": "1"}).stdout.decode().split()
    return float(out[-2]), int(out[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    from makemore import checkpoint, hf

    with tempfile.TemporaryDirectory() as tmp:
        folder, run = Path(tmp) / "gpt2", Path(tmp) / "run"
        make_folder(folder)
        weights_mb = (folder / "model.safetensors").stat().st_size / 2**20
        rss = {which: child(which, folder, run, args.threads) for which in ("theirs", "ours", "ours-sample")}
        f32, bf16 = bfloat16_loss(run)
        bf16_speed = bfloat16_generation(run, args.repeats)
        ours_ckpt = checkpoint.load(run)
        theirs = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
        gen = generation(ours_ckpt, theirs, args.repeats)
        step = fine_tune_step(ours_ckpt.model, theirs, args.repeats)
    rows = [
        {"measure": "generation, tokens/s (higher is better)", "ours": gen[0], "transformers": gen[1], "ratio": gen[0] / gen[1]},
        {"measure": "generation with bfloat16 weights, tokens/s", "ours": bf16_speed, "transformers": None, "ratio": None},
        {"measure": f"fine-tuning step, s (block {BLOCK}, batch {BATCH})", "ours": step[0], "transformers": step[1], "ratio": step[1] / step[0]},
        {"measure": "fine-tuning step with --dtype bfloat16 (autocast), s", "ours": step[2], "transformers": step[1],
         "ratio": step[1] / step[2] if step[2] else None},
        {"measure": "loss of a batch under that autocast, minus float32's", "ours": step[3], "transformers": None, "ratio": None},
        {"measure": "import to first token, s", "ours": rss["ours"][0], "transformers": rss["theirs"][0], "ratio": rss["theirs"][0] / rss["ours"][0]},
        {"measure": "peak RSS import to first token, MB", "ours": rss["ours"][1], "transformers": rss["theirs"][1], "ratio": rss["theirs"][1] / rss["ours"][1]},
        {"measure": "peak RSS sampling 256 tokens, MB", "ours": rss["ours-sample"][1], "transformers": None, "ratio": None},
        {"measure": "loss, float32 weights (1,024 tokens)", "ours": f32, "transformers": None, "ratio": None},
        {"measure": "loss, bfloat16 weights, minus float32's", "ours": bf16 - f32, "transformers": None, "ratio": None},
    ]
    machine = f"{describe(torch.backends.cpu.get_cpu_capability(), args.threads)}, torch {torch.__version__}, transformers {transformers.__version__}"
    if args.json:
        print(json.dumps({"machine": machine, "weights_mb": weights_mb, "repeats": args.repeats, "rows": rows}, indent=2))
        return
    table = Table("measure", "ours", "transformers", "ours' advantage",
                  title=f"GPT-2 124M ({weights_mb:.0f} MB of float32 weights), medians of {args.repeats}: {machine}")
    for r in rows:
        if r["ours"] is None:
            continue  # bfloat16 training where the CPU cannot
        table.add_row(r["measure"], f"{r['ours']:.3g}", "-" if r["transformers"] is None else f"{r['transformers']:.3g}",
                      "-" if r["ratio"] is None else f"{r['ratio']:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
