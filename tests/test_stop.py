"""Sampling controls: the repetition penalty on logits (the rule Hugging Face applies), its place in
the filter order, and stop sequences on streamed text (never printed, not even in part)."""

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from makemore import sample
from makemore.cli import app, unescape
from makemore.errors import MakemoreError
from makemore.sample import Ending, Piece, Request, Sampling, StopScanner, draw, filter_logits, penalize, stream_until
from tests.conftest import toy_prose
from tokenizer import CharTokenizer


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_ids():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0]])
    context = torch.tensor([[0, 1, 1, 4]])  # id 1 twice: penalised once
    out = penalize(logits, context, 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, -3.0, 0.5]]
    assert penalize(logits, context, 1.0) is logits


def test_repetition_penalty_equals_hugging_face_rule():
    transformers = pytest.importorskip("transformers", reason="the reference is Hugging Face's logits processor")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=gen)
    context = torch.randint(50, (3, 20), generator=gen)
    reference = transformers.RepetitionPenaltyLogitsProcessor(1.3)(context, logits.clone())
    assert torch.equal(penalize(logits, context, 1.3), reference)


def test_penalty_comes_before_the_temperature_and_the_filters():
    logits = torch.tensor([[3.0, 2.9, -1.0, 0.0]])
    context = torch.tensor([[0]])
    s = Sampling(temperature=0.5, top_k=1, repetition_penalty=2.0)
    out = filter_logits(logits, s, context)
    assert out[0, 1] == pytest.approx(5.8) and torch.isinf(out[0, [0, 2, 3]]).all()  # id 0 fell to 1.5 / 0.5 = 3 < 5.8
    gen = torch.Generator().manual_seed(0)
    assert draw(logits, Sampling(temperature=0), gen, context).item() == 0
    assert draw(logits, Sampling(temperature=0, repetition_penalty=2.0), gen, context).item() == 1  # greedy after the penalty


def test_a_bad_penalty_or_an_empty_stop_is_refused():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(MakemoreError, match="repetition_penalty"):
            Sampling(repetition_penalty=bad)
    with pytest.raises(MakemoreError, match="stop"):
        StopScanner(["\n\n", ""])


def test_stop_sequence_split_across_pieces_is_caught_and_never_printed():
    scan = StopScanner(["\n\n"])
    printed = [scan.feed(p) for p in ["Hel", "lo\n", "\nWorld"]]
    assert printed == ["Hel", "lo", ""] and scan.stopped == "\n\n" and scan.out == "Hello"
    scan = StopScanner(["END", "\n\n"])
    printed = [scan.feed(p) for p in ["a\n", "b", "EN", "x", "EN", "D"]]
    assert printed == ["a", "\nb", "", "ENx", "", ""] and scan.out == "a\nbENx" and scan.stopped == "END"
    scan = StopScanner(["END"])
    assert [scan.feed("aE"), scan.feed("N"), scan.flush()] == ["a", "", "EN"]  # the stream ended: what waited is text after all


@given(text=st.text(alphabet="ab\n", max_size=30), stop=st.text(alphabet="ab\n", min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 30), max_size=8))
def test_stop_scanner_output_is_the_text_before_the_stop_however_it_is_split(text, stop, cuts):
    bounds = [0, *sorted(c for c in cuts if c <= len(text)), len(text)]
    scan, printed = StopScanner([stop]), ""
    for a, b in zip(bounds, bounds[1:]):
        printed += scan.feed(text[a:b])
        assert stop not in printed and printed == text[: len(printed)]
    printed += scan.flush() if scan.stopped is None else ""
    assert printed == (text[: text.index(stop)] if stop in text else text)


def fixed_stream(monkeypatch, ids):
    """`stream_text` replaced by a model that says `ids`, whatever it is asked."""
    monkeypatch.setattr(sample, "stream_text", lambda *a, **k: iter(ids))


def test_streamed_output_holds_back_a_stop_sequence_split_across_two_tokens(monkeypatch):
    tok = CharTokenizer("ab\n")
    a, b, nl = tok.encode("a")[0], tok.encode("b")[0], tok.encode("\n")[0]
    fixed_stream(monkeypatch, [a, nl, b, nl, nl, a, a])
    events = list(stream_until(None, tok, [a], Request(stop=("\n\n",)), 10, 0))
    pieces = [e.text for e in events if isinstance(e, Piece)]
    assert pieces == ["a", "\nb"] and "".join(pieces) == "a\nb"
    end = events[-1]
    assert isinstance(end, Ending) and (end.reason, end.stop, end.text, end.tokens) == ("stop", "\n\n", "a\nb", 5)


def test_a_stream_ends_at_the_end_token_or_its_length(monkeypatch):
    tok = CharTokenizer("ab")
    fixed_stream(monkeypatch, [1, 2, 0, 1])
    assert list(stream_until(None, tok, [1], Request(), 10, 0, end_id=0))[-1] == Ending("ab", 3, "end")
    fixed_stream(monkeypatch, [1, 2, 1])
    assert list(stream_until(None, tok, [1], Request(stop=("bb",)), 3, 0))[-1] == Ending("aba", 3, "length")


def test_unescape_reads_newlines_tabs_and_backslashes():
    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb\\n") == "a\tb\\n" and unescape("ROMEO:") == "ROMEO:"


@pytest.fixture(scope="module")
def prose_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stop")
    (root / "prose.txt").write_text(toy_prose(), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(root / "prose.txt"), "--set", "n_layer=1", "--set", "n_embd=16",
                                      "--max-steps", "20", "--eval-interval", "20", "--out", str(root / "run"), "--json"])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_sample_json_says_why_each_stream_ended(prose_run):
    args = ["sample", "-c", str(prose_run), "--seed", "1", "-n", "3", "--max-new-tokens", "60", "--json"]
    plain = json.loads(CliRunner().invoke(app, args).stdout)
    assert [r["ended"] for r in plain] == ["length"] * 3 and all(r["tokens"] == 60 for r in plain)
    stopped = json.loads(CliRunner().invoke(app, [*args, "--stop", " ", "--stop", r"\n"]).stdout)
    for p, s in zip(plain, stopped):  # the same seed: the same text, cut before the first space or new line
        cut = min((p["text"].find(x) for x in " \n" if x in p["text"]), default=len(p["text"]))
        assert s["text"] == p["text"][:cut] and s["ended"] == "stop" and s["stop"] == p["text"][cut]


def test_stop_is_refused_for_a_lines_model(tmp_path):
    (tmp_path / "w.txt").write_text("\n".join(["ab", "ba", "aab", "bba"] * 5) + "\n")
    runner = CliRunner()
    assert runner.invoke(app, ["train", str(tmp_path / "w.txt"), "--type", "bigram", "--max-steps", "5", "--out",
                               str(tmp_path / "r")]).exit_code == 0
    result = runner.invoke(app, ["sample", "-c", str(tmp_path / "r"), "--stop", "a"])
    assert result.exit_code == 2 and "--stop: a text-mode option" in result.output
    rows = json.loads(runner.invoke(app, ["sample", "-c", str(tmp_path / "r"), "--json", "-n", "5",
                                          "--repetition-penalty", "1.5", "--seed", "0"]).stdout)
    assert {r["ended"] for r in rows} <= {"end", "length"}
