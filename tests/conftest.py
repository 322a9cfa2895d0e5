"""Shared fixtures: small data made in the test, never ../shared (a newcomer's clone has none)."""

from __future__ import annotations

import json
import random
import struct

import pytest
import torch
import zlib
from hypothesis import settings

from makemore import threads

torch.set_num_threads(2)
settings.register_profile("seeded", derandomize=True)  # hypothesis draws the same examples on every run
settings.load_profile("seeded")


@pytest.fixture(autouse=True, scope="session")
def token_cache(tmp_path_factory):
    """Text mode's token cache (`makemore.tokens`) in a folder of the test session's, never the user's
    (subprocesses inherit it through the environment)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MAKEMORE_CACHE", str(tmp_path_factory.mktemp("token-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def threads_as_they_were():
    """torch's thread count and the decoding tuner, as before the test: a command run in the test (its
    decoding tunes the count) must not change the next test's."""
    before = torch.get_num_threads(), threads.decoding
    yield
    torch.set_num_threads(before[0])
    threads.decoding = before[1]


@pytest.fixture(autouse=True)
def seeded_rngs(request):
    """Every test starts from seeded global RNGs (torch's and Python's), derived from its name; the seed is
    printed, so a failing test's report shows it (captured stdout) and a rerun reproduces it."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    random.seed(seed)
    print(f"test seed {seed} (torch.manual_seed and random.seed)")
    return seed

SYLLABLES = ["ka", "ri", "mo", "tu", "se"]


def toy_items(n: int = 400, seed: int = 0) -> list[str]:
    """Words of 1-4 syllables: after a consonant the vowel is certain, so there is much to learn."""
    rng = random.Random(seed)
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def edit_safetensors(data: bytes, edit_header=None, edit_body=None) -> bytes:
    """The bytes of a safetensors file with its JSON header changed in place by `edit_header(header)`
    and its tensor bytes replaced by `edit_body(header, body)`: damaged or older checkpoints, made here."""
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8 : 8 + n]), data[8 + n :]
    if edit_header:
        edit_header(header)
    if edit_body:
        body = edit_body(header, body)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def set_meta(key, value):
    """An `edit_header` that sets one metadata entry."""
    return lambda h: h["__metadata__"].__setitem__(key, value)


@pytest.fixture
def toy_file(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text("\n".join(toy_items()) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so default outputs (checkpoints/) land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def toy_prose(n_lines: int = 300, seed: int = 0) -> str:
    """Running text: sentences of toy words, with commas, full stops and paragraph breaks."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        words = [" ".join(toy_items(1, rng.randrange(10**6))) for _ in range(rng.randint(4, 9))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", ",", ";", "!"]))
        if i % 7 == 6:
            lines.append("")
    return "\n".join(lines) + "\n"


@pytest.fixture
def prose_file(tmp_path):
    path = tmp_path / "prose.txt"
    path.write_text(toy_prose(), encoding="utf-8")
    return path
