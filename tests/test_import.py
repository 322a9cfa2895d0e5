"""Importing tiktoken rank files and Hugging Face tokenizer.json files: same merges back from our own
exports, and exactly the other library's ids on generated text."""

import base64
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import tokenizer
from tokenizer.cli import app
from tokenizer.export import export
from tokenizer.imports import import_huggingface, import_tiktoken

tiktoken = pytest.importorskip("tiktoken")
hf = pytest.importorskip("tokenizers")

CORPUS = ("The quick brown fox jumps over the lazy dog. " * 3 + "Ünïcödé and 한국어 text, numbers 12345 and 678.\n"
          + "def f(x):\n    return x ** 2  # it's code\n") * 20
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60) | st.sampled_from(
    ["", "The lazy dog's 12345!", "  \n\n\t x", "한국어 text", "def f(x):\n    return x"])


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    root = tmp_path_factory.mktemp("imp")
    (root / "c.txt").write_text(CORPUS)
    return tokenizer.train(root / "c.txt", vocab_size=500, special=["<|endoftext|>"]), root


def test_our_exports_import_back_to_the_same_merges(ours, monkeypatch):
    tok, root = ours
    monkeypatch.chdir(root)
    export(tok, "tiktoken", root / "t.tiktoken")
    export(tok, "huggingface", root / "t.hf.json")
    eot = tok.special["<|endoftext|>"]
    a = import_tiktoken(root / "t.tiktoken", "gpt4", [f"<|endoftext|>={eot}"])
    b = import_huggingface(root / "t.hf.json")
    for imported in (a, b):
        assert imported.merges == tok.merges and imported.special == tok.special and imported.pattern == "gpt4"
        assert imported.ids is None  # our own ids are already bytes-then-merges
    result = CliRunner().invoke(app, ["import", "--huggingface", "t.hf.json", "-o", "back.json", "--json"])
    assert result.exit_code == 0, result.output
    assert tokenizer.load(root / "back.json").merges == tok.merges


@pytest.fixture(scope="module")
def permuted(ours):
    """A rank file whose single bytes have shuffled ranks 0-255 (as GPT-2's and cl100k's do), loaded in tiktoken."""
    tok, root = ours
    order = list(range(256))
    random.Random(7).shuffle(order)
    ranks = {bytes([b]): order[b] for b in range(256)}
    for i in range(len(tok.merges)):
        ranks[tok.vocab[256 + i]] = 256 + i
    path = root / "permuted.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda x: x[1])))
    enc = tiktoken.Encoding("permuted", pat_str=tok.regex, mergeable_ranks=ranks, special_tokens={})
    result = CliRunner().invoke(app, ["import", "--tiktoken", str(path), "--pattern", "gpt4", "-o", str(root / "p.json")])
    assert result.exit_code == 0, result.output
    return tokenizer.load(root / "p.json"), enc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_permuted_rank_file_encodes_to_tiktokens_ids(permuted, text):
    ours, enc = permuted
    ids = ours.encode(text)
    assert ids == enc.encode(text)
    assert ours.decode(ids) == text


def test_permuted_import_really_permutes(permuted):
    ours, enc = permuted
    assert ours.ids is not None and ours.encode("a") == enc.encode("a") != [ord("a")]


@pytest.fixture(scope="module")
def hf_trained(ours):
    """A byte-level BPE trained by the tokenizers library, its special token first (id 0), as it does."""
    _, root = ours
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=450, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    t.train_from_iterator([CORPUS], trainer)
    path = root / "hf-trained.json"
    t.save(str(path))
    return import_huggingface(path), t


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
@example(text="a <|endoftext|>b")
def test_a_tokenizers_trained_bpe_imports_and_gives_its_ids(hf_trained, text):
    """Hugging Face always matches its added tokens in the text, so ours is asked to as well
    (hypothesis also draws the string constants of this file, "<|endoftext|>" among them)."""
    ours, t = hf_trained
    ids = ours.encode(text, allowed_special="all")
    assert ids == t.encode(text).ids
    assert ours.decode(ids) == text


def test_hf_special_token_keeps_its_id(hf_trained):
    ours, t = hf_trained
    assert ours.special == {"<|endoftext|>": t.token_to_id("<|endoftext|>")} == {"<|endoftext|>": 0}
    assert ours.encode("a<|endoftext|>b", allowed_special="all") == t.encode("a<|endoftext|>b").ids


def test_named_import_without_tiktoken_cache_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    result = CliRunner().invoke(app, ["import", "no_such_encoding", "-o", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no_such_encoding" in result.stderr and "--tiktoken FILE" in result.stderr
    assert not (tmp_path / "x.json").exists()
