"""The tokenizer command end to end through CliRunner."""

import json

import pytest
from typer.testing import CliRunner

import tokenizer
from tokenizer.cli import app

runner = CliRunner()
CORPUS = "the cat sat on the mat.\nthe dog sat on the log!\n" * 30


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def tok_file(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    path = tmp_path / "tok.json"
    result = run("train", corpus, "--vocab-size", "300", "--special", "<|endoftext|>", "-o", path, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["vocab_size"] == 276 and summary["merges"] == 19 and summary["special"] == {"<|endoftext|>": 275}  # every chunk fully merged: 19 merges
    return path


def test_encode_decode_round_trip(tok_file):
    ids = json.loads(run("encode", "-t", tok_file, "the cat sat", "--json").stdout)
    assert ids == tokenizer.load(tok_file).encode("the cat sat")
    assert run("decode", "-t", tok_file, *ids).stdout == "the cat sat\n"
    assert run("decode", "-t", tok_file, input=json.dumps(ids)).stdout == "the cat sat\n"


def test_special_tokens_need_allow_special(tok_file):
    result = run("encode", "-t", tok_file, "a<|endoftext|>b")
    assert result.exit_code == 2 and "--allow-special" in result.stderr
    ids = json.loads(run("encode", "-t", tok_file, "a<|endoftext|>b", "--allow-special", "--json").stdout)
    assert 275 in ids


def test_encode_a_file(tok_file, tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("the mat\n")
    assert json.loads(run("encode", "-t", tok_file, "--file", f, "--json").stdout) == tokenizer.load(tok_file).encode("the mat\n")


def test_inspect_and_stats(tok_file, tmp_path):
    result = run("inspect", "-t", tok_file, "the cat")
    assert result.exit_code == 0 and "characters/token" in result.stdout
    corpus = tmp_path / "corpus.txt"
    stats = json.loads(run("stats", "-t", tok_file, corpus, "--json").stdout)
    assert stats["bytes"] == len(CORPUS) and stats["tokens"] == len(tokenizer.load(tok_file).encode(CORPUS))
    assert stats["longest"][0]["bytes"] >= stats["longest"][-1]["bytes"]


@pytest.mark.parametrize("fmt", ["tiktoken", "huggingface"])
def test_export_writes_a_file(tok_file, tmp_path, fmt):
    result = run("export", "-t", tok_file, "--format", fmt, "-o", tmp_path / "out")
    assert result.exit_code == 0 and (tmp_path / "out").stat().st_size > 1000


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.mark.parametrize(
    "content, args, fragment",
    [
        (b"", [], "empty corpus"),
        (b"  \n \t\n", [], "empty corpus"),
        (b"ok text\n\xc3\x28 more", [], "invalid byte 0xc3 at byte offset 8"),
        (b"text " * 10, ["--vocab-size", "256", "--special", "<|endoftext|>"], "at least 256 (bytes) + 1"),
        (b"text " * 10, ["--vocab-size", "999999999"], "absurdly large"),
        (b"text " * 10, ["--pattern", "gpt9"], "unknown pattern 'gpt9'"),
    ],
)
def test_bad_training_input(tmp_path, content, args, fragment):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(content)
    one_line_error(run("train", corpus, *args, "-o", tmp_path / "t.json"), fragment)
    assert not (tmp_path / "t.json").exists()


def test_missing_corpus(tmp_path):
    one_line_error(run("train", tmp_path / "none.txt", "-o", tmp_path / "t.json"), "none.txt: no such corpus")


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "no such tokenizer file"),
        ('{"type": "bpe", "format": "makemore-bpe", "ver', "not valid JSON"),
        ('{"type": "bpe", "format": "makemore-bpe", "version": 3, "pattern": "gpt4", "merges": []}', "format version 3"),
    ],
)
def test_bad_tokenizer_files(tmp_path, content, fragment):
    path = tmp_path / "t.json"
    if content is not None:
        path.write_text(content)
    one_line_error(run("encode", "-t", path, "hi"), "t.json", fragment)


def test_bad_ids(tok_file):
    one_line_error(run("decode", "-t", tok_file, "12", "abc"), "token id 'abc' is not an integer")
    one_line_error(run("decode", "-t", tok_file, "12", "5000"), "token id 5000 is outside the vocabulary")
    one_line_error(run("export", "-t", tok_file, "--format", "sentencepiece"), "--format 'sentencepiece'")
