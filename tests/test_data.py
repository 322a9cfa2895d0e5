import random

import pytest
import torch

from tests.conftest import toy_items

from makemore import data
from makemore.errors import MakemoreError
from tokenizer import CharTokenizer


def write(tmp_path, content: bytes):
    p = tmp_path / "d.txt"
    p.write_bytes(content)
    return p


def test_lines_are_stripped_blank_lines_dropped_and_nfc_applied(tmp_path):
    lines = [f"item{i}" for i in range(10)]
    raw = ("\ufeff" + "\r\n".join(lines[:5]) + "\r\n\r\n  \n" + "\n".join(lines[5:]) + "\ne\u0301\n").encode()
    items, name, sha = data.read_items(write(tmp_path, raw))
    assert items == lines + ["\u00e9"]  # CRLF gone, blanks gone, BOM gone, e + combining acute -> é
    assert len(sha) == 64 and name.endswith("d.txt")


def test_case_and_inner_spaces_are_kept(tmp_path):
    items, _, _ = data.read_items(write(tmp_path, "\n".join(["Ann Lee"] * 10).encode()))
    assert items == ["Ann Lee"] * 10


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b" \n\t\n\n", "empty file"),
        (b"ab\x00cd\n" * 20, "binary file (NUL byte on line 1)"),
        (b"ok\n" * 3 + b"caf\xe9\n" + b"ok\n" * 10, "not UTF-8 text (bad byte at line 4"),
    ],
)
def test_bad_data_files_are_named_errors(tmp_path, content, message):
    with pytest.raises(MakemoreError, match="d.txt") as e:
        data.read_items(write(tmp_path, content))
    assert message in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(MakemoreError, match="no such file"):
        data.read_items(tmp_path / "nope.txt")
    with pytest.raises(MakemoreError, match="is a directory"):
        data.read_items(tmp_path)


def test_builtin_sets_load_by_name_and_a_file_of_that_name_wins(tmp_path, monkeypatch):
    items, name, _ = data.read_items(None)
    assert name == data.BUILTIN and len(items) == 32_033  # the lectures' names.txt
    assert items[:3] == ["emma", "olivia", "ava"] and all(s == s.lower() and s.strip() == s for s in items)
    assert data.read_items("names")[0] == items
    assert len(data.read_items("census")[0]) == 5163
    shakespeare = data.read_source("shakespeare")
    assert shakespeare.text.startswith("First Citizen:") and shakespeare.path == "builtin:shakespeare"
    assert data.detect_mode(shakespeare.text)[0] == "text"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shakespeare").write_text("\n".join(["kari", "moto"] * 10))
    assert data.read_items("shakespeare")[1] == "shakespeare"  # a path that exists wins over a built-in name


def test_split_is_deterministic_disjoint_and_complete():
    items = [f"w{i}" for i in range(25_000)]
    a = data.split_items(items, seed=7)
    assert a == data.split_items(items, seed=7)
    assert a != data.split_items(items, seed=8)
    assert len(a["test"]) == len(a["val"]) == 1000  # 10%, capped at 1,000
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(items)
    small = data.split_items(items[:200], seed=7)
    assert (len(small["train"]), len(small["val"]), len(small["test"])) == (160, 20, 20)


def test_items_are_encoded_between_boundaries_with_ignored_padding():
    tok = CharTokenizer.from_items(["ab", "c"])
    split = data.encode_items(["ab", "c"], tok)
    assert split.x.tolist() == [[0, 1, 2], [0, 3, 0]]
    assert split.y.tolist() == [[1, 2, 0], [3, 0, data.IGNORE]]
    assert split.n_chars == 5  # two characters + one end, one character + one end


@pytest.mark.parametrize("seed", range(5))
def test_packed_batches_hold_the_same_items_each_numbered_from_zero(seed):
    items = toy_items(60, seed)
    tok = CharTokenizer.from_items(items)
    split = data.encode_items(items, tok)
    plain = split.batch(16, torch.Generator().manual_seed(seed))
    packed = split.batch(16, torch.Generator().manual_seed(seed), pack=True)
    assert packed.x.shape[1] == split.block_size and packed.x.shape[0] < 16
    # cut the packed rows where the positions restart: the pieces are the plain batch's items
    pieces = []
    for x, y, pos in zip(packed.x.tolist(), packed.y.tolist(), packed.pos.tolist()):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for a, b in zip(starts, starts[1:]):
            if y[a] != data.IGNORE:  # not row padding
                assert pos[a:b] == list(range(b - a))
                pieces.append((x[a:b], y[a:b]))
    n = (plain.y != data.IGNORE).sum(1).tolist()
    assert sorted(pieces) == sorted((x[:k], y[:k]) for x, y, k in zip(plain.x.tolist(), plain.y.tolist(), n))
    assert int((packed.y != data.IGNORE).sum()) == sum(n)  # the same targets, so the same mean loss


def test_batches_are_seeded_and_cut_to_their_longest_item():
    tok = CharTokenizer.from_items(["a", "bbbbbbbb"])
    split = data.encode_items(["a"] * 50 + ["bbbbbbbb"], tok)
    x1, y1, _ = split.batch(4, torch.Generator().manual_seed(3))
    x2, y2, _ = split.batch(4, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape[1] == int((y1 != data.IGNORE).sum(1).max())


LINE_PIECES = ["ab", "é", "é", "한", "🙂", " ", "  ", "\t", "x y", "\u00a0", "\u2028", "z"]


@pytest.mark.parametrize("seed", range(6))
def test_lines_laid_out_by_tensors_equal_the_item_by_item_reference(tmp_path, seed):
    """`char_lines` and `Encoded.rows` (no Python object per line) give the tokenizer, the split and the rows
    that encoding item by item gives (`lines_of`, `split_items`, `encode_items`), on lines with multi-byte
    characters, combining marks, blank and space-only lines, and other Unicode spaces."""
    rng = random.Random(seed)
    text = "\n".join("".join(rng.choice(LINE_PIECES) for _ in range(rng.randint(0, 6))) for _ in range(300))
    path = tmp_path / "lines.txt"
    path.write_text(text, encoding="utf-8")
    built = data.Lines.build(data.read_source(path), seed, None, "test", None)
    items = data.lines_of(data.normalize(text))[0]
    tok = CharTokenizer.from_items(items)
    assert built.tokenizer.chars == tok.chars
    for k, part in data.split_items(items, seed).items():
        ref = data.encode_items(part, tok, built.block_size)
        got = built.splits[k]
        assert torch.equal(got.x, ref.x) and torch.equal(got.y, ref.y) and got.n_chars == ref.n_chars, k


def test_an_unknown_character_is_named_with_its_line_by_either_way(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(["abc"] * 12 + ["  ", "abq", "qqq"]) + "\n", encoding="utf-8")
    tok = CharTokenizer("abc")
    for text in (path.read_text(), path.read_text().replace("\n", "\r\r\n", 1)):  # tensors, then the plain way (a CR)
        path.write_text(text, encoding="utf-8", newline="")
        with pytest.raises(MakemoreError, match=r"line 14: character 'q' is not in the tokenizer's vocabulary"):
            data.Lines.build(data.read_source(path), 1, tok, "test", None)
