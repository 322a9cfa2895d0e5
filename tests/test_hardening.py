"""Bad input, table-driven, through the real CLI: each case gets exit code 2, exactly one line on
stderr naming the input and what is wrong, no traceback, and no file created or changed.
Then unusual-but-valid inputs, each with the behaviour a user would expect."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import tokenizer
from makemore.cli import app as makemore_app
from tests.conftest import edit_safetensors, set_meta, toy_items
from tokenizer.cli import app as tokenizer_app
from tokenizer.export import export

runner = CliRunner()
QUICK = ["--type", "bigram", "--max-steps", "5", "--eval-interval", "5"]


def snapshot(root: Path) -> dict:
    """Every file and folder under `root`: content hash, size and mode (mtime would be too fragile)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), digest)
    return out


def check_one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert len(lines[0]) < 500, f"the message echoes too much: {len(lines[0])} characters"
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with good inputs (data, a checkpoint, a tokenizer) and bad ones, shared by the cases."""
    root = tmp_path_factory.mktemp("world")
    (root / "toy.txt").write_text("\n".join(toy_items(200)) + "\n")
    result = runner.invoke(makemore_app, ["train", str(root / "toy.txt"), *QUICK, "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    good = (root / "run" / "model.safetensors").read_bytes()
    files = {
        "empty.txt": b"",
        "blank.txt": b"  \n\n\t\n",
        "binary.txt": b"\x89PNG\x00\x00" * 10,
        "latin1.txt": b"ok\n" * 3 + b"caf\xe9\n" + b"ok\n" * 10,
        "utf16.txt": "\n".join(toy_items(20)).encode("utf-16"),
        "utf16le.txt": "\n".join(toy_items(20)).encode("utf-16-le"),
        "two.txt": b"one\ntwo\n",
        "longline.txt": ("\n".join(toy_items(50)) + "\n" + "x" * 3000 + "\n").encode(),
        "short-text.txt": b"To be, or not to be, that is the question.\n",
        "unseen.txt": "\n".join(["xyzzy"] * 12).encode(),
        "mixed.txt": b"kari\nxyzzy\nmoto\n",
        "plain.txt": b"not a checkpoint at all",
        "truncated.safetensors": good[: len(good) // 2],
        "cut-header.safetensors": good[:40],
        "pickle.pt": b"\x80\x04\x95" + b"\x00" * 40,
        "tok-notjson.json": b'{"format": "makemore-bpe", "version": 1, "merg',
        "tok-v9.json": json.dumps({"type": "bpe", "format": "makemore-bpe", "version": 9, "pattern": "gpt4", "merges": []}).encode(),
        "tok-badregex.json": tok_json(pattern="custom", regex="(unclosed"),
        "tok-emptyregex.json": tok_json(pattern="custom", regex=""),
        "tok-deep.json": b"[" * 100_000 + b"]" * 100_000,
        "tok-emptyspecial.json": tok_json(special={"": 256}),
        "tok-boolid.json": tok_json(merges=[[True, 97]]),
        "tok-floatid.json": tok_json(special={"<|endoftext|>": 256.0}),
        "corpus.txt": b"the cat sat on the mat.\nthe dog sat on the log!\n" * 20,
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
    torch.save({"a": torch.zeros(2)}, root / "real-pickle.pt")
    for kind, edit in METADATA_EDITS.items():
        (root / f"meta-{kind}.safetensors").write_bytes(edit_safetensors(good, edit))
    (root / "deep.safetensors").write_bytes(deep_header())
    tokenizer.train(root / "corpus.txt", vocab_size=280).save(root / "tok-noeot.json")
    tokenizer.train(root / "corpus.txt", vocab_size=280, special=["<|endoftext|>"]).save(root / "tok.json")
    export(tokenizer.load(root / "tok.json"), "huggingface", root / "hf.json")
    hf = json.loads((root / "hf.json").read_text())
    for kind, edit in HF_EDITS.items():
        broken = json.loads(json.dumps(hf))
        edit(broken)
        (root / f"hf-{kind}.json").write_text(json.dumps(broken))
    shutil.copytree(root / "run", root / "cmpdone" / "bigram")
    (root / "nometrics").mkdir()
    (root / "nometrics" / "metrics.jsonl").write_text('{"step": 10, "train_loss": 2.0}\n{"step": "x"}\n')
    (root / "afile").write_text("x")
    (root / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n')
    (root / "bad-template.txt").write_text("{question} {response}")
    (root / "template.txt").write_text("{instruction}={response}")
    (root / "adir").mkdir()
    (root / "ckdir" / "model.safetensors").mkdir(parents=True)
    os.mkfifo(root / "fifo")
    return root


def tok_json(**changes) -> bytes:
    d = {"type": "bpe", "format": "makemore-bpe", "version": 2, "pattern": "gpt2", "regex": None, "merges": [],
         "special": {}} | changes
    return json.dumps(d).encode()


def set_training(value):
    return set_meta("training", json.dumps(value))


METADATA_EDITS = {
    "version": set_meta("format_version", "99"),
    "notobject": lambda h: h.__setitem__("__metadata__", ["makemore"]),
    "training-null": set_training(None),
    "training-list": set_training([1, 2]),
    "training-data5": set_training({"step": 5, "data": 5}),
    "training-noseed": set_training({"step": 5, "data": {"name": "x", "path": "x", "sha256": "0" * 64}}),
    "training-notjson": set_meta("training", "{oops"),
    "type-gpt": set_meta("model_type", "gpt"),
    "negative": set_meta("model_config", json.dumps({"vocab_size": -3, "block_size": 12})),
    "vocab-mismatch": set_meta("model_config", json.dumps({"vocab_size": 99, "block_size": 12})),
    "no-format": set_meta("format", "other"),
}


HF_EDITS = {
    "merges-null": lambda d: d["model"].__setitem__("merges", None),
    "merges-number": lambda d: d["model"].__setitem__("merges", 5),
    "merges-missing": lambda d: d["model"].pop("merges"),
    "merge-number": lambda d: d["model"]["merges"].__setitem__(0, 7),
    "vocab-list": lambda d: d["model"].__setitem__("vocab", list(d["model"]["vocab"])),
    "vocab-floatid": lambda d: d["model"]["vocab"].__setitem__("a", 97.5),
    "added-noid": lambda d: d["added_tokens"][0].pop("id"),
    "added-notlist": lambda d: d.__setitem__("added_tokens", {"<|endoftext|>": 279}),
}


def deep_header() -> bytes:
    raw = b'{"__metadata__": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


M, T = "makemore", "tokenizer"
CASES = [
    # data files
    (M, ["train", "empty.txt", *QUICK], ["empty.txt", "empty file"]),
    (M, ["train", "blank.txt", *QUICK], ["blank.txt", "empty file"]),
    (M, ["train", "binary.txt", *QUICK], ["binary.txt", "binary file"]),
    (M, ["train", "latin1.txt", *QUICK], ["latin1.txt", "not UTF-8 text (bad byte at line 4"]),
    (M, ["train", "utf16.txt", *QUICK], ["utf16.txt", "looks like UTF-16"]),
    (M, ["train", "utf16le.txt", *QUICK], ["utf16le.txt", "looks like UTF-16"]),
    (M, ["train", "two.txt", *QUICK], ["two.txt", "only 2 items"]),
    (M, ["train", "missing.txt", *QUICK], ["missing.txt", "no such file"]),
    (M, ["train", "adir", *QUICK], ["adir", "is a directory"]),
    (M, ["train", "fifo", *QUICK], ["fifo", "not a regular file"]),
    (M, ["train", "/dev/zero", *QUICK], ["/dev/zero", "not a regular file"]),
    (M, ["train", "longline.txt", "--mode", "lines", *QUICK], ["longline.txt", "line 51 is 3,000 tokens", "--mode text"]),
    (M, ["train", "toy.txt", "--block-size", "3", "--mode", "lines", *QUICK], ["toy.txt: line", "longer than --block-size 3"]),
    (M, ["train", "short-text.txt", "--mode", "text", *QUICK], ["short-text.txt", "block size (128)"]),
    (M, ["train", "toy.txt", "--mode", "prose", *QUICK], ["--mode 'prose'", "lines, text, pairs, auto"]),
    (M, ["train", "toy.txt", "--block-size", "0", *QUICK], ["--block-size 0"]),
    (M, ["train", "bad.jsonl", *QUICK], ["bad.jsonl: record 2 (line 2): field \"response\" is missing"]),
    (M, ["train", "bad.jsonl", "--template", "bad-template.txt", *QUICK], ["--template bad-template.txt: unknown placeholder {question}"]),
    (M, ["train", "toy.txt", "--template", "template.txt", *QUICK], ["--template: an option of pairs mode", "lines mode"]),
    (M, ["train", "toy.txt", "--block-size", "1000000000", *QUICK], ["--block-size 1000000000"]),
    # training options
    (M, ["train", "toy.txt", "--type", "gpt"], ["unknown model type 'gpt'; choose one of: bigram"]),
    (M, ["train", "toy.txt", "--max-steps", "0"], ["--max-steps 0: must be at least 1"]),
    (M, ["train", "toy.txt", "--max-steps", "abc"], ["'--max-steps'", "integer"]),
    (M, ["train", "toy.txt", "--batch-size", "-4"], ["--batch-size -4"]),
    (M, ["train", "toy.txt", *QUICK, "--batch-size", "100000000000"], ["--batch-size", "PiB of memory"]),
    (M, ["train", "toy.txt", "--eval-interval", "0"], ["--eval-interval 0"]),
    (M, ["train", "toy.txt", "--lr", "0"], ["--lr 0.0: must be a positive number"]),
    (M, ["train", "toy.txt", "--lr", "nan"], ["--lr nan"]),
    (M, ["train", "toy.txt", "--lr", "inf"], ["--lr inf"]),
    (M, ["train", "toy.txt", "--max-seconds", "nan"], ["--max-seconds nan"]),
    (M, ["train", "toy.txt", "--max-seconds", "-1"], ["--max-seconds -1"]),
    (M, ["train", "toy.txt", "--seed", "100000000000000000000000"], ["--seed 100000000000000000000000"]),
    (M, ["train", "toy.txt", "--seed", "-1"], ["--seed -1"]),
    (M, ["train", "toy.txt", "--set", "n_layer"], ["expected key=value"]),
    (M, ["train", "toy.txt", "--set", "depth=3"], ["has no option 'depth'"]),
    (M, ["train", "toy.txt", "--set", "n_layer=two"], ["n_layer='two': expected an integer"]),
    (M, ["train", "toy.txt", "--set", "n_head=3"], ["must divide by n_head=3"]),
    (M, ["train", "toy.txt", "--set", "dropout=nan"], ["dropout=nan: must be a finite number"]),
    (M, ["train", "toy.txt", "--set", "dropout=1.5"], ["dropout=1.5"]),
    (M, ["train", "toy.txt", "--set", "n_embd=4000000"], ["transformer", "of memory"]),
    (M, ["train", "toy.txt", "--set", "n_embd=100000000"], ["n_embd=100000000: absurdly large"]),
    (M, ["train", "toy.txt", "--device", "tpu"], ["--device 'tpu'"]),
    # outputs and tokenizers given to train
    (M, ["train", "toy.txt", *QUICK, "--out", "afile"], ["afile: is a file, not a run folder"]),
    (M, ["train", "toy.txt", *QUICK, "--out", "afile/run"], ["afile is a file, not a folder"]),
    (M, ["train", "toy.txt", *QUICK, "--out", "ckdir"], ["model.safetensors: is a directory"]),
    (M, ["train", "toy.txt", *QUICK, "--tokenizer", "nope.json"], ["nope.json: no such tokenizer file"]),
    (M, ["train", "toy.txt", *QUICK, "--tokenizer", "tok-notjson.json"], ["tok-notjson.json", "not valid JSON"]),
    (M, ["train", "toy.txt", *QUICK, "--tokenizer", "tok-noeot.json"], ["tok-noeot.json", "no <|endoftext|>"]),
    # checkpoints
    (M, ["sample", "-c", "plain.txt"], ["plain.txt", "not a safetensors checkpoint"]),
    (M, ["sample", "-c", "truncated.safetensors"], ["truncated.safetensors", "damaged checkpoint"]),
    (M, ["eval", "-c", "cut-header.safetensors"], ["cut-header.safetensors", "header runs past the end"]),
    (M, ["info", "pickle.pt"], ["pickle.pt", "not a safetensors checkpoint"]),
    (M, ["info", "real-pickle.pt"], ["real-pickle.pt", "not a safetensors checkpoint"]),
    (M, ["info", "meta-version.safetensors"], ["meta-version.safetensors", "format version '99'; this makemore reads version 1"]),
    (M, ["info", "meta-notobject.safetensors"], ["meta-notobject.safetensors", "__metadata__ is not an object"]),
    (M, ["info", "meta-no-format.safetensors"], ["meta-no-format.safetensors", "not a makemore checkpoint"]),
    (M, ["info", "meta-training-null.safetensors"], ["meta-training-null.safetensors", "training is not an object"]),
    (M, ["sample", "-c", "meta-training-list.safetensors"], ["meta-training-list.safetensors", "training is not an object"]),
    (M, ["eval", "-c", "meta-training-data5.safetensors"], ["meta-training-data5.safetensors", "training.data is not an object"]),
    (M, ["eval", "-c", "meta-training-noseed.safetensors"], ["meta-training-noseed.safetensors", "split_seed"]),
    (M, ["info", "meta-training-notjson.safetensors"], ["meta-training-notjson.safetensors", "training is not JSON"]),
    (M, ["info", "meta-type-gpt.safetensors"], ["meta-type-gpt.safetensors", "unknown model type 'gpt'"]),
    (M, ["info", "meta-negative.safetensors"], ["meta-negative.safetensors", "vocab_size=-3"]),
    (M, ["info", "meta-vocab-mismatch.safetensors"], ["meta-vocab-mismatch.safetensors", "tokenizer has 11 tokens but its model 99"]),
    (M, ["info", "deep.safetensors"], ["deep.safetensors", "nested too deeply"]),
    (M, ["info", "gone.safetensors"], ["gone.safetensors: no such checkpoint"]),
    (M, ["info", "adir"], ["no such checkpoint"]),
    # sampling, scoring, evaluating
    (M, ["sample", "-c", "run", "--temperature", "nan"], ["--temperature nan"]),
    (M, ["sample", "-c", "run", "--temperature", "-0.5"], ["--temperature -0.5: must be 0 (greedy) or more"]),
    (M, ["sample", "-c", "run", "--top-k", "0"], ["--top-k 0: must be at least 1"]),
    (M, ["sample", "-c", "run", "--top-p", "0"], ["--top-p 0.0"]),
    (M, ["sample", "-c", "run", "--top-p", "1.5"], ["--top-p 1.5"]),
    (M, ["sample", "-c", "run", "--min-p", "2"], ["--min-p 2.0"]),
    (M, ["sample", "-c", "run", "--repetition-penalty", "0"], ["--repetition-penalty 0.0: must be a positive number"]),
    (M, ["sample", "-c", "run", "--stop", "a"], ["--stop: a text-mode option", "lines-mode model"]),
    (M, ["chat", "-c", "run", "--json"], ["--json: only with --once"]),
    (M, ["chat", "-c", "run", "--once", "ka", "--stop", ""], ["--stop: a stop sequence must not be empty"]),
    (M, ["chat", "-c", "run", "--once", "kaz"], ["message 'kaz': character 'z' is not in the tokenizer's vocabulary"]),
    (M, ["chat", "-c", "run", "--once", "ka"], ["the prompt template (the default: the model was not trained in pairs mode): character"]),
    (M, ["sample", "-c", "run", "-n", "0"], ["-n 0: must be from 1 to 100,000"]),
    (M, ["sample", "-c", "run", "-n", "1000000000"], ["-n 1000000000"]),
    (M, ["sample", "-c", "run", "--prompt", "kaz"], ["--prefix 'kaz': character 'z' is not in the tokenizer's vocabulary"]),
    (M, ["sample", "-c", "run", "--max-len", "0"], ["--max-len 0"]),
    (M, ["sample", "-c", "run", "--min-len", "5", "--max-len", "3"], ["--max-len 3", "--min-len (5)"]),
    (M, ["sample", "-c", "run", "--seed", "100000000000000000000000"], ["--seed 100000000000000000000000"]),
    (M, ["eval", "unseen.txt", "-c", "run"], ["unseen.txt: line 1", "'x' is not in the tokenizer's vocabulary"]),
    (M, ["eval", "binary.txt", "-c", "run"], ["binary.txt", "binary file"]),
    (M, ["score", "-c", "run", "kazoo"], ["argument 1", "'z' is not in the tokenizer's vocabulary"]),
    (M, ["score", "-c", "run", "--file", "mixed.txt"], ["mixed.txt:2", "'x'"]),
    (M, ["compare", "toy.txt", "--types", ","], ["--types: name at least one model type"]),
    (M, ["compare", "toy.txt", "--types", "mlp,gpt"], ["unknown model type 'gpt'"]),
    # the tokenizer command
    (T, ["train", "missing.txt"], ["missing.txt: no such corpus"]),
    (T, ["train", "corpus.txt", "-o", "adir"], ["adir: is a directory"]),
    (T, ["train", "corpus.txt", "-o", "afile/tok.json"], ["afile is a file, not a folder"]),
    (T, ["train", "corpus.txt", "-o", "corpus.txt"], ["corpus.txt: is also an input"]),
    (T, ["train", "corpus.txt", "--vocab-size", "100", "-o", "x.json"], ["--vocab-size 100"]),
    (T, ["train", "corpus.txt", "--vocab-size", "1000000000", "-o", "x.json"], ["absurdly large"]),
    (T, ["train", "corpus.txt", "--pattern", "gpt5", "-o", "x.json"], ["unknown pattern 'gpt5'"]),
    (T, ["train", "corpus.txt", "--special", "", "-o", "x.json"], ["special token cannot be empty"]),
    (T, ["train", "corpus.txt", "--min-frequency", "0", "-o", "x.json"], ["--min-frequency 0"]),
    (T, ["train", "utf16.txt", "-o", "x.json"], ["utf16.txt", "looks like UTF-16"]),
    (T, ["train", "latin1.txt", "-o", "x.json"], ["latin1.txt", "not UTF-8"]),
    (T, ["train", "fifo", "-o", "x.json"], ["fifo", "not a regular file"]),
    (T, ["encode", "-t", "tok.json", "--file", "latin1.txt"], ["latin1.txt", "not UTF-8"]),
    (T, ["encode", "-t", "missing.json", "x"], ["missing.json: no such tokenizer file"]),
    (T, ["encode", "-t", "tok-v9.json", "x"], ["tok-v9.json", "format version 9; this tokenizer reads versions 1 and 2"]),
    (T, ["encode", "-t", "tok-badregex.json", "x"], ["tok-badregex.json", "regex does not compile"]),
    (T, ["encode", "-t", "tok-emptyregex.json", "x"], ["tok-emptyregex.json", "do not cover the text"]),
    (T, ["encode", "-t", "tok-deep.json", "x"], ["tok-deep.json", "nested too deeply"]),
    (T, ["encode", "-t", "tok-emptyspecial.json", "x"], ["tok-emptyspecial.json", "must be a non-empty string"]),
    (T, ["encode", "-t", "tok-boolid.json", "x"], ["tok-boolid.json", "merge 0 is [True, 97]"]),
    (T, ["encode", "-t", "tok-floatid.json", "x"], ["tok-floatid.json", "has id 256.0"]),
    (T, ["decode", "-t", "tok.json", "12", "x3"], ["token id 'x3' is not an integer"]),
    (T, ["decode", "-t", "tok.json", "99999"], ["token id 99999 is outside the vocabulary"]),
    (T, ["stats", "-t", "tok.json", "corpus.txt", "--top", "-3"], ["--top -3"]),
    (T, ["export", "-t", "tok.json", "-o", "tok.json"], ["tok.json: is also an input"]),
    (T, ["export", "-t", "tok.json", "-o", "adir"], ["adir: is a directory"]),
    (T, ["export", "-t", "tok.json", "--format", "bogus", "-o", "x.out"], ["--format 'bogus'"]),
    # issue 19: outputs over inputs and over a run's files (one rule, in check_output)
    (M, ["plot", "run", "-o", "run/model.safetensors"], ["run/model.safetensors", "belongs to the training run in run"]),
    (M, ["plot", "run", "-o", "run/metrics.jsonl"], ["run/metrics.jsonl", "belongs to the training run"]),
    (M, ["plot", "run", "-o", "run/last.safetensors"], ["run/last.safetensors", "belongs to the training run"]),
    (M, ["plot", "run", "-o", "toy.txt"], ["toy.txt: already holds a text file, not a plot"]),
    (M, ["plot", "run", "-o", "tok.json"], ["tok.json: already holds a json file, not a plot"]),
    (M, ["plot", "run", "-o", "truncated.safetensors"], ["truncated.safetensors: already holds a safetensors file"]),
    (M, ["compare", "toy.txt", "--types", "mlp,bigram", "--out", "cmpdone"], ["cmpdone/bigram: already holds a trained model"]),
    (T, ["train", "corpus.txt", "-o", "run/model.safetensors"], ["run/model.safetensors", "belongs to the training run"]),
    (T, ["train", "corpus.txt", "-o", "toy.txt"], ["toy.txt: already holds a text file, not a tokenizer file"]),
    (T, ["export", "-t", "tok.json", "-o", "run/metrics.jsonl"], ["run/metrics.jsonl", "belongs to the training run"]),
    (T, ["export", "-t", "tok.json", "--format", "tiktoken", "-o", "hf.json"], ["hf.json: already holds a json file"]),
    (T, ["import", "--huggingface", "hf.json", "-o", "toy.txt"], ["toy.txt: already holds a text file"]),
    (M, ["train", "toy.txt", "--init-from", "run", "--out", "cmpdone/bigram"], ["cmpdone/bigram: already holds a trained model"]),
    (M, ["train", "toy.txt", "--init-from", "run", "--out", "run", "--overwrite"], ["run/model.safetensors: is also an input"]),
    # --resume honours or refuses
    (M, ["train", "--resume", "run", "--lr", "0.1"], ["cannot change --lr", "only --max-steps, --max-seconds and --device"]),
    (M, ["train", "--resume", "run", "--seed", "3"], ["cannot change --seed"]),
    (M, ["train", "--resume", "run", "--batch-size", "4"], ["cannot change --batch-size"]),
    (M, ["train", "--resume", "run", "--eval-interval", "7"], ["cannot change --eval-interval"]),
    (M, ["train", "--resume", "run", "--out", "elsewhere"], ["cannot change --out"]),
    (M, ["train", "--resume", "run", "--early-stop", "2"], ["cannot change --early-stop"]),
    (M, ["train", "--resume", "run", "--deterministic"], ["cannot change --deterministic"]),
    (M, ["train", "--resume", "run", "--lr", "0.1", "--seed", "2"], ["cannot change --lr, --seed"]),
    (M, ["train", "--resume", "run", "--max-steps", "5"], ["--max-steps 5: the run in run is already at step 5"]),
    (M, ["train", "--resume", "run", "--max-steps", "3"], ["--max-steps 3", "already at step 5"]),
    # importers validate every field; options that do not apply are refused
    (T, ["import", "--huggingface", "hf-merges-null.json", "-o", "x.json"], ["hf-merges-null.json", "model.merges is NoneType"]),
    (T, ["import", "--huggingface", "hf-merges-number.json", "-o", "x.json"], ["hf-merges-number.json", "model.merges is int"]),
    (T, ["import", "--huggingface", "hf-merges-missing.json", "-o", "x.json"], ["hf-merges-missing.json", "no merge in model.merges makes"]),
    (T, ["import", "--huggingface", "hf-merge-number.json", "-o", "x.json"], ["hf-merge-number.json", "model.merges[0] is 7"]),
    (T, ["import", "--huggingface", "hf-vocab-list.json", "-o", "x.json"], ["hf-vocab-list.json", "model.vocab is list"]),
    (T, ["import", "--huggingface", "hf-vocab-floatid.json", "-o", "x.json"], ["hf-vocab-floatid.json", "model.vocab['a'] is 97.5"]),
    (T, ["import", "--huggingface", "hf-added-noid.json", "-o", "x.json"], ["hf-added-noid.json", "added_tokens[0]", "no integer id"]),
    (T, ["import", "--huggingface", "hf-added-notlist.json", "-o", "x.json"], ["hf-added-notlist.json", "added_tokens is dict"]),
    (T, ["import", "--huggingface", "hf.json", "--pattern", "gpt2", "-o", "x.json"], ["--pattern: only for --tiktoken"]),
    (T, ["import", "--huggingface", "hf.json", "--special", "<|x|>=5", "-o", "x.json"], ["--special: only for --tiktoken"]),
    (T, ["import", "gpt2", "--pattern", "gpt2", "-o", "x.json"], ["--pattern: only for --tiktoken", "a named encoding"]),
    # plot and info read what the tool writes; paths named as given
    (M, ["plot", "nothere", "-o", "x.png"], ["nothere: no such run folder"]),
    (M, ["plot", "nothere/deeper", "-o", "x.png"], ["nothere/deeper: no such run folder"]),
    (M, ["plot", "nometrics", "-o", "x.png"], ["nometrics/metrics.jsonl: no evaluation with a val loss"]),
    (M, ["plot", "adir", "-o", "x.png"], ["adir: no metrics.jsonl"]),
    # sampling numerics
    (M, ["sample", "-c", "run", "--min-len", "500"], ["--min-len 500: none of", "samples was that long"]),
    (M, ["sample", "-c", "run", "--prefix", "kakaka", "--max-len", "3"], ["--prefix is 6 characters, more than --max-len 3"]),
    # text as promised: unseen characters named with their line
    (M, ["eval", "mixed.txt", "-c", "run"], ["mixed.txt: line 2: character 'x'"]),
    # the token cache and bounded evaluation
    (M, ["train", "toy.txt", *QUICK, "--mode", "text", "--cache-dir", "toy.txt"], ["--cache-dir toy.txt: is a file, not a folder"]),
    (M, ["eval", "-c", "run", "--limit", "0"], ["--limit 0: must be at least 1"]),
    (M, ["train", "toy.txt", *QUICK, "--test-items", "0"], ["--test-items 0: must be at least 1"]),
    # sizes, and messages that never echo a whole input
    (M, ["train", "toy.txt", *QUICK, "--type", "mlp", "--set", "context=100000"], ["training this mlp", "of memory"]),
    (M, ["train", "toy.txt", "--set", "n_layer=" + "9" * 5000], ["n_layer=", "more characters)"]),
    (M, ["sample", "-c", "run", "--prompt", "z" * 5000], ["--prefix 'zzz", "more characters)"]),
    (M, ["score", "-c", "run", "ka" * 3000 + "z"], ["argument 1", "more characters)"]),
    (M, ["train", "toy.txt", "--type", "g" * 5000], ["unknown model type 'ggg", "more characters)"]),
    (T, ["decode", "-t", "tok.json", "9" * 5000], ["token id '9999", "too large (5,000 digits)"]),
    (T, ["decode", "-t", "tok.json", "x" * 5000], ["token id 'xxx", "is not an integer"]),
]


@pytest.mark.parametrize("tool, args, fragments", CASES, ids=[" ".join(c[1])[:60] for c in CASES])
def test_bad_input_is_one_line_and_exit_2_and_changes_nothing(world, monkeypatch, tool, args, fragments):
    monkeypatch.chdir(world)
    before = snapshot(world)
    result = runner.invoke(makemore_app if tool == M else tokenizer_app, args)
    check_one_line_error(result, *fragments)
    assert snapshot(world) == before


def test_there_are_enough_cases():
    assert len(CASES) >= 150


def test_stdin_that_is_not_utf8_is_refused_like_a_file(world, monkeypatch):
    monkeypatch.chdir(world)
    result = runner.invoke(tokenizer_app, ["encode", "-t", "tok.json"], input=b"caf\xe9\n")
    check_one_line_error(result, "standard input", "not UTF-8 text (bad byte at line 1, byte offset 3")
    good = runner.invoke(tokenizer_app, ["encode", "-t", "tok.json", "--json"], input="café\n".encode())
    assert json.loads(good.stdout) == tokenizer.load(world / "tok.json").encode("café\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_output_folder(world, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    result = runner.invoke(makemore_app, ["train", str(world / "toy.txt"), *QUICK, "--out", str(ro / "run")])
    check_one_line_error(result, "is not writable")
    result = runner.invoke(tokenizer_app, ["train", str(world / "corpus.txt"), "-o", str(ro / "t.json")])
    check_one_line_error(result, "is not writable")


# unusual but valid


def test_brackets_in_paths_are_printed_as_they_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("names[v2].txt").write_text("\n".join(toy_items(100)))
    result = runner.invoke(makemore_app, ["train", "names[v2].txt", *QUICK])
    assert result.exit_code == 0 and "checkpoints/names[v2]-bigram/model.safetensors" in result.stdout
    result = runner.invoke(makemore_app, ["train", "names[v2].txt", *QUICK, "--out", "runs/a[/b]"])
    assert result.exit_code == 0 and "runs/a[/b]/model.safetensors" in result.stdout
    result = runner.invoke(tokenizer_app, ["train", "names[v2].txt", "--vocab-size", "260", "-o", "tok[v2].json"])
    assert result.exit_code == 0 and "wrote tok[v2].json" in result.stdout


def test_written_files_get_the_mode_open_would_give(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("toy.txt").write_text("\n".join(toy_items(100)))
    old = os.umask(0o022)
    try:
        assert runner.invoke(makemore_app, ["train", "toy.txt", *QUICK, "--out", "run"]).exit_code == 0
        assert runner.invoke(tokenizer_app, ["train", "toy.txt", "--vocab-size", "260", "-o", "t.json"]).exit_code == 0
        assert stat.S_IMODE(os.stat("run/model.safetensors").st_mode) == 0o644
        assert stat.S_IMODE(os.stat("t.json").st_mode) == 0o644
        os.chmod("t.json", 0o640)
        assert runner.invoke(tokenizer_app, ["train", "toy.txt", "--vocab-size", "260", "-o", "t.json"]).exit_code == 0
        assert stat.S_IMODE(os.stat("t.json").st_mode) == 0o640  # re-saving keeps the file's mode
    finally:
        os.umask(old)


def test_compare_trains_a_repeated_type_once_and_latest_finds_its_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("toy.txt").write_text("\n".join(toy_items(100)))
    result = runner.invoke(makemore_app, ["compare", "toy.txt", "--types", "bigram,bigram", "--steps", "5",
                                          "--eval-interval", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["type"] for r in json.loads(result.stdout)] == ["bigram"]
    info = runner.invoke(makemore_app, ["info", "--json"])
    assert json.loads(info.stdout)["checkpoint"] == "checkpoints/compare-toy/bigram/model.safetensors"


def test_a_decomposed_prompt_is_normalised_like_the_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("fr.txt").write_text("\n".join(["françois", "garçon", "ça", "leçon"] * 5))
    assert runner.invoke(makemore_app, ["train", "fr.txt", *QUICK, "--out", "run"]).exit_code == 0
    result = runner.invoke(makemore_app, ["sample", "-c", "run", "-n", "2", "--prompt", "c\u0327", "--json"])
    assert result.exit_code == 0, result.output
    assert all(r["text"].startswith("\u00e7") for r in json.loads(result.stdout))


def test_usage_errors_from_typer_are_one_line(tmp_path):
    result = runner.invoke(makemore_app, ["sample", "--checkpoint"])
    check_one_line_error(result, "--checkpoint")


def test_score_goes_on_past_a_bad_string(world, monkeypatch):
    monkeypatch.chdir(world)
    result = runner.invoke(makemore_app, ["score", "-c", "run", "--file", "mixed.txt", "--json"])
    check_one_line_error(result, "mixed.txt:2")
    assert [r["text"] for r in json.loads(result.stdout)] == ["kari", "moto"]


def test_a_failed_atomic_write_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    from safeio.files import write_atomic

    target = tmp_path / "tok.json"
    target.write_bytes(b"old")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device", str(src))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError) as e:
        write_atomic(target, b"new contents")
    assert e.value.filename == str(target) and e.value.strerror == "No space left on device"  # not the temporary file
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["tok.json"]
