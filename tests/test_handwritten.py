"""The code written by hand where a library has it, held to the library: the optimizer without torch's
private fused kernel, the checkpoint writer against safetensors' reader, dropout against F.dropout,
the chunked one-row product and oneDNN's product of many rows against nn.Linear.
(The recurrences' gradients are compared with torch's in test_recurrent.py, the optimizer's fused
path with torch.optim in test_optim.py; bench/handwritten.py measures what each piece buys.)"""

from unittest import mock

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from makemore.checkpoint import serialize
from makemore.models import base
from makemore.models.base import ONEDNN_FROM, Linear, onednn_product, row_chunks
from makemore.models.transformer import Transformer, TransformerConfig, dropout
from makemore.optim import AdamW


def small_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 16), nn.Tanh(), nn.LayerNorm(16), nn.Linear(16, 11))


def decay_groups(model: nn.Module) -> list[dict]:
    params = list(model.parameters())
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1), ((x + 1) % 11).flatten()) * 20  # a learnable target; large: clipping acts


def test_without_torchs_private_fused_kernel_adamw_falls_back_and_matches_torch_optim(monkeypatch):
    monkeypatch.delattr(torch, "_fused_adamw_", raising=False)  # a torch release that dropped it
    ours_model, ref_model = small_model(21), small_model(21)
    ours = AdamW(decay_groups(ours_model), lr=3e-2, betas=(0.9, 0.99), fused=True)
    ref = torch.optim.AdamW(decay_groups(ref_model), lr=3e-2, betas=(0.9, 0.99))
    assert not ours.fused  # the written-out update, not a call that would raise AttributeError
    batches = [torch.randint(11, (8, 6), generator=torch.Generator().manual_seed(100 + i)) for i in range(20)]
    losses, clipped = [], 0
    for x in batches:
        ours.zero_grad()
        loss = loss_of(ours_model, x)
        loss.backward()
        ours.step(ours.grad_norm(), 1.0)
        losses.append(loss.item())
        ref.zero_grad()
        loss_of(ref_model, x).backward()
        clipped += float(nn.utils.clip_grad_norm_(ref_model.parameters(), 1.0)) > 1.0
        ref.step()
    assert clipped >= 10  # the clipping folded into the update was exercised
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])  # it trains
    for a, b in zip(ours_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_serialize_gives_the_same_bytes_for_the_same_inputs_and_safetensors_reads_them(tmp_path):
    g = torch.Generator().manual_seed(4)
    tensors = {"w": torch.randn(3, 5, generator=g), "b": torch.randn(5, generator=g).double(), "ids": torch.arange(7),
               "mask": torch.tensor([True, False, True]), "half": torch.randn(2, 2, generator=g).half(),
               "empty": torch.zeros(0, 4), "scalar": torch.tensor(2.5)}
    metadata = {"format": "makemore", "format_version": "1", "model_type": "mlp", "model_config": '{"n_embd": 8}',
                "tokenizer": '{"type": "char"}', "training": '{"step": 3}'}
    first = serialize(tensors, metadata)
    reordered = serialize(dict(reversed(tensors.items())), dict(reversed(metadata.items())))
    assert all(serialize(tensors, metadata) == first for _ in range(10)) and reordered == first  # insertion order does not matter
    back = safetensors.torch.load(first)
    assert back.keys() == tensors.keys()
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name
    path = tmp_path / "m.safetensors"
    path.write_bytes(first)
    with safetensors.safe_open(str(path), framework="pt") as f:
        assert f.metadata() == metadata
    library = safetensors.torch.load(safetensors.torch.save(tensors, metadata))  # the library's own writer: the same content
    assert all(torch.equal(library[k], back[k]) for k in tensors)


def test_dropout_drops_as_often_as_torchs_and_scales_alike():
    """The same distribution as F.dropout: the zeroed share within sampling error of torch's, and the
    kept numbers scaled by 1 / (1 - p) with p rounded to a multiple of 1/65,536 (the 16 random bits)."""
    x = torch.ones(1000, 1000)
    for p in (0.1, 0.2, 1 / 3, 0.5):
        torch.manual_seed(0)
        ours, theirs = dropout(x, p), F.dropout(x, p)
        share, torch_share = float((ours == 0).float().mean()), float((theirs == 0).float().mean())
        assert abs(share - torch_share) < 5 * (2 * p * (1 - p) / x.numel()) ** 0.5  # 5 standard deviations of the difference
        kept, torch_kept = ours[ours != 0].unique(), theirs[theirs != 0].unique()
        assert len(kept) == len(torch_kept) == 1
        assert float(kept) == float(torch.tensor(1 / (1 - round(p * 65536) / 65536)))  # exactly, in float32
        assert abs(float(kept) / float(torch_kept) - 1) <= 1 / 65536 / (1 - p)  # and torch's up to that rounding


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 70_000))
def test_row_chunks_are_the_fewest_from_16_that_divide_the_rows_into_16_or_more(rows):
    k = row_chunks(rows)
    parts = [j for j in range(16, rows // 16 + 1) if rows % j == 0]
    assert k == (parts[0] if parts else 1)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([256, 768, 2_304, 4_099, 50_257]), st.integers(512, 800), st.booleans(), st.integers(0, 2**16))
def test_a_one_row_product_in_chunks_equals_nn_linears(out, n, bias, seed):
    torch.manual_seed(seed)
    ours = Linear(n, out, bias=bias)
    assert (ours.chunks > 1) == (out != 4_099)  # a prime output stays whole
    plain = nn.Linear(n, out, bias=bias)
    plain.load_state_dict(ours.state_dict())  # the same parameters, by the same names
    x = torch.randn(1, n)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(ours(x), plain(x))  # under autocast: the plain product (in bfloat16)
        ours.bfloat16(), plain.bfloat16()
        assert torch.equal(ours(x.bfloat16()), plain(x.bfloat16()))  # bfloat16: the plain product (its batched one is slower)


def test_a_one_row_product_in_chunks_has_nn_linears_gradients():
    torch.manual_seed(3)
    ours, plain = Linear(256, 512), nn.Linear(256, 512)
    plain.load_state_dict(ours.state_dict())
    assert ours.chunks == 16
    x = torch.randn(1, 256, requires_grad=True)
    grads = [torch.autograd.grad(layer(x).square().sum(), [x, layer.weight, layer.bias]) for layer in (ours, plain)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def onednn_used(y: torch.Tensor) -> bool:
    return "OneDNNProductBackward" in {type(f).__name__ for f, _ in y.grad_fn.next_functions}


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 300), st.sampled_from([(1, 5), (64, 256), (384, 1_152), (64, 4_099)]), st.booleans(), st.booleans(),
       st.sampled_from(["both", "weight frozen", "input without"]), st.booleans(), st.integers(0, 2**16))
def test_a_product_of_many_rows_through_onednn_equals_nn_linears_with_its_gradients(rows, shape, bias, three_d, grads, avx512, seed):
    if not onednn_product():
        pytest.skip("this torch has no oneDNN product: Linear keeps the plain one")
    torch.manual_seed(seed)
    n, out = shape
    ours, plain = Linear(n, out, bias=bias), nn.Linear(n, out, bias=bias)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(rows, 1, n) if three_d else torch.randn(rows, n)
    assert not onednn_used(ours(x)) or rows * n * out >= ONEDNN_FROM  # small products: the plain one
    wanted = [x.requires_grad_()] if grads != "input without" else []
    for layer in (ours, plain):
        layer.weight.requires_grad_(grads != "weight frozen")
        wanted.append([p for p in layer.parameters() if p.requires_grad])
    with (mock.patch.object(base, "ONEDNN_FROM", 0),  # every product through oneDNN, however small
          mock.patch.object(base, "onednn_input_gradient", lambda: avx512)):  # the input's gradient through oneDNN or mm
        y = ours(x)
        z = plain(x)
        assert onednn_used(y)
        torch.testing.assert_close(y, z, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(z)
        inputs = wanted[:-2] if grads != "input without" else []
        for a, b in zip(torch.autograd.grad(y, [*inputs, *wanted[-2]], g), torch.autograd.grad(z, [*inputs, *wanted[-1]], g)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(ours(x), plain(x))  # under autocast: the plain product (in bfloat16)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), z, rtol=1e-5, atol=1e-5)  # without gradients too


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # torch.func scripts some of its own helpers
def test_a_product_through_onednn_has_second_gradients_and_leaves_torch_func_to_the_plain_one():
    if not onednn_product():
        pytest.skip("this torch has no oneDNN product: Linear keeps the plain one")
    torch.manual_seed(6)
    ours, plain = Linear(8, 6), nn.Linear(8, 6)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(5, 8, requires_grad=True)
    with mock.patch.object(base, "ONEDNN_FROM", 0):
        second = []
        for layer in (ours, plain):  # a gradient penalty: the input's gradient, differentiated again
            dx, = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
            second.append(torch.autograd.grad(dx.pow(2).sum(), [layer.weight, layer.bias]))
        for a, b in zip(*second):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        params = {name: p.detach() for name, p in ours.named_parameters()}
        loss = lambda ps, layer: torch.func.functional_call(layer, ps, (x,)).pow(2).sum()  # noqa: E731
        torch.testing.assert_close(torch.func.grad(loss)(params, ours), torch.func.grad(loss)(params, plain))
        with torch.autograd.forward_ad.dual_level():
            dual = torch.autograd.forward_ad.make_dual(x.detach(), torch.ones_like(x))
            tangent = torch.autograd.forward_ad.unpack_dual(ours(dual)).tangent
        torch.testing.assert_close(tangent, torch.ones_like(x) @ ours.weight.detach().t())


@pytest.mark.parametrize("why", ["no oneDNN", "compiling"])
def test_without_onednn_or_when_compiled_a_product_of_many_rows_is_the_plain_one(why):
    torch.manual_seed(5)
    ours, plain = Linear(64, 96), nn.Linear(64, 96)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(40, 64)
    available = (lambda: False) if why == "no oneDNN" else base.onednn_product  # a torch without it, or not x86-64
    compiling = why == "compiling"  # torch.compile traces the plain product and picks its own kernels (ours broke inductor)
    with (mock.patch.object(base, "ONEDNN_FROM", 0), mock.patch.object(base, "onednn_product", available),
          mock.patch.object(torch.compiler, "is_compiling", lambda: compiling)):
        y = ours(x)
    assert type(y.grad_fn).__name__ == type(plain(x).grad_fn).__name__ == "AddmmBackward0"  # torch's own product
    assert torch.equal(y, plain(x))  # bit for bit


@pytest.mark.parametrize("tie", [False, True])
def test_a_transformer_decodes_through_chunked_products_as_its_forward_computes(tie):
    torch.manual_seed(4)
    config = TransformerConfig(vocab_size=512, block_size=16, n_embd=256, n_head=4, n_layer=2, dropout=0.0,
                               tie_head=tie, head_bias=not tie)
    model = Transformer(config).eval()
    assert [m.chunks for m in (model.blocks[0].attn.qkv, model.blocks[0].mlp[0], model.head)] == [16, 16, 16]
    ids = torch.randint(512, (1, 12))
    with torch.no_grad():
        whole = model(ids)[0]  # 12 rows: oneDNN's products
        state = model.init_state(1)
        steps = [model.step(ids[:, t : t + 1], state)[0][0, 0] for t in range(12)]  # one row each: chunked
    torch.testing.assert_close(torch.stack(steps), whole, rtol=1e-4, atol=1e-4)  # two kernels, each rounding its own way
