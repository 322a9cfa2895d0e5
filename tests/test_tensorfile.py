"""Checkpoints read tensor by tensor (makemore/tensorfile.py): what a checkpoint saved before the
transformer's GPT-2 options existed loads as, tied weights, damaged tensors, and bfloat16 loading."""

from __future__ import annotations

import json

import pytest
import torch

from makemore import checkpoint, tensorfile
from makemore.models.transformer import Transformer, TransformerConfig
from tests.conftest import edit_safetensors
from tokenizer import CharTokenizer

NEW_OPTIONS = ("bias", "head_bias", "tie_head", "gelu", "ln_eps", "n_positions")


def saved(tmp_path, **options) -> tuple[checkpoint.Checkpoint, bytes]:
    config = TransformerConfig(vocab_size=5, block_size=8, n_layer=1, n_embd=8, n_head=2, dropout=0.0, **options)
    ckpt = checkpoint.Checkpoint("transformer", Transformer(config).eval(), CharTokenizer("abcd"), checkpoint.TrainingRecord())
    path = checkpoint.save(ckpt, tmp_path / "m.safetensors")
    return ckpt, path.read_bytes()


def test_a_checkpoint_from_before_the_gpt2_options_loads_with_the_same_function(tmp_path):
    ckpt, raw = saved(tmp_path)

    def drop_new_options(header):
        config = json.loads(header["__metadata__"]["model_config"])
        header["__metadata__"]["model_config"] = json.dumps({k: v for k, v in config.items() if k not in NEW_OPTIONS})

    (tmp_path / "old.safetensors").write_bytes(edit_safetensors(raw, drop_new_options))
    old = checkpoint.load(tmp_path / "old.safetensors")
    assert old.model.config == ckpt.model.config  # the defaults are what it was trained with
    assert all(torch.equal(a, b) for a, b in zip(old.model.state_dict().values(), ckpt.model.state_dict().values()))
    ids = torch.randint(5, (2, 8))
    with torch.no_grad():
        assert torch.equal(old.model(ids), ckpt.model(ids))


def test_a_tied_head_is_stored_once_and_loads_tied(tmp_path):
    ckpt, raw = saved(tmp_path, tie_head=True, head_bias=False)
    names = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert "tok_emb.weight" in names and "head.weight" not in names
    back = checkpoint.load(tmp_path / "m.safetensors")
    assert back.model.head.weight is back.model.tok_emb.weight
    assert torch.equal(back.model.tok_emb.weight, ckpt.model.tok_emb.weight)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_weight_that_is_not_finite_is_a_damaged_checkpoint(tmp_path, value):
    _, raw = saved(tmp_path)

    def poison(header, body):
        start = header["ln_f.weight"]["data_offsets"][0]
        return body[:start] + torch.tensor([value]).numpy().tobytes() + body[start + 4 :]

    (tmp_path / "bad.safetensors").write_bytes(edit_safetensors(raw, edit_body=poison))
    with pytest.raises(checkpoint.MakemoreError, match="damaged checkpoint .*ln_f.weight holds NaN or infinite"):
        checkpoint.load(tmp_path / "bad.safetensors")


def test_bfloat16_loading_rounds_each_weight_once(tmp_path):
    ckpt, _ = saved(tmp_path)
    half = checkpoint.load(tmp_path / "m.safetensors", dtype=torch.bfloat16)
    for (name, a), b in zip(half.model.state_dict().items(), ckpt.model.state_dict().values()):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b.bfloat16()), name


def test_a_loaded_tied_model_stays_tied_and_computes_and_saves_the_same(tmp_path):
    config = TransformerConfig(vocab_size=40, block_size=8, n_layer=1, n_embd=8, n_head=2, dropout=0.0, tie_head=True, head_bias=False)
    torch.manual_seed(0)
    ckpt = checkpoint.Checkpoint("transformer", Transformer(config).eval(), CharTokenizer("abcdefghijklmnopqrstuvwxyz0123456789.,;"),
                                 checkpoint.TrainingRecord())
    path = checkpoint.save(ckpt, tmp_path / "m.safetensors")
    back = checkpoint.load(path)
    m = back.model
    assert m.head.weight is m.tok_emb.weight
    for (name, a), b in zip(m.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b) and a.is_contiguous(), name
    ids = torch.randint(40, (3, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(m(ids), ckpt.model(ids))
    assert checkpoint.save(back, tmp_path / "again.safetensors").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("layout", ["transposed", "bfloat16"])
def test_a_tensor_that_cannot_take_the_files_bytes_is_read_a_few_rows_at_a_time(tmp_path, monkeypatch, layout):
    monkeypatch.setattr(tensorfile, "CHUNK", 24)  # 3 rows of (., 2) float32 at a time, the last part shorter
    t = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    (tmp_path / "t.safetensors").write_bytes(checkpoint.serialize({"t": t}, {}))
    header, start, size = tensorfile.header_of(tmp_path / "t.safetensors")
    entry = tensorfile.entries(header, start, size)["t"]
    out = torch.empty(2, 7).t() if layout == "transposed" else torch.empty(7, 2, dtype=torch.bfloat16)
    with open(tmp_path / "t.safetensors", "rb") as f:
        tensorfile.read_into(f, entry, out)
    assert torch.equal(out, t.to(out.dtype))
