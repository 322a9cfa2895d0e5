"""Byte-level BPE: golden cases, fast == reference, round trips, special tokens, files."""

import random
import sys

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenizer
from tests.bpe_reference import reference_encode, reference_train
from tokenizer import BPETokenizer, TokenizerError
from tokenizer.patterns import GPT2, GPT4, compile_split
from tokenizer.train import count_chunks, learn_merges

EDGE = ["", "a", "hello world", "🙂👍🏽 family: 👨‍👩‍👧", "한국어 텍스트", "e\u0301 café", "line\r\nnext\n\n\n", "\x00\x1b\t\x7f",
        "   leading and trailing   ", "numbers 1234567 3.14", "I'm you'LL they've", "<|endoftext|>"]


def test_wikipedia_example_aaabdaaabac():
    """minbpe's golden case, with the merges of the Wikipedia BPE article: aa -> Z, ab -> Y, ZY -> X.

    After the first merge "Za" and "ab" both occur twice; the tie goes to the smaller pair of ids, ab."""
    tok = tokenizer.train(["aaabdaaabac"], vocab_size=256 + 3, pattern="none", min_frequency=1)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]  # XdXac, as in the article
    assert tok.decode(tok.encode("aaabdaaabac")) == "aaabdaaabac"


def test_wikipedia_example_matches_the_reference():
    assert reference_train("aaabdaaabac", 3, None) == [(97, 97), (97, 98), (256, 257)]


@pytest.mark.parametrize(
    "pattern, text, chunks",
    [
        (GPT2, "Hello world's  end", ["Hello", " world", "'s", " ", " end"]),
        (GPT2, "I'll 12345 ok", ["I", "'ll", " 12345", " ok"]),
        (GPT2, "a\n\nb", ["a", "\n", "\n", "b"]),
        (GPT4, "I'LL do 12345 it", ["I", "'LL", " do", " ", "123", "45", " it"]),
        (GPT4, "hi!!! there\n\n  x", ["hi", "!!!", " there", "\n\n", " ", " x"]),
        (GPT4, "tabs\t\tend   ", ["tabs", "\t", "\tend", "   "]),  # one non-letter may lead a word
        (GPT4, "a\r\nb", ["a", "\r\n", "b"]),
    ],
)
def test_split_patterns(pattern, text, chunks):
    assert compile_split(pattern)(text) == chunks


texts = st.text(alphabet=st.sampled_from("aab cde\n'1é🙂"), max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, n_merges=st.integers(0, 40), pattern=st.sampled_from(["gpt4", "gpt2", "none"]),
       min_frequency=st.integers(1, 3))
def test_fast_trainer_equals_reference(text, n_merges, pattern, min_frequency):
    regex_str = tokenizer.patterns.PATTERNS[pattern]
    fast = learn_merges(count_chunks([text], regex_str), n_merges, min_frequency)
    assert fast == reference_train(text, n_merges, regex_str, min_frequency)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("a"), min_size=1, max_size=60), n_merges=st.integers(1, 8))
def test_fast_trainer_equals_reference_on_repeated_characters(text, n_merges):
    """Runs like 'aaaaaa' are where overlapping pairs are easy to miscount."""
    for pattern in (None, GPT4):
        assert learn_merges(count_chunks([text + " " + text[:-1]], pattern), n_merges) == \
            reference_train(text + " " + text[:-1], n_merges, pattern)


@settings(max_examples=300, deadline=None)
@given(train_text=texts, text=st.text(max_size=100), pattern=st.sampled_from(["gpt4", "gpt2", "none"]))
def test_fast_encoder_equals_reference_and_round_trips(train_text, text, pattern):
    tok = tokenizer.train([train_text], vocab_size=256 + 30, pattern=pattern, min_frequency=1) if train_text.strip() \
        else BPETokenizer([], pattern)
    ids = tok.encode(text)
    assert ids == reference_encode(text, tok.merges, tok.regex)
    assert tok.decode(ids) == text


def test_streaming_count_equals_whole_text_count():
    text = ("Hello there.\n  indented line\nnext   \n\nLast 123456 words's\n" * 50)
    blocks = [text[i : i + 37] for i in range(0, len(text), 37)]  # cuts in awkward places
    for pattern in (GPT2, GPT4):
        assert count_chunks(blocks, pattern) == count_chunks([text], pattern)


@pytest.fixture(scope="module")
def tok():
    corpus = "\n".join(EDGE) * 5 + " The quick brown fox jumps over the lazy dog. " * 20
    return tokenizer.train([corpus], vocab_size=400, special=["<|endoftext|>", "<|pad|>"], min_frequency=1)


@pytest.mark.parametrize("text", EDGE[:-1])
def test_round_trip_on_edge_strings(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode_ordinary(text)) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_round_trip_on_arbitrary_text(tok, text):
    assert tok.decode(tok.encode_ordinary(text)) == text


def test_lone_surrogates_become_replacement_characters(tok):
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"


def test_special_tokens_follow_the_merges_and_need_allowing(tok):
    n = 256 + len(tok.merges)
    assert tok.special == {"<|endoftext|>": n, "<|pad|>": n + 1} and tok.vocab_size == n + 2
    assert tok.eot_id == n
    with pytest.raises(TokenizerError, match="contains the special token '<\\|endoftext\\|>'"):
        tok.encode("hi<|endoftext|>")
    assert tok.encode("hi<|endoftext|>there", allowed_special="all") == tok.encode("hi") + [n] + tok.encode("there")
    assert tok.encode("<|pad|>", allowed_special={"<|pad|>"}) == [n + 1]
    plain = tok.encode_ordinary("<|endoftext|>")
    assert n not in plain and tok.decode(plain) == "<|endoftext|>"
    assert tok.decode([n]) == "<|endoftext|>"


def test_decoding_a_split_character(tok):
    ids = tok.encode_ordinary("🙂")
    first = list("🙂".encode())[:1]
    assert tok.decode(first) == "\ufffd"
    with pytest.raises(TokenizerError, match="invalid UTF-8"):
        tok.decode(first, strict=True)
    with pytest.raises(TokenizerError, match="token id 999 is outside the vocabulary"):
        tok.decode(ids + [999])


def test_save_and_load_round_trip(tok, tmp_path):
    path = tok.save(tmp_path / "tok.json")
    loaded = tokenizer.load(path)
    assert loaded.merges == tok.merges and loaded.special == tok.special and loaded.pattern == tok.pattern
    assert loaded.encode("The quick brown fox") == tok.encode("The quick brown fox")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "no such tokenizer file"),
        ('{"format": "makemore-bpe", "version": 1, "merg', "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"type": "bpe", "format": "makemore-bpe", "version": 7, "pattern": "gpt4", "merges": []}', "format version 7; this tokenizer reads versions 1 and 2"),
        ('{"type": "bpe", "format": "makemore-bpe", "version": 1, "pattern": "gpt4", "merges": [[300, 1]]}', "merge 0 is [300, 1]"),
        ('{"type": "gpt", "format": "makemore-bpe"}', "unknown tokenizer type 'gpt'"),
    ],
)
def test_bad_tokenizer_files(tmp_path, content, fragment):
    path = tmp_path / "t.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenizerError, match="t.json") as e:
        tokenizer.load(path)
    assert fragment in str(e.value)


def test_training_input_errors(tmp_path):
    with pytest.raises(TokenizerError, match="empty corpus"):
        tokenizer.train([" \n\t "], vocab_size=300)
    with pytest.raises(TokenizerError, match="at least 256"):
        tokenizer.train(["abc"], vocab_size=256, special=["<|endoftext|>"])
    with pytest.raises(TokenizerError, match="absurdly large"):
        tokenizer.train(["abc"], vocab_size=10**9)
    with pytest.raises(TokenizerError, match="unknown pattern 'gpt5'"):
        tokenizer.train(["abc"], vocab_size=300, pattern="gpt5")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello world\n" * 100 + b"\xff rest")
    with pytest.raises(TokenizerError, match="invalid byte 0xff at byte offset 1200"):
        tokenizer.train(bad, vocab_size=300)


def test_training_stops_below_min_frequency():
    tok = tokenizer.train(["abcd abcd"], vocab_size=1000, pattern="none", min_frequency=2)
    assert tok.merges == [(97, 98), (99, 100), (256, 257)]  # "ab", "cd", "abcd"; nothing else occurs twice


def test_counting_a_file_in_parallel_gives_the_same_counts(tmp_path):
    from tokenizer.train import count_file

    rng = random.Random(3)
    words = ["alpha", "Beta", "ça", "δέλτα", "x1", "  ", "\n", "\nword", "don't", "🙂", "42"]
    text = "".join(rng.choice(words) + rng.choice([" ", "", "\n"]) for _ in range(20000))
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    for pattern in (tokenizer.patterns.GPT4, tokenizer.patterns.GPT2):
        single = count_file(path, pattern, workers=1)
        assert count_file(path, pattern, workers=3) == single == count_chunks([text], pattern)


ASCII_PIECES = ["'s", "'LL", "'ve", "'x", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x00", "\x7f",
                "a", "Zq", "7", "1234", "!", "?!", "...", "_", "(", " x", "don't", "x\n", " \n\n", "$"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the ASCII twins need re's possessive quantifiers (3.11)")
@pytest.mark.parametrize("pattern", [GPT2, GPT4])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.one_of(st.sampled_from(ASCII_PIECES), st.characters(max_codepoint=127)), max_size=40))
def test_ascii_twin_splits_as_the_pattern(pattern, pieces):
    from tokenizer.patterns import ASCII_TWINS

    text = "".join(pieces)
    assert pattern in ASCII_TWINS  # the fast path is the one tested
    assert compile_split(pattern)(text) == regex.findall(pattern, text)
    assert compile_split(pattern)(text + "é") == regex.findall(pattern, text + "é")  # not ASCII: regex itself


def test_a_special_token_on_a_taken_id_is_named_with_its_id():
    with pytest.raises(TokenizerError, match=r"special token '<\|b\|>' has id 300, which another token already has"):
        BPETokenizer([], "gpt4", {"<|a|>": 300, "<|b|>": 300})
    with pytest.raises(TokenizerError, match=r"special token '<\|a\|>' has id 65, which another token already has"):
        BPETokenizer([], "gpt4", {"<|a|>": 65})  # the byte 'A'
    assert BPETokenizer([], "gpt4", {"<|a|>": 256, "<|b|>": 257}).special == {"<|a|>": 256, "<|b|>": 257}
