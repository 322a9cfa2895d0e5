"""Generation: the cached path equals the uncached reference for every type, sampling filters keep
exactly their sets, scores agree with evaluation."""

import math

import pytest
import torch

from makemore import data, models
from makemore.errors import MakemoreError
from makemore.sample import Decoder, Sampling, draw, filter_logits, novel_items, sample_items, score, stream_text
from makemore.train import evaluate
from tests.conftest import toy_items
from tests.test_models import perturbed
from tokenizer import CharTokenizer

TYPES = list(models.MODELS)
SMALL = {"transformer": {"n_layer": 2, "n_embd": 32, "dropout": 0.0}}
V, BLOCK = 11, 12


def make(model_type, mode="lines", vocab_size=V, block_size=BLOCK):
    torch.manual_seed(0)
    config = models.make_config(model_type, vocab_size, block_size, mode, **SMALL.get(model_type, {}))
    return perturbed(models.build(model_type, config)).eval()


@pytest.mark.parametrize("model_type", TYPES)
def test_cached_logits_equal_the_reference_past_the_block_size(model_type):
    model = make(model_type, "text").double()  # float64: the two paths must compute the same function, rounding aside
    seq = torch.randint(V, (3, 40), generator=torch.Generator().manual_seed(5))
    cached, plain = Decoder(model, cache=True), Decoder(model, cache=False)
    for n in range(1, 41):  # 40 ids: more than three block sizes
        a, b = cached.next_logits(seq[:, :n]), plain.next_logits(seq[:, :n])  # (3, V)
        assert torch.allclose(a, b, atol=1e-5, rtol=0), f"{model_type}: logits differ after {n} ids"


@pytest.mark.parametrize("model_type", TYPES)
def test_greedy_generation_is_the_same_with_and_without_the_cache(model_type):
    tok = CharTokenizer("abcdefghij")
    model = make(model_type, "text")
    greedy = Sampling(temperature=0)
    a = list(stream_text(model, tok, [1, 2], 30, greedy, seed=0, cache=True))
    b = list(stream_text(model, tok, [1, 2], 30, greedy, seed=0, cache=False))
    assert a == b and len(a) == 30
    items_a = sample_items(model, tok, 5, greedy, seed=0, prefix="ab", cache=True)
    items_b = sample_items(model, tok, 5, greedy, seed=0, prefix="ab", cache=False)
    assert [i.text for i in items_a] == [i.text for i in items_b]
    assert [i.logprob for i in items_a] == pytest.approx([i.logprob for i in items_b], abs=1e-4)


def test_decoding_leaves_torch_flags_as_they_were(monkeypatch):
    tok = CharTokenizer("abcdefghij")
    model = make("lstm", "text")  # a type that keeps oneDNN (the transformer never uses it)
    assert torch.backends.mkldnn.enabled
    assert len(list(stream_text(model, tok, [1], 5, Sampling(temperature=0), seed=0))) == 5
    assert torch.backends.mkldnn.enabled  # decoding turns oneDNN off for its one-position steps only
    seen = []

    def fail(idx, state):
        seen.append((idx.shape[1], torch.backends.mkldnn.enabled))
        raise RuntimeError("step failed")

    monkeypatch.setattr(model, "step", fail)
    for prompt in ([1], [1, 2]):
        with pytest.raises(RuntimeError, match="step failed"):
            Decoder(model).next_logits(torch.tensor([prompt]))
        assert torch.backends.mkldnn.enabled
    assert seen == [(1, False), (2, True)]


def test_the_context_restarts_from_half_a_block():
    model = make("transformer", "text")
    lengths = [model.context_length(n) for n in range(1, 30)]
    assert lengths[:12] == list(range(1, 13))  # up to the block size: everything
    assert lengths[12:18] == [7, 8, 9, 10, 11, 12]  # then the last half block, growing again
    assert lengths[18] == 7
    assert make("gru", "text").context_length(100) == 100  # carried state: no limit


def test_the_same_seed_gives_the_same_samples():
    tok = CharTokenizer("abcdefghij")
    model = make("mlp")
    s = Sampling(temperature=1.0, top_p=0.9)
    assert [i.text for i in sample_items(model, tok, 20, s, seed=4)] == [i.text for i in sample_items(model, tok, 20, s, seed=4)]
    assert [i.text for i in sample_items(model, tok, 20, s, seed=4)] != [i.text for i in sample_items(model, tok, 20, s, seed=5)]


PROBS = torch.tensor([0.4, 0.2, 0.15, 0.1, 0.07, 0.05, 0.02, 0.01])


@pytest.mark.parametrize(
    "sampling, support",
    [
        (Sampling(top_k=3), {0, 1, 2}),
        (Sampling(top_p=0.7), {0, 1, 2}),  # 0.4 + 0.2 < 0.7 <= 0.4 + 0.2 + 0.15
        (Sampling(top_p=0.6), {0, 1}),
        (Sampling(min_p=0.2), {0, 1, 2, 3}),  # at least 0.2 * 0.4 = 0.08
        (Sampling(top_k=5, top_p=0.9, min_p=0.3), {0, 1, 2}),
        (Sampling(temperature=0.5, min_p=0.2), {0, 1}),  # sharper: p ~ [0.67, 0.17, 0.09, ...], cut at 0.13
        (Sampling(), set(range(8))),
    ],
)
def test_filters_pick_inside_their_set_and_everything_in_it(sampling, support):
    logits = PROBS.log().expand(40_000, -1)
    kept = torch.isfinite(filter_logits(logits[:1], sampling))[0]
    assert set(kept.nonzero().flatten().tolist()) == support
    drawn = torch.multinomial(filter_logits(logits, sampling).softmax(-1), 1, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn.flatten(), minlength=8).float() / 40_000
    assert set(counts.nonzero().flatten().tolist()) == support
    expected = (PROBS ** (1 / sampling.temperature)) * kept
    expected /= expected.sum()
    assert torch.allclose(counts, expected, atol=0.01)


def test_greedy_ignores_the_filters_and_a_nan_filter_is_refused():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [0.0, -1.0, -2.0, 5.0]])
    gen = torch.Generator().manual_seed(0)
    for s in (Sampling(temperature=0), Sampling(temperature=0, top_k=3, top_p=0.2, min_p=0.9), Sampling(temperature=1e-300)):
        assert draw(logits, s, gen).tolist() == [1, 3]  # the argmax, whatever the filters say
    with pytest.raises(MakemoreError, match="`top_p` nan: must be above 0"):
        Sampling(top_p=float("nan"))


@pytest.mark.parametrize("mode", ["lines", "text"])
@pytest.mark.parametrize("model_type", ["bigram", "gru", "transformer"])
def test_score_is_minus_the_eval_loss_times_the_token_count(model_type, mode):
    tok = CharTokenizer("abcdefghij")
    model = make(model_type, mode)
    text = "abcabjihg"
    split = data.encode_items([text], tok, BLOCK) if mode == "lines" else data.encode_stream(text, tok, BLOCK)
    loss, count = evaluate(model, split)
    result = score(model, tok, data.KINDS[mode], text)
    assert result.logprob == pytest.approx(-loss * count, abs=1e-4)
    assert len(result.tokens) == count and result.chars == split.n_chars
    assert result.bits_per_char == pytest.approx(loss * count / math.log(2) / split.n_chars, rel=1e-5)


def test_novel_only_never_returns_a_training_item():
    items = toy_items(300)
    tok = CharTokenizer.from_items(items)
    model = make("bigram", vocab_size=tok.vocab_size, block_size=14)
    with torch.no_grad():  # a bigram that has learned the toy language well: it repeats training words often
        counts = torch.ones(tok.vocab_size, tok.vocab_size)
        for s in items:
            ids = [0, *tok.encode(s), 0]
            for a, b in zip(ids, ids[1:]):
                counts[a, b] += 5
        model.logits.copy_(counts.log())
    plain = sample_items(model, tok, 200, Sampling(), seed=1)
    assert any(i.text in set(items) for i in plain)  # without the flag, training items do come out
    found = novel_items(model, tok, 50, Sampling(), 1, "", 0, None, True, set(items))
    assert len(found) == 50 and not any(i.text in set(items) for i in found)


def test_length_bounds_hold():
    tok = CharTokenizer("abcdefghij")
    model = make("mlp")
    for item in sample_items(model, tok, 100, Sampling(), seed=2, prefix="a", min_len=3, max_len=5):
        assert 3 <= len(item.text) <= 5 and item.text.startswith("a")
