"""Training diagnostics (`makemore train --diagnostics N`): the lectures' health checks, every N steps.

On every N-th step, from that step's batch:
- per activation module (`nn.Tanh`, `nn.GELU`, `nn.ReLU`): the mean and std of its output, the share
  saturated (tanh: |x| > 0.97, where its gradient is almost gone; ReLU: exactly 0, dead), and the
  mean and std of the loss's gradient with respect to that output, each with a histogram;
- per weight matrix (every parameter of 2 or more dimensions): the std of the weights, the mean and
  std of their gradient (with a histogram), and the update-to-data ratio
  log10(std(update) / std(weight)), the update being the change the optimizer step made (lr times
  AdamW's step, weight decay included). Karpathy's lecture 4 keeps it near -3.
Records go to `diagnostics.jsonl` beside metrics.jsonl, one JSON line each. The forward hooks exist
only while diagnostics are on, and do nothing on other steps; without them the loop is untouched.
Not seen: activations computed by functions inside a module (the recurrent cells' tanh, WaveNet's
gate), only activation modules; and no histogram of the weights themselves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from makemore.errors import MakemoreError
from safeio.files import finite

FILENAME = "diagnostics.jsonl"
ACTIVATIONS = {nn.Tanh: "tanh", nn.GELU: "gelu", nn.ReLU: "relu"}
SATURATED = 0.97  # tanh: |x| above this is in the flat tails (lecture 4)
BINS = 40


def histogram(x: torch.Tensor, lo: float | None = None, hi: float | None = None) -> dict:
    """Counts of `x` in BINS equal bins from `lo` to `hi` (default: its own range)."""
    x = x.detach().double().flatten()
    lo = float(x.min()) if lo is None else lo
    hi = float(x.max()) if hi is None else hi
    if hi <= lo:
        hi = lo + 1e-12
    return {"lo": lo, "hi": hi, "counts": torch.histc(x, BINS, lo, hi).long().tolist()}


def moments(x: torch.Tensor) -> tuple[float, float]:
    x = x.detach().double()
    return float(x.mean()), float(x.std()) if x.numel() > 1 else 0.0


def saturation(kind: str, y: torch.Tensor) -> float | None:
    """The share of an activation's outputs where it has (almost) no slope."""
    if kind == "tanh":
        return float((y.detach().abs() > SATURATED).double().mean())
    if kind == "relu":
        return float((y.detach() == 0).double().mean())
    return None  # GELU has no flat region worth a number


def update_ratio(before: torch.Tensor, after: torch.Tensor) -> float | None:
    """log10(std(after - before) / std(before)); None where either is zero."""
    change, size = float((after - before).double().std()), float(before.double().std())
    return math.log10(change / size) if change > 0 and size > 0 else None


class Diagnostics:
    """Watches `model` while it trains, from step `step` on: `before_update` (gradients in place) and
    `after_update(lr)` are called around each optimizer step; every `every` steps a record is written."""

    def __init__(self, model: nn.Module, every: int, path: Path, step: int = 0):
        if every < 1:
            raise MakemoreError(f"`diagnostics` {every}: must be at least 1 (steps between records)")
        self.every, self.path, self.step = every, Path(path), step
        self.names = {m: name for name, m in model.named_modules() if type(m) in ACTIVATIONS}
        self.params = [(name, p) for name, p in model.named_parameters() if p.dim() >= 2 and p.requires_grad]
        self.handles = [m.register_forward_hook(self.on_forward) for m in self.names]
        self.armed = (step + 1) % every == 0  # the coming step is one to record
        self.activations: dict[str, dict] = {}
        self.weights: list[dict] = []
        self.before: list[torch.Tensor] = []

    def on_forward(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if not (self.armed and module.training):
            return
        kind = ACTIVATIONS[type(module)]
        mean, std = moments(output)
        row = {"layer": self.names[module], "kind": kind, "mean": mean, "std": std, "saturated": saturation(kind, output),
               "hist": histogram(output, -1.0, 1.0) if kind == "tanh" else histogram(output)}
        self.activations[row["layer"]] = row
        if output.requires_grad:
            output.register_hook(lambda grad, row=row: row.update(self.gradient(grad)))

    @staticmethod
    def gradient(grad: torch.Tensor) -> dict:
        mean, std = moments(grad)
        return {"grad_mean": mean, "grad_std": std, "grad_hist": histogram(grad)}

    def before_update(self) -> None:
        """With this step's gradients in place, before the optimizer changes the weights."""
        if not self.armed:
            return
        self.weights = []
        for name, p in self.params:
            row = {"name": name, "shape": list(p.shape), "std": moments(p)[1]}
            if p.grad is not None:
                row |= self.gradient(p.grad)
            self.weights.append(row)
        self.before = [p.detach().clone() for _, p in self.params]

    def after_update(self, lr: float) -> None:
        """After the optimizer step: the record of an armed step is written, the next step armed or not."""
        self.step += 1
        if self.armed:
            for row, before, (_, p) in zip(self.weights, self.before, self.params):
                row["update_ratio"] = update_ratio(before, p.detach())
            record = {"step": self.step, "lr": lr, "activations": list(self.activations.values()), "weights": self.weights}
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(finite(record)) + "\n")
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(self.path)) from None
            self.activations, self.weights, self.before = {}, [], []
        self.armed = (self.step + 1) % self.every == 0

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def read(run: Path) -> list[dict]:
    """The records of a run folder's diagnostics.jsonl (a line cut short by a crash is skipped)."""
    if not run.exists():
        raise MakemoreError(f"{run}: no such run folder")
    folder = run if run.is_dir() else run.parent
    path = folder / FILENAME
    if not path.is_file():
        raise MakemoreError(f"{folder}: no {FILENAME}; train with --diagnostics N to record them")
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and isinstance(row.get("weights"), list):
            records.append(row)
    if not records:
        raise MakemoreError(f"{path}: no complete record")
    return records
