"""Text mode's token cache (makemore/tokens.py): the streamed, parallel, memory-mapped encoding gives
exactly the splits and ids of encoding the text in memory; it is found again, never stale, never
half-written; evaluations over it have a bounded cost."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from makemore import data, tokens
from makemore.errors import MakemoreError
from makemore.train import evaluate
from tokenizer.train import train as train_bpe

PIECES = ["the", "and", "é", "é", "한국어", "🙂", "👍🏽", "Zoë", "x", "12345", "don't", ",", "!", "?", "'s"]


def mixed_text(n_lines: int, seed: int) -> str:
    """Lines of words, multi-byte characters, combining marks, emoji, CRLF, runs of spaces and blank
    lines: what a block's cut must not split or change."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(PIECES) for _ in range(rng.randint(0, 9))]
        line = rng.choice([" ", "  ", " ", "\t"]).join(words) + rng.choice(["", "", " ", "  "])
        lines.append(line + rng.choice(["\n", "\n", "\r\n", "\n\n"]))
    return "".join(lines)


def reference(text: str, tok) -> dict[str, data.Stream]:
    """Each split of the text in memory, encoded as one string: what the cache must give."""
    return {k: data.encode_stream(v, tok, 16) for k, v in data.split_text(data.normalize(text)).items()}


def cached(path: Path, tok, folder: Path, block_bytes: int) -> data.Text:
    src = data.read_source(path)
    src._cache = tokens.Cache(path, str(path), folder=folder, block_bytes=block_bytes, normalize=data.normalize)
    return data.Text.build(src, 1, tok, "test", 16)


@pytest.mark.parametrize("tokenizer", ["char", "gpt2", "gpt4"])
@pytest.mark.parametrize("block_bytes", [97, 1000])
def test_the_cache_gives_exactly_the_in_memory_splits_and_ids(tmp_path, tokenizer, block_bytes):
    text = mixed_text(600, seed=block_bytes)
    path = tmp_path / "mixed.txt"
    path.write_bytes(text.encode("utf-8"))
    tok = None if tokenizer == "char" else train_bpe([data.normalize(text)], 300, tokenizer)
    built = cached(path, tok, tmp_path / "cache", block_bytes)
    counts = built.splits["train"]
    assert len(tokens.Cache(path, "x", folder=tmp_path / "cache", block_bytes=block_bytes).counts().blocks) >= 8  # many cuts
    for k, ref in reference(text, built.tokenizer).items():
        got = built.splits[k]
        assert torch.equal(got.tokens.long(), ref.tokens), k
        assert (got.n_chars, got.first_chars) == (ref.n_chars, ref.first_chars), k
        assert built.sizes[k] == ref.n_chars + ref.first_chars
    assert counts.tokens.dtype == torch.uint16


def test_a_tokenizer_that_cannot_be_cut_is_encoded_a_split_at_a_time(tmp_path):
    text = mixed_text(60, seed=3)
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    tok = train_bpe([data.normalize(text)], 280, "none")
    built = cached(path, tok, tmp_path / "cache", 97)
    for k, ref in reference(text, tok).items():
        assert torch.equal(built.splits[k].tokens.long(), ref.tokens), k


def test_the_second_run_reads_the_cache_and_a_changed_file_is_encoded_again(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    text = mixed_text(300, seed=5)
    path.write_bytes(text.encode())
    first = cached(path, None, tmp_path / "cache", 500)
    calls = []
    monkeypatch.setattr(tokens, "encode_block", lambda job: calls.append(job) or b"")
    monkeypatch.setattr(tokens, "count_block", lambda job: calls.append(job) or (None, "counted"))
    monkeypatch.setattr(tokens, "scan", lambda *a: calls.append(a))  # the hash is remembered with the file's stat
    again = cached(path, first.tokenizer, tmp_path / "cache", 500)
    assert calls == [] and torch.equal(again.splits["train"].tokens, first.splits["train"].tokens)
    monkeypatch.undo()
    changed = text.replace("the", "tha", 1)  # the same length, one byte other
    path.write_bytes(changed.encode())
    after = cached(path, first.tokenizer, tmp_path / "cache", 500)
    for k, ref in reference(changed, first.tokenizer).items():
        assert torch.equal(after.splits[k].tokens.long(), ref.tokens), k
    assert not torch.equal(after.splits["train"].tokens, first.splits["train"].tokens)
    assert len(list((tmp_path / "cache").rglob("*.tokens.json"))) == 2


KILLED = """
import sys, time
from makemore import data, tokens
def slow(job, encode=tokens.encode_block):
    time.sleep(0.05)
    return encode(job)
tokens.encode_block = slow
cache = tokens.Cache(sys.argv[1], "t", folder=sys.argv[2], block_bytes=200, normalize=data.normalize)
from tokenizer import CharTokenizer
cache.entry(CharTokenizer(cache.counts().charset))
"""


@pytest.mark.slow  # a subprocess
def test_an_encode_killed_midway_is_never_taken_as_complete(tmp_path):
    path = tmp_path / "t.txt"
    text = mixed_text(2000, seed=7)
    path.write_bytes(text.encode())
    folder = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(path), str(folder)], env=os.environ | {"PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 60

    def writing():  # the token file being written (not a record's atomic write)
        return [p for p in folder.rglob(".*.tmp") if ".json." not in p.name]

    while not writing() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert writing(), "the encode never started writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(folder.rglob("*.tokens.json"))  # nothing that says complete
    built = cached(path, None, folder, 200)  # a new run encodes it again, whole
    for k, ref in reference(text, built.tokenizer).items():
        assert torch.equal(built.splits[k].tokens.long(), ref.tokens), k
    assert not writing()  # and removed the dead process's temporary file


def test_a_bad_byte_in_a_later_block_is_named_by_its_line_and_offset_in_the_file(tmp_path):
    path = tmp_path / "t.txt"
    head = b"".join(b"line%d\n" % i for i in range(1, 200))
    path.write_bytes(head + b"bad \xff byte\n" + b"more\n" * 10)
    with pytest.raises(MakemoreError, match=rf"line 200, byte offset {len(head) + 4}: 0xff"):
        cached(path, None, tmp_path / "cache", 100)


class Counting(torch.nn.Module):
    """A model that predicts uniformly and counts the windows it is shown."""

    packs, onednn = False, False

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.rows = vocab, 0
        self.config = SimpleNamespace(vocab_size=vocab)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.rows += x.shape[0]
        return torch.zeros(*x.shape, self.vocab) + self.w


def test_evaluation_measures_a_fixed_number_of_windows_spread_over_the_split():
    stream = data.Stream(torch.arange(20_001) % 50, block_size=10, n_chars=20_000)
    model = Counting(50)
    loss, n = evaluate(model, stream, 37)
    assert model.rows == 37 and n == 370 and stream.covered(37) == 37
    starts = [int(b.x[i, 0]) for b in stream.eval_batches(37) for i in range(b.x.shape[0])]
    assert starts == [k * 2_000 // 37 * 10 % 50 for k in range(37)]  # spread evenly, the same every time
    model.rows = 0
    evaluate(model, stream, None)
    assert model.rows == len(stream) == 2_000
