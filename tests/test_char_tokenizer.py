import pytest

import tokenizer
from tokenizer import CharTokenizer, TokenizerError

EDGE = ["", "a", "hello world", "🙂👍🏽", "한국어", "e\u0301", "line\r\nnext", "\x00\x1b\t", "ﬁ", "a" * 100]


@pytest.mark.parametrize("text", EDGE)
def test_round_trip_on_edge_strings(text):
    tok = CharTokenizer.from_items(EDGE)
    ids = tok.encode(text)
    assert len(ids) == len(text) and 0 not in ids
    assert tok.decode(ids) == text
    assert tokenizer.from_dict(tok.to_dict()).encode(text) == ids


def test_ids_are_sorted_characters_after_the_boundary():
    tok = CharTokenizer.from_items(["cab", "b"])
    assert tok.vocab_size == 4 and tok.eot_id == 0
    assert tok.encode("abc") == [1, 2, 3]
    assert tok.decode([0, 3, 0]) == "c"


def test_unknown_character_and_id_are_named():
    tok = CharTokenizer.from_items(["abc"])
    with pytest.raises(TokenizerError, match="'z' is not in the tokenizer's vocabulary"):
        tok.encode("az")
    with pytest.raises(TokenizerError, match="token id 9 is outside"):
        tok.decode([1, 9])
