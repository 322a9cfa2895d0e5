"""Text mode: running text as one token stream, for every model type."""

import pytest
import torch

from makemore import data, models
from makemore.errors import MakemoreError
from makemore.sample import Sampling, stream_text
from makemore.train import TrainConfig, evaluate, resolve, train
from tests.conftest import toy_items, toy_prose
from tokenizer import CharTokenizer

TYPES = list(models.MODELS)
SMALL = {"transformer": {"n_layer": 2, "n_embd": 32}}


def test_auto_mode_picks_lines_for_names_and_text_for_prose(tmp_path):
    names = data.read_source(None).text
    assert data.detect_mode(names)[0] == "lines"
    assert data.detect_mode("\n".join(toy_items(500)))[0] == "lines"
    mode, why = data.detect_mode(toy_prose())
    assert mode == "text" and why
    code = "def f(x):\n    return x + 1\n\n\nclass A:\n    pass\n" * 30
    assert data.detect_mode(code)[0] == "text"


def test_text_splits_are_contiguous_disjoint_and_cut_at_line_ends():
    text = toy_prose(400)
    parts = data.split_text(text)
    assert parts["train"] + parts["val"] + parts["test"] == text
    assert parts["train"].endswith("\n") and parts["val"].endswith("\n")
    assert 0.85 < len(parts["train"]) / len(text) < 0.91 and len(parts["val"]) > 0 and len(parts["test"]) > 0


def test_training_windows_never_reach_into_val_or_test(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text(toy_prose(400))
    prep = data.prepare(path, mode="text", block_size=16)
    train_split = prep.splits["train"]
    gen = torch.Generator().manual_seed(0)
    n = len(train_split.tokens)
    for _ in range(50):
        x, y, _ = train_split.batch(64, gen)
        assert x.shape == y.shape == (64, 16) and torch.equal(x[:, 1:], y[:, :-1])
    # every window is a slice of the training tokens alone: the last one ends at the last training token
    assert train_split._windows.shape[0] == n - 16 and torch.equal(train_split._windows[-1], train_split.tokens[-17:])
    tok = prep.tokenizer
    assert tok.decode(train_split.tokens.tolist()) == data.split_text(path.read_text())["train"]


def test_eval_windows_predict_every_token_but_the_first_exactly_once():
    tokens = torch.arange(1, 38)
    stream = data.Stream(tokens, block_size=8, n_chars=36)
    targets = torch.cat([b.y.flatten() for b in stream.eval_batches(batch_size=2)])
    assert targets.tolist() == list(range(2, 38))
    inputs = torch.cat([b.x.flatten() for b in stream.eval_batches(batch_size=3)])
    assert inputs.tolist() == list(range(1, 37)) and len(stream) == 5


def test_evaluation_is_deterministic(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text(toy_prose(200))
    prep = data.prepare(path, mode="text", block_size=16)
    model = models.build("gru", models.make_config("gru", prep.tokenizer.vocab_size, 16, "text"))
    assert evaluate(model, prep.splits["val"]) == evaluate(model, prep.splits["val"])


@pytest.mark.slow  # every type trains for seconds: the fast tier (-m 'not slow') leaves it out
@pytest.mark.parametrize("model_type", TYPES)
def test_every_type_learns_and_samples_running_text(model_type, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text(toy_prose(300))
    prep = data.prepare(path, mode="text", block_size=16)
    assert prep.kind == "text"
    torch.manual_seed(0)
    config = models.make_config(model_type, prep.tokenizer.vocab_size, 16, "text", **SMALL.get(model_type, {}))
    model = models.build(model_type, config)
    before, _ = evaluate(model, prep.splits["val"])
    cfg = resolve(TrainConfig(max_steps=200, eval_interval=200, batch_size=16, warmup_steps=20), model, data.Text)
    train(model, prep.splits["train"], prep.splits["val"], cfg)
    after, _ = evaluate(model, prep.splits["val"])
    assert before > 2.5 and after < 2.2, f"{model_type}: {before:.3f} -> {after:.3f}"  # uniform over 21 chars is 3.04
    ids = list(stream_text(model, prep.tokenizer, prep.tokenizer.encode("\n"), 40, Sampling(), seed=1))
    assert len(ids) == 40 and set(prep.tokenizer.decode(ids)) <= set(path.read_text())


def test_lines_mode_item_longer_than_block_size_is_named(tmp_path):
    path = tmp_path / "n.txt"
    path.write_text("\n".join(["ab"] * 20 + ["abcdefgh"] + ["ab"] * 5))
    with pytest.raises(MakemoreError, match="line 21 is 8 tokens, longer than `block_size` 5"):
        data.prepare(path, mode="lines", block_size=5)
    assert data.prepare(path, mode="lines", block_size=12).block_size == 12


def test_char_vocabulary_covers_val_and_test(tmp_path):
    text = "a b c d e f g.\n" * 200 + "z!\n" * 3  # z and ! only occur in the test slice
    path = tmp_path / "t.txt"
    path.write_text(text)
    prep = data.prepare(path, mode="text", block_size=8)
    assert "z" in prep.tokenizer.chars and len(prep.splits["test"].tokens) > 0
    assert isinstance(prep.tokenizer, CharTokenizer)


def test_text_mode_through_the_cli(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from makemore.cli import app

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text(toy_prose(300))
    result = runner.invoke(app, ["train", "p.txt", "--type", "gru", "--max-steps", "60", "--eval-interval", "30",
                                 "--block-size", "32", "--out", "run", "--json"])
    assert result.exit_code == 0, result.output
    assert "text mode (" in result.stderr  # auto mode says what it chose and why
    info = json.loads(runner.invoke(app, ["info", "run", "--json"]).stdout)
    assert info["training"]["data"]["mode"] == "text" and info["config"]["block_size"] == 32
    out = json.loads(runner.invoke(app, ["sample", "-c", "run", "--max-new-tokens", "50", "--seed", "1", "--json"]).stdout)
    assert len(out) == 1 and out[0]["tokens"] == 50 and out[0]["prompt"] == ""
    streamed = runner.invoke(app, ["sample", "-c", "run", "--max-new-tokens", "50", "--seed", "1", "--prompt", "Kari"])
    plain = runner.invoke(app, ["sample", "-c", "run", "--max-new-tokens", "50", "--seed", "1", "--prompt", "Kari", "--no-stream"])
    assert streamed.exit_code == 0 and streamed.stdout == plain.stdout and streamed.stdout.startswith("Kari")
    for bad, fragment in ((["--novel-only"], "--novel-only: a lines-mode option"), (["-n", "0"], "-n 0: text mode makes 1 to")):
        refused = runner.invoke(app, ["sample", "-c", "run", *bad])
        assert refused.exit_code == 2 and fragment in refused.stderr
    (tmp_path / "small.txt").write_text("Kari mo tu.\n")  # a tiny file evaluates too
    ev = json.loads(runner.invoke(app, ["eval", "small.txt", "-c", "run", "--json"]).stdout)
    assert ev["mode"] == "text" and ev["tokens"] == 11 and ev["characters"] == 11 and ev["bits_per_char"] > 0
    sc = json.loads(runner.invoke(app, ["score", "-c", "run", "Kari mo tu.\n", "--json"]).stdout)
    assert sc[0]["logprob"] == pytest.approx(-ev["loss"] * ev["tokens"], rel=1e-4)
    cmp = runner.invoke(app, ["compare", "p.txt", "--types", "bigram,gru", "--steps", "30", "--eval-interval", "30",
                              "--block-size", "32", "--json"])
    assert cmp.exit_code == 0, cmp.output
    rows = json.loads(cmp.stdout)
    assert {r["type"] for r in rows} == {"bigram", "gru"} and all(0 < r["test_bits_per_char"] < 6 for r in rows)
