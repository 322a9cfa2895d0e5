"""The written-out recurrent cells compute the same function as torch's fused kernels."""

import dataclasses

import pytest
import torch

from makemore import checkpoint, models
from makemore.models.recurrent import RecurrentLM
from tokenizer import CharTokenizer

RECURRENT = [name for name, (cls, _) in models.MODELS.items() if issubclass(cls, RecurrentLM)]


def test_the_recurrent_types_are_found():
    assert set(RECURRENT) == {"rnn", "gru", "lstm"}


@pytest.mark.parametrize("model_type", RECURRENT)
def test_written_out_cell_equals_fused_kernel(model_type):
    torch.manual_seed(0)
    fused = models.build(model_type, models.make_config(model_type, 13, 20, n_embd=16, n_hidden=24))
    with torch.no_grad():  # a non-zero learned start state, so that it is exercised too
        fused.start.normal_()
    written = models.build(model_type, dataclasses.replace(fused.config, fused=False))
    written.load_state_dict(fused.state_dict())
    idx = torch.randint(13, (5, 20))
    a, b = fused(idx), written(idx)
    assert (a - b).abs().max().item() <= 1e-5
    # and the gradients agree, so both paths train the same way
    a.square().mean().backward()
    b.square().mean().backward()
    for (name, p), q in zip(fused.named_parameters(), written.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


@pytest.mark.parametrize("model_type", RECURRENT)
def test_a_fused_checkpoint_loads_into_the_written_out_cell(model_type, tmp_path):
    torch.manual_seed(0)
    model = models.build(model_type, models.make_config(model_type, 11, 12, n_hidden=16)).eval()
    path = checkpoint.save(checkpoint.Checkpoint(model_type, model, CharTokenizer("abcdefghij"), checkpoint.TrainingRecord()), tmp_path / "m.safetensors")
    loaded = checkpoint.load(path)
    written = models.build(model_type, dataclasses.replace(loaded.model.config, fused=False))
    written.load_state_dict(loaded.model.state_dict())
    idx = torch.randint(11, (3, 12))
    assert (written(idx) - model(idx)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("vocab", [13, 300])  # fewer tokens than the batch's 100 positions (a table of inputs' shares), and more
@pytest.mark.parametrize("model_type", ["rnn", "gru"])
def test_written_out_backpropagation_through_time_equals_torch_gradients(model_type, vocab, monkeypatch):
    torch.manual_seed(0)
    model = models.build(model_type, models.make_config(model_type, vocab, 20, n_embd=16, n_hidden=24)).double()
    with torch.no_grad():
        model.start.normal_()
    idx = torch.randint(vocab, (5, 20))
    calls = []
    own = model.through_time
    monkeypatch.setattr(model, "through_time", lambda idx, state: calls.append(1) or own(idx, state))
    ours = model(idx)  # training on a CPU: the written-out recurrence
    ours.square().mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert calls == [1]
    with torch.no_grad():
        model(idx)  # no gradients wanted (decoding): torch's kernel
    assert calls == [1]
    model.zero_grad()
    monkeypatch.setattr(model, "through_time", lambda idx, state: None)  # torch's kernel, and autograd through it
    theirs = model(idx)
    theirs.square().mean().backward()
    assert torch.allclose(ours, theirs, atol=1e-12)
    for name, p in model.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-12), name


def test_the_written_out_recurrences_pass_gradcheck():
    from makemore.models.gru import GRUThroughTime
    from makemore.models.rnn import ElmanThroughTime

    torch.manual_seed(0)
    T, B, H = 4, 3, 5

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.double, requires_grad=True)

    assert torch.autograd.gradcheck(ElmanThroughTime.apply, (leaf(T, B, H), leaf(B, H), leaf(H, H)))
    assert torch.autograd.gradcheck(GRUThroughTime.apply, (leaf(T, B, 3 * H), leaf(B, H), leaf(3 * H, H), leaf(3 * H)))
