"""Per-step training time of makemore and the reference makemore, in one process, in turns.

Run by `bench/vs_reference.py` (in a child process, so that forced-AVX2 settings apply before torch
loads); prints JSON. Each type's two models train in alternating chunks of `--chunk` steps, so a
slow minute of a noisy machine falls on both alike. Ours goes through `makemore.train.train` (the
trainer the CLI uses, resumed chunk after chunk from its returned state); the reference through
its own dataset, data loader (no workers, as `-n 0`), model and AdamW settings, timed the way its
training loop times a step (batch, forward, backward, optimizer step). The first step of every
chunk is left out of both.

A type may carry options of ours after colons (`rnn:n_hidden=64`: ours at the reference's size);
the reference always runs that type at its defaults.

    python bench/step_pairs.py DATA REFERENCE_DIR [--chunk 50] [--chunks 8] [--types mlp,gru,rnn:n_hidden=64]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from makemore import data, models
from makemore.train import Step, TrainConfig, resolve, train


def parse(spec: str) -> tuple[str, dict[str, str]]:
    """'rnn' or 'rnn:n_hidden=64' (options of ours, separated by ':'): the type and its options."""
    name, *options = spec.split(":")
    return name, dict(o.split("=", 1) for o in options)


def ours(prep: data.Dataset, spec: str):
    """A function that trains our model `spec` (a type, with options) for n more steps and returns their durations."""
    torch.manual_seed(0)
    name, options = parse(spec)
    model = models.build(name, models.make_config(name, prep.tokenizer.vocab_size, prep.block_size, **options))
    state, done = None, 0

    def steps(n: int) -> list[float]:
        nonlocal state, done
        times, last = [], [None]

        def on_event(e):
            if isinstance(e, Step):
                if last[0] is not None:
                    times.append(e.elapsed - last[0])
                last[0] = e.elapsed

        done += n
        cfg = resolve(TrainConfig(max_steps=done, eval_interval=10**9, eval_items=1), model, type(prep))  # the chunk's closing evaluation: one item
        state = train(model, prep.splits["train"], prep.splits["val"], cfg, state, on_event=on_event)
        model.train()
        return times

    return steps


def reference(module, data: str, model_type: str):
    """The same for the reference makemore's `model_type` at its defaults (n_layer 4, n_head 4, n_embd 64,
    n_embd2 64, batch 32, lr 5e-4, weight decay 0.01)."""
    torch.manual_seed(3407)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints what it builds
        train_set, _ = module.create_datasets(data)
        config = module.ModelConfig(vocab_size=train_set.get_vocab_size(), block_size=train_set.get_output_length(),
                                    n_layer=4, n_head=4, n_embd=64, n_embd2=64)
        model = {"transformer": lambda: module.Transformer(config), "mlp": lambda: module.MLP(config),
                 "rnn": lambda: module.RNN(config, cell_type="rnn"), "gru": lambda: module.RNN(config, cell_type="gru")}[model_type]()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01, betas=(0.9, 0.99), eps=1e-8)
    loader = module.InfiniteDataLoader(train_set, batch_size=32, pin_memory=False, num_workers=0)

    def steps(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.time()
            x, y = loader.next()
            _, loss = model(x, y)
            model.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.time() - t0)
        return times[1:]

    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("reference", type=Path, help="a checkout of the single-file makemore")
    ap.add_argument("--chunk", type=int, default=50)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--types", default="mlp,rnn,gru,transformer")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("reference_makemore", args.reference / "makemore.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    types = args.types.split(",")
    prep = data.prepare(args.data)
    pairs = {t: (ours(prep, t), reference(module, args.data, parse(t)[0])) for t in types}
    times = {t: ([], []) for t in types}
    for _ in range(args.chunks):
        for t in types:
            for side in (0, 1):
                times[t][side].extend(pairs[t][side](args.chunk))
    out = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
           "steps": args.chunk * args.chunks}
    for t in types:
        out[t] = {"ours_ms": 1000 * statistics.median(times[t][0]), "reference_ms": 1000 * statistics.median(times[t][1])}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
