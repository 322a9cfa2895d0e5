"""Tests over the registry: every model type gets them without being named here."""

import pytest
import torch

from makemore import checkpoint, data, models
from makemore.train import TrainConfig, evaluate, loss_fn, resolve, train
from tests.conftest import toy_items
from tokenizer import CharTokenizer

TYPES = list(models.MODELS)
TINY = {"transformer": {"n_layer": 2, "n_embd": 32}}  # smaller than the defaults, to keep the suite fast


def make(model_type: str, vocab_size: int = 11, block_size: int = 12):
    torch.manual_seed(0)
    config = models.make_config(model_type, vocab_size, block_size, **TINY.get(model_type, {}))
    return models.build(model_type, config)


@pytest.mark.parametrize("model_type", TYPES)
def test_logits_have_the_contract_shape(model_type):
    model = make(model_type)
    for T in (1, 5, 12):
        assert model(torch.randint(11, (3, T))).shape == (3, T, 11)


def perturbed(model):
    """Every parameter moved off its initial value: a table that starts at zero (bigram) or a zero
    start state would hide a leak from the future."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model


@pytest.mark.parametrize("model_type", TYPES)
def test_causality_later_tokens_never_change_earlier_logits(model_type):
    model = perturbed(make(model_type)).eval()
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(11, (4, 12), generator=gen)
    base = model(idx)
    for t in range(12):
        changed = idx.clone()
        changed[:, t + 1 :] = torch.randint(11, (4, 11 - t), generator=gen)
        assert torch.allclose(model(changed)[:, : t + 1], base[:, : t + 1], atol=1e-6), f"position {t} saw the future"


@pytest.mark.parametrize("model_type", TYPES)
def test_checkpoint_round_trip_reproduces_logits_exactly(model_type, tmp_path):
    model = perturbed(make(model_type)).eval()  # away from init, so the test cannot pass on a fresh model
    tok = CharTokenizer("abcdefghij")
    path = checkpoint.save(checkpoint.Checkpoint(model_type, model, tok, checkpoint.TrainingRecord(step=3)), tmp_path / "run" / "model.safetensors")
    loaded = checkpoint.load(path)
    idx = torch.randint(11, (2, 12))
    assert loaded.model_type == model_type and loaded.training == checkpoint.TrainingRecord(step=3)
    assert loaded.tokenizer.to_dict() == tok.to_dict()
    assert torch.equal(loaded.model(idx), model(idx))
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temp file left behind


@pytest.mark.parametrize("model_type", TYPES)
def test_learns_the_toy_language(model_type):
    """300 steps drive the loss from ~ln(11) = 2.40 to below 1.1 (a trained bigram reaches about 0.98)."""
    items = toy_items(600)
    tok = CharTokenizer.from_items(items)
    split = data.encode_items(items, tok)
    model = make(model_type, tok.vocab_size, split.x.shape[1])
    before, _ = evaluate(model, split)
    cfg = resolve(TrainConfig(max_steps=300, eval_interval=300, batch_size=32, warmup_steps=20), model, data.Lines)  # each type's own lr
    result = train(model, split, split, cfg)
    after, _ = evaluate(model, split)
    assert before > 2.2
    assert after < 1.1, f"{model_type}: loss {after:.3f} after 300 steps"
    assert result.best_val_loss == pytest.approx(after)


@pytest.mark.parametrize("model_type", TYPES)
def test_causality_test_can_fail(model_type):
    """The causality check sees a model that peeks one step ahead (its own logits, shifted)."""
    model = perturbed(make(model_type)).eval()
    idx = torch.randint(11, (2, 12), generator=torch.Generator().manual_seed(2))
    changed = idx.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    peek = lambda x: torch.roll(model(x), -1, dims=1)  # noqa: E731 -- position t sees t + 1
    assert not torch.allclose(peek(changed)[:, :5], peek(idx)[:, :5], atol=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_transformer_dropout_drops_p_and_keeps_the_expectation(p):
    from makemore.models.transformer import dropout

    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    y = dropout(x, p)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5  # 4 standard deviations
    assert y.unique().tolist() == [0.0, pytest.approx(1 / (1 - p), rel=1e-4)]
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient goes through the kept numbers only, scaled alike
    torch.manual_seed(0)
    assert torch.equal(dropout(x, p), y)  # torch's generator: the same seed, the same mask
    assert not torch.equal(dropout(x, p), y)


def test_packed_evaluation_gives_the_plain_loss():
    """The transformer is evaluated on packed rows: same loss and token count as row by row."""
    from makemore.train import evaluate

    items = toy_items(70, 5)
    tok = CharTokenizer.from_items(items)
    split = data.encode_items(items, tok)
    model = perturbed(make("transformer", tok.vocab_size, split.block_size)).eval()
    assert all(b.pos is not None for b in split.eval_batches(batch_size=30, pack=True))
    total, count = 0.0, 0
    with torch.no_grad():
        for b in split.eval_batches(batch_size=30):
            total += float(loss_fn(model(b.x), b.y, reduction="sum"))
            count += int((b.y != data.IGNORE).sum())
    loss, n = evaluate(model, split)
    assert n == count and loss == pytest.approx(total / count, rel=1e-5)


def test_transformer_on_packed_rows_computes_each_item_as_alone():
    items = toy_items(40, 3)
    tok = CharTokenizer.from_items(items)
    split = data.encode_items(items, tok)
    model = perturbed(make("transformer", tok.vocab_size, split.block_size)).eval()
    plain = split.batch(12, torch.Generator().manual_seed(0))
    packed = split.batch(12, torch.Generator().manual_seed(0), pack=True)
    assert packed.x.shape[0] < 12
    with torch.no_grad():
        a, b = model(plain.x), model(packed.x, pos=packed.pos)
    pieces = {}  # each packed item's ids -> its logits
    for x, pos, logits in zip(packed.x.tolist(), packed.pos.tolist(), b):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for s, e in zip(starts, starts[1:]):
            pieces[tuple(x[s:e])] = logits[s:e]
    for x, y, logits in zip(plain.x.tolist(), plain.y, a):
        k = int((y != data.IGNORE).sum())
        assert torch.allclose(pieces[tuple(x[:k])], logits[:k], atol=1e-5)
    with torch.no_grad():
        assert float(loss_fn(a, plain.y)) == pytest.approx(float(loss_fn(b, packed.y)), abs=1e-6)
