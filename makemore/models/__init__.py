"""The model registry: `--type` name -> (model class, config dataclass).

Adding a model type is one file in this folder plus one line here; the trainer, sampler,
checkpoints, CLI and the registry-wide tests pick it up from this table.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from makemore.errors import MakemoreError
from makemore.models.base import ModelConfig
from makemore.models.bigram import Bigram, BigramConfig
from makemore.models.bow import BoW, BoWConfig
from makemore.models.gru import GRU, GRUConfig
from makemore.models.lstm import LSTM, LSTMConfig
from makemore.models.mlp import MLP, MLPConfig
from makemore.models.rnn import RNN, RNNConfig
from makemore.models.transformer import Transformer, TransformerConfig
from makemore.models.wavenet import WaveNet, WaveNetConfig
from safeio.files import shown

MODELS: dict[str, tuple[type[nn.Module], type[ModelConfig]]] = {
    "bigram": (Bigram, BigramConfig),
    "mlp": (MLP, MLPConfig),
    "rnn": (RNN, RNNConfig),
    "gru": (GRU, GRUConfig),
    "lstm": (LSTM, LSTMConfig),
    "bow": (BoW, BoWConfig),
    "wavenet": (WaveNet, WaveNetConfig),
    "transformer": (Transformer, TransformerConfig),
}


def lookup(name: str) -> tuple[type[nn.Module], type[ModelConfig]]:
    if name not in MODELS:
        raise MakemoreError(f"unknown model type {shown(name)}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def make_config(name: str, vocab_size: int, block_size: int, kind: str = "", **options) -> ModelConfig:
    """The config of model type `name` with its defaults (those for data of `kind` where they differ) and
    `options` (key=value from the user) applied."""
    _, config_cls = lookup(name)
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.name not in ("vocab_size", "block_size")}
    values = dict(config_cls.kind_defaults.get(kind, {}))
    for key, raw in options.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise MakemoreError(f"model type {shown(name)} has no option {shown(key)}; its options: {known}")
        values[key] = _convert(key, raw, type(fields[key].default))
    return config_cls(vocab_size=vocab_size, block_size=block_size, **values)


def _convert(key: str, raw, kind: type):
    if not isinstance(raw, str):
        return kind(raw)
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        return kind(raw)
    except ValueError:
        wanted = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, kind.__name__)
        raise MakemoreError(f"model option {key}={shown(raw)}: expected {wanted}") from None


def build(name: str, config: ModelConfig) -> nn.Module:
    model_cls, _ = lookup(name)
    return model_cls(config)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
