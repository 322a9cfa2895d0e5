"""Pairs mode: prompt/response records, the template, a loss on the response only, a split by
record, errors naming the record and field, and a small transformer that learns instructions."""

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import makemore
import tokenizer
from makemore import data, models, pairs
from makemore.cli import app
from makemore.data import IGNORE, Pairs
from makemore.errors import MakemoreError
from makemore.train import loss_fn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import instructions  # noqa: E402  (bench/instructions.py: the generated instruction set)

SHORT = "{instruction}={response}"
RECORDS = [{"prompt": f"{w}", "response": w[::-1]} for w in
           ["ab", "ba", "abc", "cab", "bca", "aab", "bba", "cca", "acb", "bac", "cba", "abb"]]


def write(path: Path, rows, jsonl=True) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows), encoding="utf-8")
    return path


def prepare(tmp_path, rows=RECORDS, template=SHORT, **kw):
    return data.prepare(write(tmp_path / "qa.jsonl", rows), options={"template": template} | kw.pop("options", {}), **kw)


def test_a_record_is_eot_prompt_response_eot_with_targets_on_the_response_only(tmp_path):
    ds = prepare(tmp_path)
    tok, eot = ds.tokenizer, ds.tokenizer.eot_id
    items = Pairs.encode(data.read_source(tmp_path / "qa.jsonl"), tok, ds.block_size, pairs.read_records(
        (tmp_path / "qa.jsonl").read_text(), "qa"), [2], SHORT)  # "abc" -> "cba"
    a, b, c, eq = tok.encode("abc=")
    assert ds.block_size == 8  # <eot> abc = cba: the longest record's positions
    assert items.x[0].tolist() == [eot, a, b, c, eq, c, b, a]
    assert items.y[0].tolist() == [IGNORE] * 4 + [c, b, a, eot]  # the prompt's targets ignored
    assert int(items.lengths[0]) == 8 and items.n_chars == 4


def test_the_loss_ignores_the_prompt_and_counts_the_response(tmp_path):
    ds = prepare(tmp_path)
    x, y, _ = ds.splits["train"].batch(8, torch.Generator().manual_seed(0))
    logits = torch.randn(*x.shape, ds.tokenizer.vocab_size, generator=torch.Generator().manual_seed(1))
    base = loss_fn(logits, y)
    prompt = (y == IGNORE) & (torch.arange(x.shape[1]) < (y != IGNORE).int().argmax(dim=1, keepdim=True))
    assert prompt.any()
    other = logits.clone()
    other[prompt] = torch.randn(int(prompt.sum()), logits.shape[-1])  # the model's guesses for the prompt changed
    assert torch.equal(loss_fn(other, y), base)
    response = (y != IGNORE).nonzero()[0]
    other = logits.clone()
    other[response[0], response[1], 0] += 5.0  # one logit at a response position changed
    assert not torch.equal(loss_fn(other, y), base)
    y2 = y.clone()
    y2[response[0], response[1]] = (y[response[0], response[1]] + 1) % ds.tokenizer.vocab_size  # one response token changed
    assert not torch.equal(loss_fn(logits, y2), base)
    log_probs = logits.log_softmax(-1)
    by_hand = [-log_probs[r, t, y[r, t]] for r in range(len(y)) for t in range(y.shape[1]) if y[r, t] != IGNORE]
    assert torch.allclose(base, torch.stack(by_hand).mean())  # the mean over response positions only


def test_the_split_is_by_record_and_the_test_split_is_rebuilt_the_same(tmp_path):
    rows = [{"instruction": f"Say {k}", "input": "x" * (k % 3), "output": str(k)} for k in range(50)]
    ds = prepare(tmp_path, rows, template=pairs.DEFAULT_TEMPLATE)
    seen = {}
    for name, split in ds.splits.items():
        for k in range(len(split)):
            seen.setdefault(ds.tokenizer.decode(split.x[k].tolist()), []).append(name)
    assert sorted(ds.sizes.values()) == [5, 5, 40] and len(seen) == 50 and all(len(v) == 1 for v in seen.values())
    src = data.read_source(tmp_path / "qa.jsonl")
    again = Pairs.test_split(src, ds.record(), ds.tokenizer, ds.block_size)
    assert torch.equal(again.x, ds.splits["test"].x) and torch.equal(again.y, ds.splits["test"].y)


@pytest.mark.parametrize("text, message", [
    ('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n', 'record 2 (line 2): field "response" is missing'),
    ('{"prompt": "a", "response": "b"}\n\n[1]\n', "record 2 (line 3): not a JSON object"),
    ('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": 3}\n', 'record 2 (line 2): field "response" must be a string, not int'),
    ('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": "b"\n', "record 2 (line 2): not valid JSON"),
    ('[{"instruction": "a", "output": "b"}, {"instruction": "", "output": "b"}]', 'record 2: field "instruction" is empty'),
    ('[{"instruction": "a", "output": "b"}, {"instruction": "a", "input": null, "output": "b"}]',
     'record 2: field "input" must be a string, not NoneType'),
    ('[{"question": "a"}]', "record 1: no \"prompt\" or \"instruction\" field (it has 'question')"),
    ('{"records": []}', "record 1 (line 1): no \"prompt\" or \"instruction\" field (it has 'records')"),
    ('[{"prompt": "a", "response": "b"}', "not valid JSON (line 1: Expecting ',' delimiter)"),
])
def test_malformed_records_are_named_by_number_and_field(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MakemoreError) as e:
        data.prepare(path)
    assert str(e.value) == f"{path}: {message}" or message in str(e.value)
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("template, message", [
    ("{prompt}\n{response}", "unknown placeholder {prompt}"),
    ("Q: {input}\nA: {response}", "no {instruction} placeholder"),
    ("{instruction}\n{response}\nthanks", "{response} must appear once, at the end"),
    ("{instruction} {response} {response}", "{response} must appear once"),
    ("{instruction {response}", "write {{ and }} for literal braces"),
])
def test_bad_templates_are_refused(template, message):
    with pytest.raises(MakemoreError, match=message.replace("{", r"\{").replace("}", r"\}")):
        pairs.check_template(template)


def test_templates_fill_in_and_drop_an_empty_input_paragraph():
    t = pairs.DEFAULT_TEMPLATE
    assert pairs.render(t, "Add", "1 2") == "### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:\n"
    assert pairs.render(t, "Add") == "### Instruction:\nAdd\n\n### Response:\n"
    assert pairs.render("{{x}} {instruction}: {response}", "{input}") == "{x} {input}: "  # braces; data is never a placeholder


def test_a_record_longer_than_the_block_is_an_error_unless_truncated(tmp_path):
    with pytest.raises(MakemoreError, match=r"record 3 is 8 tokens, more than the block size \(6\); use `truncate`"):
        prepare(tmp_path, block_size=6)
    wide = prepare(tmp_path, block_size=1024)  # a fine-tuned model's block: rows stay as wide as the longest record
    assert wide.block_size == 1024 and wide.splits["train"].x.shape[1] == 8
    ds = prepare(tmp_path, block_size=6, options={"truncate": True})
    assert ds.block_size == 6 and ds.record()["truncate"] is True
    with pytest.raises(MakemoreError, match="record 1 is .* shorten its prompt"):
        prepare(tmp_path, [{"prompt": "abcabc", "response": "a"}] * 10, block_size=6, options={"truncate": True})


def test_auto_mode_reads_json_files_as_pairs_and_pairs_options_belong_to_pairs(tmp_path):
    ds = data.prepare(write(tmp_path / "qa.json", RECORDS, jsonl=False))
    assert ds.kind == "pairs" and ds.record()["template"] == pairs.DEFAULT_TEMPLATE and len(ds.splits["train"]) == 10
    (tmp_path / "w.txt").write_text("\n".join(r["prompt"] for r in RECORDS) + "\n")
    with pytest.raises(MakemoreError, match="`template`: an option of pairs mode; .* is read in lines mode"):
        data.prepare(tmp_path / "w.txt", options={"template": SHORT})
    txt = tmp_path / "qa.txt"
    txt.write_text((tmp_path / "qa.json").read_text())
    assert data.prepare(txt, mode="pairs").kind == "pairs"


def test_a_bpe_tokenizer_and_every_model_type_train_on_pairs(tmp_path):
    tok = tokenizer.train(["abc=cba bca=acb " * 20], vocab_size=256 + 8, special=["<|endoftext|>"], min_frequency=1)
    ds = data.prepare(write(tmp_path / "qa.jsonl", RECORDS), tok=tok, options={"template": SHORT})
    assert ds.tokenizer is tok and ds.splits["train"].y.ne(IGNORE).sum() > 0
    for model_type in models.MODELS:
        config = models.make_config(model_type, tok.vocab_size, ds.block_size, "pairs")
        model = models.build(model_type, config)
        x, y, pos = ds.splits["train"].batch(4, torch.Generator().manual_seed(0), pack=model.packs)
        logits = model(x) if pos is None else model(x, pos=pos)
        assert torch.isfinite(loss_fn(logits, y)), model_type


def test_the_run_records_the_template_and_sample_eval_and_resume_use_it(tmp_path):
    path = write(tmp_path / "qa.jsonl", RECORDS)
    (tmp_path / "t.txt").write_text(SHORT + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(path), "--template", str(tmp_path / "t.txt"), "--set", "n_layer=1", "--set",
                                 "n_embd=16", "--max-steps", "20", "--eval-interval", "10", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "pairs mode (a JSON file of records)" in result.output
    model = makemore.load(tmp_path / "run")
    assert model.training.data["template"] == SHORT and model.training.data["mode"] == "pairs"
    out = model.generate(2, prompt="ab", temperature=0, max_new_tokens=3)
    assert [o.row["ended"] for o in out] == ["length", "length"] or all(o.row["ended"] in ("end", "length") for o in out)
    assert model.evaluate()["items"] == 1 and model.evaluate(path)["items"] == len(RECORDS)
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--max-steps", "30"])
    assert result.exit_code == 0, result.output
    assert makemore.load(tmp_path / "run").training.data["template"] == SHORT
    result = runner.invoke(app, ["sample", "-c", str(tmp_path / "run"), "--prompt", "abc", "--temperature", "0", "--json"])
    assert json.loads(result.stdout)[0]["prompt"] == "abc"
    result = runner.invoke(app, ["sample", "-c", str(tmp_path / "run"), "--min-len", "3"])
    assert result.exit_code == 2 and "--min-len: a lines-mode option" in result.output


@pytest.mark.slow
def test_a_small_transformer_answers_instructions_about_words_it_never_saw(tmp_path):
    """Reverse and uppercase made-up words (of syllables), the next letter: trained from scratch on the
    CPU, greedy answers to the held-out words' prompts are exact at least 90% of the time. The
    budget is the smallest that passed on every seed tried (docs/performance.md, instructions)."""
    train, test = instructions.make(n_train=500, n_test=40, seed=0)
    instructions.write(tmp_path / "qa.jsonl", train)
    model = makemore.train(tmp_path / "qa.jsonl", out=tmp_path / "run", template=SHORT, max_steps=400, eval_interval=400,
                           lr=3e-3, batch_size=32, options={"n_layer": 2, "n_embd": 64, "n_head": 4, "dropout": 0.0})
    assert len(test) == 80 and not {r["prompt"] for r in test} & {r["prompt"] for r in train}
    assert instructions.accuracy(model, test) >= 0.9
