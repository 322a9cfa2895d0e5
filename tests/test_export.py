"""Exports load in the real libraries and give identical ids."""

import pytest

import tokenizer
from tokenizer.export import WHOLE_TEXT, export, onig_regex

tiktoken = pytest.importorskip("tiktoken")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = (
    "In 2008, 1,008 of 12008 were 008 and 20080 in 10 100 1000 10000 2008.\n"
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    "I'm sure they'll say 1234567 things—don't they? Ünïcödé, 한국어, 🙂🙂, tabs\t\there.\r\n"
) * 40
TEXTS = [
    "Before we proceed, hear me speak!", "they'll  say   123456789", "\n\n\nSpeak,\r\nspeak.", "🙂 한국어 Ünï",
    "November 2008, 1,008 12008 0080 2008008", "completely unseen words: xylophone zebra", "  leading spaces and trailing   ", "a<|endoftext|>b", "",
]


@pytest.fixture(scope="module", params=["gpt4", "gpt2", "none"])
def tok(request):
    return tokenizer.train([CORPUS], vocab_size=600, pattern=request.param, special=["<|endoftext|>"])


def test_tiktoken_gives_identical_ids(tok, tmp_path, monkeypatch):
    from tiktoken.load import load_tiktoken_bpe

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken caches rank files by path
    path = export(tok, "tiktoken", tmp_path / "tok.tiktoken")
    enc = tiktoken.Encoding("exported", pat_str=tok.regex or WHOLE_TEXT, mergeable_ranks=load_tiktoken_bpe(str(path)),
                            special_tokens=tok.special)
    for text in TEXTS + [CORPUS[:500]]:
        assert enc.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all"), text
        assert enc.decode(tok.encode(text, allowed_special="all")) == text


def test_onig_regex_drops_possessive_intervals_only():
    assert onig_regex(r"\p{N}{1,3}+| ?[^\s]++x{2}+") == r"\p{N}{1,3}| ?[^\s]++x{2}"


def test_huggingface_gives_identical_ids(tok, tmp_path):
    path = export(tok, "huggingface", tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(path))
    for text in TEXTS + [CORPUS[:500]]:
        ids = tok.encode(text, allowed_special="all")
        assert hf.encode(text).ids == ids, text
        assert hf.decode(ids, skip_special_tokens=False) == text
