"""`makemore show`: the numbers behind each picture against a direct computation, and the PNGs."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F
from typer.testing import CliRunner

import tokenizer
from makemore import checkpoint, models
from makemore import plot as plotting
from makemore import show as pictures
from makemore.checkpoint import Checkpoint, TrainingRecord
from makemore.cli import app
from makemore.diagnostics import Diagnostics
from makemore.train import TrainConfig, loss_fn, make_optimizer
from tests.conftest import toy_items
from tests.test_cli import one_line_error

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def saved(tmp_path, model_type: str, tok, **options) -> tuple[Checkpoint, object]:
    """A fresh (untrained, seeded) model of `model_type` saved as a checkpoint: its path and the loaded checkpoint."""
    torch.manual_seed(0)
    config = models.make_config(model_type, tok.vocab_size, 12, **options)
    ckpt = Checkpoint(model_type, models.build(model_type, config).eval(), tok, TrainingRecord())
    path = checkpoint.save(ckpt, tmp_path / model_type / "model.safetensors")
    return path, checkpoint.load(path)


@pytest.fixture
def chars():
    return tokenizer.CharTokenizer.from_items(toy_items())


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG, decoded: a file that does not decode fails here."""
    image = pytest.importorskip("matplotlib.image").imread(path)
    return image.shape[1], image.shape[0]


def test_counts_equal_a_direct_count_of_the_data(toy_file):
    result = pictures.counts(toy_file)
    direct = Counter()
    for w in toy_items():
        seq = [".", *w, "."]
        direct.update(zip(seq, seq[1:]))
    tokens = result["tokens"]
    assert tokens == [".", *sorted(set("".join(toy_items())))]
    assert {(tokens[i], tokens[j]): n for i, row in enumerate(result["counts"]) for j, n in enumerate(row) if n} == direct
    assert result["pairs"] == sum(direct.values()) and result["mode"] == "lines"
    probs = torch.tensor(result["probs"], dtype=torch.double)
    assert torch.allclose(probs.sum(1), torch.ones(len(tokens), dtype=torch.double))
    n = torch.tensor(result["counts"]).double()
    smoothed = (n + 1) / (n + 1).sum(1, keepdim=True)
    assert result["nll"] == pytest.approx(float(-(n * smoothed.log()).sum() / n.sum()), rel=1e-12)


def test_counts_of_a_bigram_model_show_its_softmax_table(tmp_path, toy_file, chars):
    path, ckpt = saved(tmp_path, "bigram", chars)
    with torch.no_grad():
        ckpt.model.logits.copy_(torch.randn_like(ckpt.model.logits))
    checkpoint.save(ckpt, path)
    result = run("show", "counts", toy_file, "-c", path, "--json", "--smoothing", "0")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    expected = torch.softmax(checkpoint.load(path).model.logits.detach().double(), 1)
    assert torch.allclose(torch.tensor(shown["model"]["probs"], dtype=torch.double), expected, atol=1e-12)
    counts = torch.tensor(shown["counts"]).double()
    assert shown["nll"] < shown["model"]["nll"]  # the counts' own probabilities are the maximum-likelihood table
    assert shown["model"]["nll"] == pytest.approx(float(-(counts * expected.log()).sum() / counts.sum()))


def test_counts_refuse_a_model_without_a_table(tmp_path, toy_file, chars):
    path, _ = saved(tmp_path, "mlp", chars)
    one_line_error(run("show", "counts", toy_file, "-c", path, "--json"), "a mlp model", "bigram")


def test_embeddings_pca_matches_a_direct_computation(tmp_path, chars):
    _, ckpt = saved(tmp_path, "mlp", chars, n_embd=6)
    result = pictures.embeddings(ckpt)
    table = ckpt.model.wte.weight.detach().double()[: chars.vocab_size]
    centred = table - table.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending
    explained = (values.flip(0) / values.sum())[:2]
    assert result["method"] == "pca" and result["explained"] == pytest.approx(explained.tolist(), rel=1e-9)
    assert result["explained"][0] >= result["explained"][1]
    points = torch.tensor(result["points"], dtype=torch.double)
    for k in range(2):
        direct = centred @ vectors[:, -1 - k]
        assert torch.allclose(points[:, k].abs(), direct.abs(), atol=1e-9)  # an axis's sign is a convention
    assert result["tokens"][0] == "." and len(points) == chars.vocab_size


def test_embeddings_of_two_dimensions_are_the_table_itself(tmp_path, chars):
    _, ckpt = saved(tmp_path, "mlp", chars, n_embd=2)
    result = pictures.embeddings(ckpt)
    assert result["method"] == "dims" and result["explained"] is None
    assert result["points"] == ckpt.model.wte.weight.detach().double()[: chars.vocab_size].tolist()


def test_attention_is_causal_sums_to_one_and_matches_the_fast_path(tmp_path, chars):
    _, ckpt = saved(tmp_path, "transformer", chars, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    model = ckpt.model.eval()
    idx = torch.randint(chars.vocab_size, (3, 12))
    logits, weights = model.attention(idx)
    assert torch.allclose(logits, model(idx), atol=1e-5)
    assert len(weights) == 2 and weights[0].shape == (3, 2, 12, 12)
    for w in weights:
        assert torch.all(w.triu(diagonal=1) == 0)
        assert torch.allclose(w.sum(-1), torch.ones(3, 2, 12), atol=1e-6)
    result = pictures.attention(ckpt, "karimo")
    assert result["tokens"] == [".", *"karimo"]  # a lines-mode model reads an item from its boundary
    w = torch.tensor(result["weights"], dtype=torch.double)
    assert w.shape == (2, 2, 7, 7) and torch.allclose(w.sum(-1), torch.ones(2, 2, 7, dtype=torch.double))


@given(heads=st.integers(1, 3), width=st.integers(1, 4), T=st.integers(1, 9), layers=st.integers(1, 2))
@settings(max_examples=8, deadline=None)
def test_written_out_attention_equals_the_fast_kernel(heads, width, T, layers):
    torch.manual_seed(heads * 100 + width * 10 + T)
    config = models.make_config("transformer", 11, 9, n_layer=layers, n_head=heads, n_embd=heads * width * 2, dropout=0.0)
    model = models.build("transformer", config).eval()
    idx = torch.randint(11, (2, T))
    logits, weights = model.attention(idx)
    assert torch.allclose(logits, model(idx), atol=1e-5)
    assert all(torch.allclose(w.sum(-1), torch.ones(2, heads, T), atol=1e-6) and not w.triu(1).any() for w in weights)


def test_attention_refuses_other_models_and_long_prompts(tmp_path, chars):
    gru, _ = saved(tmp_path, "gru", chars)
    one_line_error(run("show", "attention", "-c", gru, "--prompt", "ka", "--json"), "gru model has no attention")
    path, _ = saved(tmp_path, "transformer", chars, n_layer=1, n_head=1, n_embd=8)
    one_line_error(run("show", "attention", "-c", path, "--prompt", "ka" * 10, "--json"), "21 tokens", "at most 12")
    one_line_error(run("show", "attention", "-c", path, "--prompt", "kax", "--json"), "--prompt 'kax'", "'x'")


def test_every_picture_decodes_at_its_size(tmp_path, toy_file, chars):
    pytest.importorskip("matplotlib", reason="pictures need the optional plot extra")
    mlp, _ = saved(tmp_path, "mlp", chars, n_embd=4)
    transformer, _ = saved(tmp_path, "transformer", chars, n_layer=2, n_head=3, n_embd=12)
    cases = [(["counts", toy_file], (2 * 14 * 20, 14 * 20)), (["embeddings", "-c", mlp], (8 * 20, 8 * 20)),
             (["attention", "-c", transformer, "--prompt", "kari"], (3 * 3 * 20, 2 * 3 * 20))]
    for args, size in cases:
        out = tmp_path / f"{args[0]}.png"
        result = run("show", *args, "-o", out, "--dpi", 20, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["size"] == list(size) == list(png_size(out))


def test_pictures_without_matplotlib_name_the_extra(tmp_path, toy_file, monkeypatch):
    monkeypatch.setattr(plotting, "matplotlib_pyplot", lambda: None)
    monkeypatch.setattr(pictures, "matplotlib_pyplot", lambda: None)
    one_line_error(run("show", "counts", toy_file, "-o", tmp_path / "c.png"), "pip install 'makemore[plot]'")
    assert not (tmp_path / "c.png").exists()
    assert run("show", "counts", toy_file, "--json").exit_code == 0  # the numbers need no extra


def test_a_picture_never_replaces_an_input(tmp_path, toy_file):
    one_line_error(run("show", "counts", toy_file, "-o", toy_file), "toy.txt: is also an input")


def test_merges_read_as_pairs_and_split_characters_as_bytes(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat, привет\n" * 20)
    tok_file = tmp_path / "tok.json"
    assert runner.invoke(tokenizer.cli.app, ["train", str(corpus), "--vocab-size", "270", "-o", str(tok_file)]).exit_code == 0
    tok = tokenizer.load(tok_file)
    rows = json.loads(run("show", "merges", "-t", tok_file, "--top", 5, "--json").stdout)
    assert [r["id"] for r in rows] == list(range(256, 261))
    for r, (a, b) in zip(rows, tok.merges):
        assert (r["left"], r["right"]) == (tokenizer.readable(tok.vocab[a]), tokenizer.readable(tok.vocab[b]))
    text = run("show", "merges", "-t", tok_file, "--top", 1).stdout
    assert text.strip() == f"0  '{rows[0]['left']}' + '{rows[0]['right']}' -> '{rows[0]['merged']}'  (id 256)"
    assert tokenizer.readable("п".encode()[:1] + b"ab" + "п".encode()[1:]) == "<d0>ab<bf>"
    assert tok.id_to_piece(0xD0) == "<d0>"


def test_diagnostics_match_values_computed_by_hand(tmp_path):
    torch.manual_seed(0)
    model = models.build("mlp", models.make_config("mlp", 7, 6, context=3, n_embd=3, n_hidden=16)).train()
    opt = make_optimizer(model, TrainConfig(lr=0.05, batch_size=4))
    watch = Diagnostics(model, 1, tmp_path / "d.jsonl")
    x, y = torch.randint(7, (4, 6)), torch.randint(7, (4, 6))
    windows = F.pad(x, (2, 0), value=7).unfold(1, 3, 1)  # by hand: the MLP's hidden layer
    h = torch.tanh(model.hidden(model.wte(windows).flatten(2)))
    (dh,) = torch.autograd.grad(loss_fn(model.out(h), y), h)
    loss = loss_fn(model(x), y)
    opt.zero_grad()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    watch.before_update()
    opt.step()
    watch.after_update(0.05)
    watch.close()
    (record,) = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    (act,) = record["activations"]
    assert act["layer"] == "act" and act["kind"] == "tanh" and record["step"] == 1
    h, dh = h.detach(), dh.detach()
    assert act["mean"] == pytest.approx(float(h.double().mean()), abs=1e-7)
    assert act["std"] == pytest.approx(float(h.double().std()), rel=1e-6)
    assert act["saturated"] == pytest.approx(float((h.abs() > 0.97).double().mean()))
    assert act["grad_mean"] == pytest.approx(float(dh.double().mean()), abs=1e-9)
    assert act["grad_std"] == pytest.approx(float(dh.double().std()), rel=1e-5)
    assert sum(act["hist"]["counts"]) == h.numel()
    weights = {w["name"]: w for w in record["weights"]}
    assert set(weights) == {"wte.weight", "hidden.weight", "out.weight"}  # matrices only
    for name, w in weights.items():
        p = dict(model.named_parameters())[name].detach()
        assert w["std"] == pytest.approx(float(before[name].double().std()), rel=1e-6)
        assert w["grad_std"] == pytest.approx(float(grads[name].double().std()), rel=1e-6)
        ratio = (p - before[name]).double().std() / before[name].double().std()
        assert w["update_ratio"] == pytest.approx(float(ratio.log10()), abs=1e-5)


def test_diagnostics_change_nothing_in_training_and_show_training_draws_them(tmp_path, toy_file):
    args = ["train", toy_file, "--type", "mlp", "--set", "n_hidden=32", "--max-steps", 20, "--eval-interval", 20, "--threads", 1]
    assert run(*args, "--out", tmp_path / "plain").exit_code == 0
    result = run(*args, "--out", tmp_path / "watched", "--diagnostics", 5)
    assert result.exit_code == 0, result.output
    plain, watched = (checkpoint.load(tmp_path / name / "last.safetensors").model.state_dict() for name in ("plain", "watched"))
    assert all(torch.equal(plain[k], watched[k]) for k in plain)  # the same weights, bit for bit
    shown = json.loads(run("show", "training", tmp_path / "watched", "--json").stdout)
    assert shown["steps"] == [5, 10, 15, 20] and shown["records"] == 4
    assert list(shown["update_ratios"]) == ["wte.weight", "hidden.weight", "out.weight"]
    assert all(-6 < r < 0 for values in shown["update_ratios"].values() for r in values)
    one_line_error(run("show", "training", tmp_path / "plain", "--json"), "no diagnostics.jsonl", "--diagnostics")
    one_line_error(run("plot", tmp_path / "watched", "-o", tmp_path / "watched" / "diagnostics.jsonl"), "belongs to the training run")
    if pytest.importorskip("matplotlib", reason="pictures need the optional plot extra"):
        out = tmp_path / "training.png"
        assert run("show", "training", tmp_path / "watched", "-o", out, "--dpi", 20).exit_code == 0
        assert png_size(out) == (14 * 20, 10 * 20)


def test_plot_opens_a_compare_folder_and_draws_tokens_and_bits(tmp_path, toy_file):
    for name in ("bigram", "mlp"):
        args = ["train", toy_file, "--type", name, "--max-steps", 20, "--eval-interval", 50, "--out", tmp_path / "cmp" / name]
        assert run(*args).exit_code == 0
    result = run("plot", tmp_path / "cmp", "--x", "tokens", "--y", "bits", "-o", tmp_path / "c.png", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [Path(r["run"]).name for r in shown["runs"]] == ["bigram", "mlp"]
    for r in shown["runs"]:
        rows = [json.loads(line) for line in (Path(r["run"]) / "metrics.jsonl").read_text().splitlines()]
        curve = shown["curves"][r["run"]]
        assert curve["x"] == [next(row["tokens"] for row in rows if row["step"] == 20 and "tokens" in row)]  # one evaluation
        assert curve["x"][0] > 20  # more than a token per step
        assert curve["val"][0] == pytest.approx(rows[-1]["val_loss"] / math.log(2), rel=1e-9)  # characters: nats / ln 2
    if pytest.importorskip("matplotlib", reason="plot needs the optional plot extra"):
        assert png_size(tmp_path / "c.png") == (800, 500)
    timed = json.loads(run("plot", tmp_path / "cmp" / "mlp", "--x", "time", "-o", tmp_path / "t.png", "--json").stdout)
    rows = [json.loads(line) for line in (tmp_path / "cmp" / "mlp" / "metrics.jsonl").read_text().splitlines()]
    assert list(timed["curves"].values())[0]["x"] == [r["wall"] for r in rows if "val_loss" in r]
    one_line_error(run("plot", tmp_path / "cmp", "--x", "hours", "-o", tmp_path / "d.png"), "--x hours", "steps, time, tokens")
