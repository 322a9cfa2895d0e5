"""GPT-2 in and out (makemore/hf.py): a tiny random GPT-2 made here by `transformers` (a dev extra;
skipped without it), offline, with a tiny byte-level BPE tokenizer trained here and written in
GPT-2's own formats (tokenizer.json; vocab.json + merges.txt)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers", reason="the GPT-2 tests compare with transformers (pip install 'makemore[dev]')")
hf_tokenizers = pytest.importorskip("tokenizers", reason="the GPT-2 tests compare with tokenizers")

import tokenizer  # noqa: E402
from makemore import checkpoint, diagnostics, hf, run  # noqa: E402
from makemore.cli import app  # noqa: E402
from makemore.models.transformer import Transformer, TransformerConfig  # noqa: E402
from tests.conftest import edit_safetensors  # noqa: E402
from makemore.sample import Sampling, stream_text  # noqa: E402
from tokenizer.export import huggingface_json  # noqa: E402
from tokenizer.imports import import_huggingface, import_vocab_merges  # noqa: E402

runner = CliRunner()
WORDS = "the cat sat on a mat and then it ran to the tree where a bird sang its song all day long".split()


def corpus(n: int, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(WORDS), (n,), generator=g).tolist()
    return " ".join(WORDS[i] + (".\n" if k % 11 == 10 else "") for k, i in enumerate(picks))


def write_gpt2_tokenizer(folder, tok) -> None:
    """`tok` as GPT-2 ships its tokenizer: tokenizer.json (ByteLevel with its regex), vocab.json and merges.txt."""
    d = huggingface_json(tok)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    d["pre_tokenizer"], d["post_processor"], d["decoder"] = byte_level, byte_level, byte_level
    (folder / "tokenizer.json").write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    vocab = d["model"]["vocab"] | {t["content"]: t["id"] for t in d["added_tokens"]}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "".join(f"{a} {b}\n" for a, b in d["model"]["merges"])
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A folder holding a tiny random GPT-2 (transformer. prefix, tied head), its tokenizer, and the model itself."""
    root = tmp_path_factory.mktemp("gpt2")
    tok = tokenizer.train([corpus(3000, 1)], vocab_size=300, pattern="gpt2", special=[tokenizer.EOT])
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=tok.eot_id, eos_token_id=tok.eot_id)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # biases and layer norms away from 0 and 1, so that a weight left out shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    folder = root / "gpt2"
    model.save_pretrained(folder)
    write_gpt2_tokenizer(folder, tok)
    (root / "text.txt").write_text(corpus(6000, 2), encoding="utf-8")
    return root, folder, model


def add_causal_mask(header, body):
    """The `h.0.attn.bias` buffer older GPT-2 files carry (a 1x1x4x4 causal mask), added to a file's tensors."""
    mask = torch.ones(4, 4).tril().numpy().tobytes()
    header["h.0.attn.bias"] = {"dtype": "F32", "shape": [1, 1, 4, 4], "data_offsets": [len(body), len(body) + len(mask)]}
    return body + mask


def imported(root, folder, name="run"):
    result = runner.invoke(app, ["import", str(folder), "-o", str(root / name), "--overwrite"])
    assert result.exit_code == 0, result.output
    return checkpoint.load(root / name)


def test_import_gives_transformers_logits(tiny):
    root, folder, model = tiny
    ids = torch.randint(model.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    ours = imported(root, folder).model
    assert ours.config.tie_head and ours.head.weight is ours.tok_emb.weight
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), model(ids).logits, atol=1e-4, rtol=0)


def test_an_import_over_an_earlier_run_leaves_none_of_its_state_or_curves(tiny):
    root, folder, _ = tiny
    out = root / "taken-over"
    out.mkdir()
    earlier = [checkpoint.LAST, run.METRICS, diagnostics.FILENAME]
    for name in earlier:
        (out / name).write_text("an earlier run's\n", encoding="utf-8")
    imported(root, folder, "taken-over")  # --overwrite
    assert [name for name in earlier if (out / name).exists()] == []  # a resume or a plot would take them for the import's


@pytest.mark.parametrize("layout", ["no-prefix", "sharded"])
def test_import_without_the_prefix_and_from_shards(tiny, layout):
    root, folder, model = tiny
    other = root / layout
    if layout == "no-prefix":  # GPT2Model's keys (OpenAI's upload has these): no head, the embedding is the head
        model.transformer.save_pretrained(other)
        with_mask = edit_safetensors((other / "model.safetensors").read_bytes(), edit_body=add_causal_mask)
        (other / "model.safetensors").write_bytes(with_mask)  # as older files store it: skipped, not a weight
    else:
        model.save_pretrained(other, max_shard_size="20KB")
        assert (other / "model.safetensors.index.json").exists() and not (other / "model.safetensors").exists()
    for name in ("vocab.json", "merges.txt"):
        (other / name).write_bytes((folder / name).read_bytes())
    ids = torch.randint(model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    ours = imported(root, other, "run-" + layout).model
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), model(ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("cache", [True, False])
def test_greedy_tokens_equal_transformers_generate(tiny, cache):
    root, folder, model = tiny
    ckpt = imported(root, folder)
    prompt = ckpt.tokenizer.encode_ordinary("the cat sat on")
    ours = list(stream_text(ckpt.model, ckpt.tokenizer, prompt, 50, Sampling(temperature=0), cache=cache))
    theirs = model.generate(torch.tensor([prompt]), max_new_tokens=50, do_sample=False, use_cache=True,
                            pad_token_id=ckpt.tokenizer.eot_id, eos_token_id=None)
    assert ours == theirs[0, len(prompt):].tolist()


def test_vocab_and_merges_give_the_ids_of_tokenizer_json_and_of_tokenizers(tiny):
    _, folder, _ = tiny
    a = import_huggingface(folder / "tokenizer.json")
    b = import_vocab_merges(folder / "vocab.json", folder / "merges.txt")
    theirs = hf_tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in ["the cat sat on the mat.", "  two  spaces\nand a line", "", "déjà vu 😀 한국어 ", "it's what they'd do"]:
        assert a.encode_ordinary(text) == b.encode_ordinary(text) == theirs.encode(text).ids, text
    assert a.special == b.special == {tokenizer.EOT: a.eot_id}


def test_a_pickle_is_refused_in_one_line(tiny, tmp_path):
    _, folder, _ = tiny
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02not really a pickle")
    result = runner.invoke(app, ["import", str(tmp_path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "pytorch_model.bin: a pickle" in result.output and "safetensors" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run" / "model.safetensors").exists()


def test_every_command_reads_an_imported_model(tiny):
    root, folder, _ = tiny
    imported(root, folder)
    run, text = str(root / "run"), str(root / "text.txt")
    sample = runner.invoke(app, ["sample", "-c", run, "--prompt", "the cat", "--max-new-tokens", "20", "--top-k", "50",
                                 "--top-p", "0.9", "--min-p", "0.01", "--seed", "1", "--json"])
    assert sample.exit_code == 0, sample.output
    row = json.loads(sample.stdout)[0]
    assert row["prompt"] == "the cat" and row["tokens"] == 20
    score = runner.invoke(app, ["score", "-c", run, "the cat sat on the mat.", "--json"])
    assert score.exit_code == 0 and json.loads(score.stdout)[0]["logprob"] < 0
    ev = runner.invoke(app, ["eval", text, "-c", run, "--json"])
    assert ev.exit_code == 0, ev.output
    m = json.loads(ev.stdout)
    assert m["bits_per_byte"] == pytest.approx(m["bits_per_char"])  # ASCII text: one byte a character
    info = json.loads(runner.invoke(app, ["info", run, "--json"]).stdout)
    assert info["training"]["origin"]["format"] == "huggingface" and info["config"]["tie_head"] is True
    no_data = runner.invoke(app, ["eval", "-c", run])
    assert no_data.exit_code == 2 and "pass a FILE" in no_data.output


def test_bfloat16_scores_within_a_bound_of_float32(tiny):
    root, folder, _ = tiny
    imported(root, folder)
    lp = {d: json.loads(runner.invoke(app, ["score", "-c", str(root / "run"), "--dtype", d, "--json",
                                            "the cat sat on the mat and then it ran to the tree."]).stdout)[0]["logprob"]
          for d in ("float32", "bfloat16")}
    assert lp["float32"] != lp["bfloat16"] and abs(lp["float32"] - lp["bfloat16"]) < 0.05 * abs(lp["float32"])
    bad = runner.invoke(app, ["score", "-c", str(root / "run"), "--dtype", "int8", "x y"])
    assert bad.exit_code == 2 and "--dtype 'int8'" in bad.output


def hf_logits(folder, ids):
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(ids).logits


def test_export_loads_in_transformers_and_tokenizers_with_equal_logits(tiny):
    root, folder, _ = tiny
    ckpt = imported(root, folder)
    result = runner.invoke(app, ["export", str(root / "run"), "-o", str(root / "out")])
    assert result.exit_code == 0, result.output
    ids = torch.randint(ckpt.tokenizer.vocab_size, (2, 50), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(root / "out", ids), ckpt.model(ids), atol=1e-5, rtol=0)
    again = runner.invoke(app, ["export", str(root / "run"), "-o", str(root / "out")])  # an export is replaced, a run never
    assert again.exit_code == 0, again.output
    theirs = hf_tokenizers.Tokenizer.from_file(str(root / "out" / "tokenizer.json"))
    text = "the bird sang, déjà 😀 all day.\n"
    assert theirs.encode(text).ids == ckpt.tokenizer.encode_ordinary(text) and theirs.decode(theirs.encode(text).ids) == text


def test_export_refuses_what_gpt2_cannot_hold_in_one_line(tmp_path):
    for name, options, why in [("default", {}, "head_bias=true"), ("char", {"head_bias": False}, "a char tokenizer")]:
        config = TransformerConfig(vocab_size=5, block_size=8, n_layer=1, n_embd=8, n_head=2, **options)
        ckpt = checkpoint.Checkpoint("transformer", Transformer(config), tokenizer.CharTokenizer("abcd"), checkpoint.TrainingRecord())
        checkpoint.save(ckpt, tmp_path / name / checkpoint.FILENAME)
        result = runner.invoke(app, ["export", str(tmp_path / name), "-o", str(tmp_path / "out")])
        assert result.exit_code == 2 and why in result.output and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
    over = runner.invoke(app, ["export", str(tmp_path / "char"), "-o", str(tmp_path / "char")])
    assert over.exit_code == 2


def test_fine_tune_resumes_exactly_then_exports_with_equal_logits(tiny):
    root, folder, _ = tiny
    imported(root, folder)
    text = str(root / "text.txt")
    common = ["--init-from", str(root / "run"), "--eval-interval", "3", "--block-size", "32", "--threads", "1"]
    whole = runner.invoke(app, ["train", text, "-o", str(root / "ft-whole"), "--max-steps", "6", *common, "--json"])
    assert whole.exit_code == 0, whole.output
    part = runner.invoke(app, ["train", text, "-o", str(root / "ft"), "--max-steps", "3", *common])
    assert part.exit_code == 0 and "step      0" in part.output  # the evaluation before the first step
    resumed = runner.invoke(app, ["train", "--resume", str(root / "ft"), "--max-steps", "6"])
    assert resumed.exit_code == 0, resumed.output
    a, b = checkpoint.load(root / "ft-whole"), checkpoint.load(root / "ft")
    assert a.training.options["lr"] == pytest.approx(2e-4) and a.training.origin["format"] == "huggingface"
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    both = runner.invoke(app, ["compare", "--run", str(root / "run"), "--run", str(root / "ft"), "--all", "--json"])
    assert both.exit_code == 0, both.output
    report = json.loads(both.stdout)  # the imported model has no data: both are measured on the fine-tuned run's test split
    assert report["on"] == f"the test split of {root / 'ft'}" and {r["run"] for r in report["runs"]} == {str(root / "run"), str(root / "ft")}
    assert all(r["covered"] == r["of"] and r["tokenizer"] == f"BPE {a.tokenizer.vocab_size}" for r in report["runs"])
    assert runner.invoke(app, ["export", str(root / "ft"), "-o", str(root / "ft-out")]).exit_code == 0
    ids = torch.randint(a.tokenizer.vocab_size, (2, 64), generator=torch.Generator().manual_seed(3))  # all 64 positions
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(root / "ft-out", ids), b.model(ids), atol=1e-5, rtol=0)


def test_show_attention_reads_an_imported_model_as_text_from_its_first_token(tiny):
    root, folder, _ = tiny
    ckpt = imported(root, folder)
    from makemore import show

    result = show.attention(ckpt, "the bird sang")  # an imported model has no data record: text, so no boundary token first
    assert len(result["tokens"]) == len(ckpt.tokenizer.encode_ordinary("the bird sang"))
