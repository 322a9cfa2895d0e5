"""The Python API: `makemore.train(...)` and `makemore.load(path)`, the same runs as the commands.

    import makemore
    model = makemore.train(type="bigram", max_steps=300, out="checkpoints/api-bigram")  # the built-in names
    model = makemore.load("checkpoints/api-bigram")
    model.sample(5, seed=1); model.score("emma").bits_per_char; model.evaluate()["loss"]

Errors are `MakemoreError`s naming the argument (`top_p`), never a command-line flag. Nothing prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from makemore import checkpoint, data
from makemore import run as runs
from makemore import sample as generate
from makemore.checkpoint import Checkpoint, TrainingRecord
from makemore.errors import MakemoreError
from makemore.sample import Output, Request, Sampling, Score
from makemore.train import TrainConfig, resolve_device


class Model:
    """A trained model and its tokenizer, as a checkpoint holds them: sample from it, score strings, evaluate it."""

    def __init__(self, ckpt: Checkpoint):
        self.checkpoint = ckpt
        self.kind = ckpt.training.kind

    @property
    def training(self) -> TrainingRecord:
        """Where the model stands: steps, best val loss, test loss, its data and options."""
        return self.checkpoint.training

    def sample(self, n: int | None = None, *, prompt: str | None = None, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, min_p: float | None = None, seed: int | None = None, min_len: int = 0,
               max_len: int | None = None, novel_only: bool = False, max_new_tokens: int | None = None,
               stop: tuple[str, ...] | list[str] = (), repetition_penalty: float = 1.0) -> list[str]:
        """`n` new items (lines), streams of text after `prompt` (running text) or answers to the
        instruction `prompt` (pairs), as `makemore sample` makes them."""
        return [o.text for o in self.generate(n, prompt=prompt, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                              seed=seed, min_len=min_len, max_len=max_len, novel_only=novel_only,
                                              max_new_tokens=max_new_tokens, stop=stop, repetition_penalty=repetition_penalty)]

    def generate(self, n: int | None = None, *, prompt: str | None = None, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, min_p: float | None = None, seed: int | None = None, min_len: int = 0,
                 max_len: int | None = None, novel_only: bool = False, max_new_tokens: int | None = None,
                 stop: tuple[str, ...] | list[str] = (), repetition_penalty: float = 1.0) -> list[Output]:
        """As `sample`, each output with its `row`: what `makemore sample --json` prints (why it ended, ...)."""
        data.refuse_options(self.kind, {"min_len": min_len, "max_len": max_len is not None, "novel_only": novel_only,
                                        "max_new_tokens": max_new_tokens is not None, "stop": bool(stop)}, str(self.checkpoint.path))
        request = Request(Sampling(temperature, top_k, top_p, min_p, repetition_penalty), n, seed, prompt, min_len, max_len,
                          novel_only, max_new_tokens, stop=tuple(stop), template=data.template_of(self.checkpoint.training.data))
        seen = data.training_items(self.checkpoint.training.data) if novel_only else None
        ckpt = self.checkpoint
        return [e for e in generate.generate(self.kind, ckpt.model, ckpt.tokenizer, request, seen) if isinstance(e, Output)]

    def score(self, text: str) -> Score:
        """The log-probability of `text` (a whole item in lines mode), per token and in bits per character."""
        return generate.score(self.checkpoint.model, self.checkpoint.tokenizer, self.kind, text)

    def evaluate(self, path: str | Path | None = None) -> dict:
        """Loss, perplexity and bits per character on the file at `path`, or on the model's own test split."""
        return runs.evaluate(self.checkpoint, path)


def load(path: str | Path, device: str = "cpu") -> Model:
    """The model in a checkpoint file or run folder."""
    return Model(checkpoint.load(path, resolve_device(device)))


def train(data_path: str | Path | None = None, *, type: str = "transformer", out: str | Path | None = None,
          options: dict | None = None, tokenizer: str | Path | None = None, mode: str = "auto", block_size: int | None = None,
          overwrite: bool = False, on_event: Callable | None = None, template: str | None = None, truncate: bool = False,
          **train_options) -> Model:
    """Train a new model of `type` (with model `options` such as {"n_layer": 2}) on the file at `data_path`
    (None: the built-in names) into the run folder `out` (default checkpoints/<data>-<type>), as `makemore
    train` does; `train_options` are `TrainConfig`'s (max_steps, max_seconds, batch_size, lr, seed, ...);
    `on_event` receives the loop's `Step` and `Eval` events; `template` (its text) and `truncate` are pairs mode's.
    Returns the best model, evaluated."""
    unknown = sorted(set(train_options) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise MakemoreError(f"`{unknown[0]}`: not a training option; they are {', '.join(TrainConfig.__dataclass_fields__)}")
    cfg = TrainConfig(**train_options | {"device": resolve_device(train_options.get("device", "cpu"))})
    folder = Path(out) if out is not None else runs.default_folder(data_path, type)
    with runs.Run.fresh(folder, data_path, type, cfg, options, tokenizer, mode, block_size, overwrite,
                        data_options={"template": template, "truncate": truncate}) as run:
        fitted = run.fit(on_event)
    return Model(fitted.checkpoint)
