"""The trainer's AdamW computes what torch.optim.AdamW does after clip_grad_norm_; its cross-entropy
for many logits, what F.cross_entropy does."""

import importlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from makemore.data import IGNORE
from makemore.optim import AdamW
from makemore.train import CrossEntropy, training_loss

train_module = importlib.import_module("makemore.train")  # the module: the package's `train` is the function


def model_and_batches(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 16), nn.Tanh(), nn.LayerNorm(16), nn.Linear(16, 11))
    batches = [torch.randint(11, (4, 5), generator=torch.Generator().manual_seed(seed + i)) for i in range(6)]
    return model, batches


def groups(model, wd):
    params = list(model.parameters())
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": wd},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def loss_of(model, x):
    return nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(1, dims=1).flatten()) * 50  # large: clipping acts


def train_steps(model, opt, batches):
    for x in batches:
        opt.zero_grad()
        loss_of(model, x).backward()
        opt.step(opt.grad_norm(), 1.0)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("max_norm", [0.5, math.inf])
def test_same_updates_as_torch(fused, max_norm):
    ours_model, batches = model_and_batches(3)
    ref_model, _ = model_and_batches(3)
    ours = AdamW(groups(ours_model, 0.1), lr=3e-2, betas=(0.9, 0.99), fused=fused)
    ref = torch.optim.AdamW(groups(ref_model, 0.1), lr=3e-2, betas=(0.9, 0.99))
    clipped = 0
    for x in batches:
        ours.zero_grad()
        loss_of(ours_model, x).backward()
        norm = ours.grad_norm()
        ours.step(norm, max_norm)
        ref.zero_grad()
        loss_of(ref_model, x).backward()
        ref_norm = nn.utils.clip_grad_norm_(ref_model.parameters(), max_norm)
        ref.step()
        assert float(norm) == pytest.approx(float(ref_norm), rel=1e-5)
        clipped += float(ref_norm) > max_norm
    assert clipped == (len(batches) if max_norm < math.inf else 0)  # the case tested is the case meant
    for a, b in zip(ours_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically():
    model, batches = model_and_batches(5)
    opt = AdamW(groups(model, 0.1), lr=1e-2, betas=(0.9, 0.99))
    train_steps(model, opt, batches[:3])
    twin, _ = model_and_batches(5)
    twin.load_state_dict(model.state_dict())
    saved = opt.state_dict()
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1, 2], [3, 4, 5, 6]]  # numbered group after group, as torch.optim does
    copy = AdamW(groups(twin, 0.0), lr=0.5)
    copy.load_state_dict(saved)
    assert copy.param_groups[0]["weight_decay"] == 0.1 and copy.param_groups[0]["lr"] == 1e-2
    for m, o in ((model, opt), (twin, copy)):
        train_steps(m, o, batches[3:])
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_torch_optim_state_loads():
    """Checkpoints written before this optimizer hold torch.optim.AdamW's state_dict."""
    model, batches = model_and_batches(7)
    ref = torch.optim.AdamW(groups(model, 0.1), lr=1e-2, betas=(0.9, 0.99), fused=True)
    loss_of(model, batches[0]).backward()
    ref.step()
    ours = AdamW(groups(model, 0.1), lr=1e-2)
    ours.load_state_dict(ref.state_dict())
    mine, theirs = ours.state_dict()["state"], ref.state_dict()["state"]
    assert len(mine) == len(theirs) == 7
    for i in theirs:
        assert torch.equal(mine[i]["exp_avg"], theirs[i]["exp_avg"]) and torch.equal(mine[i]["exp_avg_sq"], theirs[i]["exp_avg_sq"])
        assert float(mine[i]["step"]) == 1.0


def test_mismatched_state_is_refused():
    model, _ = model_and_batches(1)
    other = nn.Linear(3, 3)
    opt = AdamW(groups(model, 0.1), lr=1e-2)
    with pytest.raises(ValueError):
        opt.load_state_dict(AdamW(groups(other, 0.1), lr=1e-2).state_dict())


def test_parameters_live_in_the_flat_buffers_and_are_laid_out_again_when_re_pointed():
    model, batches = model_and_batches(9)
    ref_model, _ = model_and_batches(9)
    opt = AdamW(groups(model, 0.1), lr=1e-2, betas=(0.9, 0.99))
    ref = torch.optim.AdamW(groups(ref_model, 0.1), lr=1e-2, betas=(0.9, 0.99))
    w = model[1].weight
    assert w.data_ptr() == opt.data.data_ptr() + opt.data.element_size() * model[0].weight.numel()  # second, after the embedding
    for k, x in enumerate(batches):
        if k == 2:
            w.data = w.data.clone()  # as model.to(device) or load_state_dict(assign=True) would
        if k == 3:
            model[4].bias.grad = None
        opt.zero_grad()
        loss_of(model, x).backward()
        opt.step(opt.grad_norm(), 1.0)
        ref.zero_grad()
        loss_of(ref_model, x).backward()
        nn.utils.clip_grad_norm_(ref_model.parameters(), 1.0)
        ref.step()
    assert any(w.data_ptr() == v.data_ptr() for v in opt.data_views)  # back in the buffer
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # and nothing was lost on the way


def ddp_worker(rank: int, port: int, out: str):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model, _ = model_and_batches(11)
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = AdamW(groups(model, 0.1), lr=1e-2)
    x = torch.randint(11, (4, 5), generator=torch.Generator().manual_seed(rank))  # each rank its own batch
    opt.zero_grad()
    loss_of(ddp, x).backward()
    torch.save({"grad": opt.grad.clone(), "own": torch.autograd.grad(loss_of(model, x), opt.params)}, f"{out}.{rank}")  # the buffer's order
    dist.destroy_process_group()


@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
def test_ddp_averages_gradients_into_the_flat_buffer(tmp_path):
    """DDP copies the averaged gradients into each parameter's .grad: here, the optimizer's buffer."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(ddp_worker, args=(port, str(tmp_path / "r")), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"r.{i}") for i in range(2))
    assert torch.equal(r0["grad"], r1["grad"])
    mean = torch.cat([(a + b).reshape(-1) / 2 for a, b in zip(r0["own"], r1["own"])])
    torch.testing.assert_close(r0["grad"], mean, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(torch.cat([g.reshape(-1) for g in r0["own"]]), mean)  # the ranks' own gradients differ


def test_weight_average_follows_its_formula_and_swaps_in_and_out():
    model, batches = model_and_batches(13)
    opt = AdamW(groups(model, 0.1), lr=1e-2, average=0.9)
    expected = [p.detach().clone() for p in model.parameters()]  # it starts from the initial weights
    for n, x in enumerate(batches, start=1):
        train_steps(model, opt, [x])
        d = min(0.9, (1 + n) / (10 + n))  # the warm-up: 2/11, 3/12, ... up to 0.9
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
    live = [p.detach().clone() for p in model.parameters()]
    with opt.averaged():
        for p, e, l in zip(model.parameters(), expected, live):
            torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-6)
            assert not torch.equal(p.detach(), l)  # the average is not the live weights
    assert all(torch.equal(p.detach(), l) for p, l in zip(model.parameters(), live))  # restored exactly
    plain, _ = model_and_batches(13)
    plain_opt = AdamW(groups(plain, 0.1), lr=1e-2)
    train_steps(plain, plain_opt, batches)
    with plain_opt.averaged():  # no average: the live weights, which the average never changes
        assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters()))


def test_weight_average_is_saved_and_resumed():
    model, batches = model_and_batches(15)
    opt = AdamW(groups(model, 0.1), lr=1e-2, average=0.5)
    train_steps(model, opt, batches[:3])
    twin, _ = model_and_batches(15)
    twin.load_state_dict(model.state_dict())
    saved = opt.state_dict()
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "average"}
    copy = AdamW(groups(twin, 0.1), lr=1e-2, average=0.5)
    copy.load_state_dict(saved)
    train_steps(model, opt, batches[3:])
    train_steps(twin, copy, batches[3:])
    assert torch.equal(opt.weight_average, copy.weight_average)
    without = AdamW(groups(twin, 0.1), lr=1e-2)  # a run without an average ignores a saved one
    without.load_state_dict(saved)
    assert without.weight_average is None and "average" not in without.state_dict()["state"][0]


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 200), vocab=st.integers(2, 70), ignored=st.floats(0.0, 0.9), scale=st.floats(0.1, 30.0),
       seed=st.integers(0, 2**31 - 1))
def test_the_training_cross_entropy_equals_torchs_loss_and_gradient(rows, vocab, ignored, scale, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * scale  # large scales: logits far apart, as a trained model's
    targets = torch.randint(vocab, (rows,), generator=g)
    targets[torch.rand(rows, generator=g) < ignored] = IGNORE
    targets[0] = 0  # at least one target counts
    theirs = logits.clone().requires_grad_()
    want = F.cross_entropy(theirs, targets, ignore_index=IGNORE)
    want.backward()
    ours = logits.clone().requires_grad_()
    got = CrossEntropy.apply(ours * 1, targets)  # an operation's output, as the model's logits are
    assert got.grad_fn.name() == "CrossEntropyBackward"  # our function, not torch's
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6)  # softmax minus one near 1: rounding


def test_the_training_cross_entropy_takes_only_many_float32_logits_an_operation_made(monkeypatch):
    monkeypatch.setattr(train_module, "FUSED_LOGITS", 35)
    targets = torch.randint(7, (1, 5))
    assert training_loss(torch.randn(1, 5, 7, requires_grad=True) * 1, targets).grad_fn.name() == "CrossEntropyBackward"
    assert training_loss(torch.randn(1, 4, 7, requires_grad=True) * 1, targets[:, :4]).grad_fn.name() != "CrossEntropyBackward"  # 28 < 35
    leaf = torch.randn(1, 5, 7, requires_grad=True)  # its backward would write into the tensor itself
    before = leaf.detach().clone()
    training_loss(leaf, targets).backward()
    assert torch.equal(leaf.detach(), before)
    half = (torch.randn(1, 5, 7, requires_grad=True) * 1).half()  # float16: torch's own
    assert training_loss(half.float() * 1, targets).grad_fn.name() == "CrossEntropyBackward"
    assert training_loss(half, targets).grad_fn.name() != "CrossEntropyBackward"


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 150), vocab=st.integers(2, 70), seed=st.integers(0, 2**31 - 1))
def test_the_training_cross_entropy_of_bfloat16_logits_is_torchs_in_float32(rows, vocab, seed):
    """As `--dtype bfloat16` runs it: torch upcasts bfloat16 logits to float32 for the loss, and its
    gradient is cast back to bfloat16 on its way to the head."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=g) * 8).bfloat16()
    targets = torch.randint(vocab, (rows,), generator=g)
    theirs = logits.clone().requires_grad_()
    want = F.cross_entropy(theirs.float(), targets)
    want.backward()
    ours = logits.clone().requires_grad_()
    got = CrossEntropy.apply(ours * 1, targets)
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=0.01, atol=1e-6)  # bfloat16 roundings of float32 gradients
