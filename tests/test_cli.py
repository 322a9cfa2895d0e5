"""The makemore command end to end through CliRunner, in a temporary folder."""

import io
import json

import pytest
from typer.testing import CliRunner

from makemore import checkpoint, data
from makemore.cli import app
from tests.conftest import edit_safetensors, set_meta, toy_items

runner = CliRunner()
TINY = ["--set", "n_layer=1", "--set", "n_embd=16", "--max-steps", "60", "--eval-interval", "30"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny transformer trained on the toy language: (folder, data file, checkpoint)."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "toy.txt"
    data.write_text("\n".join(toy_items(300)) + "\n")
    result = run("train", data, "--type", "transformer", *TINY, "--out", root / "run", "--json")
    assert result.exit_code == 0, result.output
    return root, data, root / "run" / "model.safetensors"


def test_train_reports_json_and_writes_checkpoint(trained):
    root, _, ckpt = trained
    assert ckpt.is_file()
    result = run("info", ckpt, "--json")
    info = json.loads(result.stdout)
    assert info["type"] == "transformer" and info["config"]["n_layer"] == 1
    assert info["training"]["step"] == 60 and info["training"]["data"]["items"] == {"train": 240, "val": 30, "test": 30}
    assert info["tokenizer"] == {"type": "char", "vocab_size": 11}
    table = run("info", ckpt).stdout
    assert "options     batch size 32, lr 0.001, ema 0.999, seed 1337" in table  # the table names the training options


def test_sample_json_marks_new_and_seen_and_is_seeded(trained):
    _, _, ckpt = trained
    a = json.loads(run("sample", "-c", ckpt, "-n", "8", "--seed", "3", "--json").stdout)
    b = json.loads(run("sample", "-c", ckpt, "-n", "8", "--seed", "3", "--json").stdout)
    assert a == b and len(a) == 8
    assert all(set(r) == {"text", "new", "logprob", "ended"} and r["logprob"] < 0 for r in a)
    assert all(set(r["text"]) <= set("kaurimotse") for r in a)
    train_items = set(data.split_items(toy_items(300), 1337)["train"])  # the real training split, rebuilt here
    many = json.loads(run("sample", "-c", ckpt, "-n", "200", "--seed", "3", "--temperature", "0.5", "--json").stdout)
    assert [r["new"] for r in many] == [r["text"] not in train_items for r in many]
    assert {r["new"] for r in many} == {True, False}  # both kinds occur, so the check above can fail either way


def test_greedy_sampling_and_prompt(trained):
    _, _, ckpt = trained
    rows = json.loads(run("sample", "-c", ckpt, "-n", "3", "--temperature", "0", "--prompt", "ka", "--json").stdout)
    assert len({r["text"] for r in rows}) == 1 and rows[0]["text"].startswith("ka")


def test_eval_on_test_split_and_on_file(trained):
    root, data, ckpt = trained
    split = json.loads(run("eval", "-c", ckpt, "--json").stdout)
    assert split["on"] == "test split" and split["items"] == 30
    assert 0 < split["loss"] < 2.4 and split["perplexity"] == pytest.approx(2.718281828 ** split["loss"])
    whole = json.loads(run("eval", data, "-c", ckpt, "--json").stdout)
    assert whole["on"] == "file" and whole["items"] == 300


def test_latest_checkpoint_is_used_when_none_is_named(trained, in_tmp):
    root, data, _ = trained
    result = run("train", data, "--type", "bigram", "--max-steps", "20", "--eval-interval", "10")
    assert result.exit_code == 0, result.output
    result = run("info")
    assert "checkpoints/toy-bigram/model.safetensors" in result.output and "bigram" in result.stdout


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1] and "Traceback" not in result.output, result.output
    err = errors[0]
    for f in fragments:
        assert f in err, err


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty file"),
        (b"   \n\n", "empty file"),
        (b"\x89PNG\x00\x00" * 10, "binary file"),
        (b"ab\nc\xffd\n" + b"x\n" * 20, "not UTF-8 text (bad byte at line 2"),
        (b"one\ntwo\n", "only 2 items"),
    ],
)
def test_bad_data_files(in_tmp, content, fragment):
    (in_tmp / "bad.txt").write_bytes(content)
    one_line_error(run("train", "bad.txt", "--max-steps", "5"), "bad.txt", fragment)
    assert not (in_tmp / "checkpoints").exists()


def test_missing_file_and_directory(in_tmp):
    one_line_error(run("train", "nope.txt"), "nope.txt: no such file")
    (in_tmp / "dir").mkdir()
    one_line_error(run("train", "dir"), "dir: is a directory")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--type", "gpt"], "unknown model type 'gpt'; choose one of: bigram"),
        (["--max-steps", "0"], "--max-steps 0: must be at least 1"),
        (["--batch-size", "-4"], "--batch-size -4: must be at least 1"),
        (["--lr", "0"], "--lr 0.0: must be a positive number"),
        (["--lr", "-1"], "--lr -1.0: must be a positive number"),
        (["--set", "n_layer"], "expected key=value"),
        (["--set", "depth=3"], "has no option 'depth'"),
        (["--set", "n_layer=two"], "n_layer='two': expected an integer"),
        (["--set", "n_head=3"], "must divide by n_head=3"),
        (["--device", "tpu"], "--device 'tpu'"),
    ],
)
def test_impossible_train_options(in_tmp, toy_file, args, fragment):
    one_line_error(run("train", toy_file, *args), fragment)
    assert not (in_tmp / "checkpoints").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--temperature", "-0.5"], "--temperature -0.5: must be 0 (greedy) or more"),
        (["--top-k", "0"], "--top-k 0: must be at least 1"),
        (["-n", "0"], "-n 0: must be from 1 to 100,000"),
        (["--prompt", "kaz"], "--prefix 'kaz': character 'z' is not in the tokenizer's vocabulary"),
    ],
)
def test_impossible_sample_options(trained, args, fragment):
    one_line_error(run("sample", "-c", trained[2], *args), fragment)


@pytest.mark.parametrize("args", [["--max-new-tokens", "5"], ["--no-stream"]])
def test_text_mode_options_are_refused_for_a_lines_model(trained, args):
    one_line_error(run("sample", "-c", trained[2], *args), args[0].replace("--no-stream", "--stream/--no-stream"), "a text-mode option")


def test_score_shows_no_table_when_every_string_fails(trained):
    result = run("score", "-c", trained[2], "kaz")
    one_line_error(result, "argument 1: string 'kaz'", "'z' is not in the tokenizer's vocabulary")
    assert result.stdout == ""


def test_no_checkpoint_yet(in_tmp):
    one_line_error(run("sample"), "no checkpoint in checkpoints/")


def damaged(tmp_path, good, kind):
    data = good.read_bytes()
    path = tmp_path / f"{kind}.safetensors"
    if kind == "text":
        path.write_text("hello, not a checkpoint")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "cut-header":
        path.write_bytes(data[:40])
    else:
        path.write_bytes(edit_safetensors(data, **EDITS[kind]))
    return path


def nan_first_tensor(header, body):
    """The first tensor's numbers all NaN (float32)."""
    start, end = next(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    return body[:start] + b"\x00\x00\xc0\x7f" * ((end - start) // 4) + body[end:]


EDITS = {
    "version": {"edit_header": set_meta("format_version", "99")},
    "entry-not-json": {"edit_header": set_meta("model_config", "{not json")},
    "nan": {"edit_body": nan_first_tensor},
}


@pytest.mark.parametrize(
    "kind, fragment",
    [
        ("text", "not a safetensors checkpoint"),
        ("truncated", "damaged checkpoint"),
        ("cut-header", "header runs past the end"),
        ("version", "checkpoint format version '99'; this makemore reads version 1"),
        ("entry-not-json", "damaged checkpoint (model_config is not JSON)"),
        ("nan", "holds NaN or infinite numbers"),
    ],
)
@pytest.mark.parametrize("command", ["sample", "eval", "info"])
def test_bad_checkpoints(trained, tmp_path, kind, fragment, command):
    path = damaged(tmp_path, trained[2], kind)
    args = [command, path] if command == "info" else [command, "-c", path]
    result = run(*args)
    one_line_error(result, path.name, fragment)
    assert result.stderr.count(path.name) == 1, result.stderr  # the file is named once


def test_missing_checkpoint(tmp_path):
    one_line_error(run("info", tmp_path / "gone.safetensors"), "gone.safetensors: no such checkpoint")


def test_eval_file_with_unseen_characters(trained, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("\n".join(["xyzzy"] * 12))
    one_line_error(run("eval", other, "-c", trained[2]), "other.txt", "'x' is not in the tokenizer's vocabulary")


def test_train_with_a_bpe_tokenizer(in_tmp, toy_file):
    import tokenizer

    tok = tokenizer.train(toy_file, vocab_size=280, special=["<|endoftext|>"])
    tok.save(in_tmp / "tok.json")
    result = run("train", toy_file, "--tokenizer", "tok.json", "--type", "gru", "--max-steps", "30", "--eval-interval", "15", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(run("info", "--json").stdout)
    assert info["tokenizer"] == {"type": "bpe", "vocab_size": tok.vocab_size}
    rows = json.loads(run("sample", "-n", "4", "--seed", "0", "--json").stdout)
    assert len(rows) == 4 and all(isinstance(r["text"], str) for r in rows)


def test_bpe_tokenizer_without_boundary_token(in_tmp, toy_file):
    import tokenizer

    tokenizer.train(toy_file, vocab_size=280).save(in_tmp / "tok.json")
    one_line_error(run("train", toy_file, "--tokenizer", "tok.json"), "tok.json: the tokenizer has no <|endoftext|>")


def test_compare_ranks_types_and_writes_report(in_tmp, toy_file):
    result = run("compare", toy_file, "--types", "bigram,mlp", "--steps", "40", "--eval-interval", "20", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["type"] for r in rows] == sorted(["bigram", "mlp"], key=lambda t: next(r["test_loss"] for r in rows if r["type"] == t))
    assert all(r["steps"] == 40 and r["parameters"] > 0 and r["steps_per_second"] > 0 for r in rows)
    folder = in_tmp / "checkpoints" / "compare-toy"
    table = (folder / "leaderboard.md").read_text()
    assert table.count("\n") == 4 and "| bigram |" in table and "| mlp |" in table
    try:
        import matplotlib  # noqa: F401 -- the optional `plot` extra
    except ImportError:
        assert not (folder / "loss_curves.png").exists()
        pytest.skip("matplotlib (the plot extra) is not installed: no PNG to check")
    assert (folder / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "mlp" / "model.safetensors").is_file()


def test_compare_of_runs_measures_each_on_one_split_as_eval_does(trained, tmp_path):
    root, data, ckpt = trained
    import tokenizer

    tokenizer.train(data, vocab_size=280, special=["<|endoftext|>"]).save(tmp_path / "tok.json")
    assert run("train", data, "--tokenizer", tmp_path / "tok.json", *TINY, "-o", tmp_path / "bpe", "--json").exit_code == 0
    result = run("compare", "--run", tmp_path / "bpe", "--run", root / "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["on"] == f"the test split of {tmp_path / 'bpe'}"  # the first run trained on data: both were, on one file
    rows = {r["run"]: r for r in report["runs"]}
    assert [r["bits_per_byte"] for r in report["runs"]] == sorted(r["bits_per_byte"] for r in report["runs"])
    assert rows[str(tmp_path / "bpe")]["tokenizer"] == "BPE 280" and rows[str(root / "run")]["tokenizer"].startswith("chars ")
    for path in (tmp_path / "bpe", root / "run"):
        alone = json.loads(run("eval", "-c", path, "--json").stdout)  # the same split and toy file: the same figures
        assert {k: rows[str(path)][k] for k in alone} == alone
    on_file = json.loads(run("compare", data, "--run", root / "run", "--all", "--json").stdout)
    assert on_file["on"] == f"{data} (lines mode)" and on_file["runs"][0]["items"] == 300


def test_compare_of_runs_refuses_training_options_and_runs_without_data(trained, tmp_path):
    root, _, _ = trained
    one_line_error(run("compare", "--run", root / "run", "--steps", "5"), "--run measures runs already trained", "--steps")
    one_line_error(run("compare", "--all"), "--all goes with --run")
    bare = checkpoint.load(root / "run")
    bare.training = checkpoint.TrainingRecord()  # as an imported model: no data
    checkpoint.save(bare, tmp_path / "imported" / checkpoint.FILENAME)
    one_line_error(run("compare", "--run", tmp_path / "imported"), "none of these runs was trained on data")


def test_compare_rejects_unknown_types(in_tmp, toy_file):
    one_line_error(run("compare", toy_file, "--types", "mlp,gpt"), "unknown model type 'gpt'")


def test_data_lists_the_built_in_sets_and_train_takes_them_by_name(in_tmp):
    listed = json.loads(run("data", "--json").stdout)["builtin"]
    assert [r["name"] for r in listed] == ["names", "shakespeare", "census"]
    assert all(r["bytes"] > 10_000 and r["licence"] and r["source"] for r in listed)
    result = run("train", "shakespeare", "--type", "bigram", "--max-steps", "10", "--eval-interval", "10", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint"] == "checkpoints/shakespeare-bigram/model.safetensors"
    assert "builtin:shakespeare: text mode" in result.stderr
    info = json.loads(run("info", "checkpoints/shakespeare-bigram", "--json").stdout)
    assert info["training"]["data"]["path"] == "builtin:shakespeare"
    assert run("eval", "-c", "checkpoints/shakespeare-bigram").exit_code == 0  # the test split, found again by name


def test_the_training_bar_follows_slow_steps_each_second_and_fast_ones_every_ten():
    from rich.console import Console

    from makemore.cli import training_progress
    from makemore.train import Step

    progress, track = training_progress(Console(file=io.StringIO()))
    on_event = track("run")
    fields = progress.tasks[0].fields
    for step in range(1, 10):  # fast: 10 ms apart, shown at the tenth
        on_event(Step(step, 2.0, 1e-3, step * 0.01, step / 100, 1.0, 64, 1))
    assert fields["step"] == 0
    on_event(Step(10, 1.5, 1e-3, 0.1, 0.1, 1.0, 64, 1))
    assert (fields["step"], fields["speed"]) == (10, "100")
    on_event(Step(11, 1.4, 1e-3, 2.1, 0.11, 1.0, 64, 1))  # a GPT-2 step: two seconds later, shown at once
    assert (fields["step"], fields["loss"], fields["speed"]) == (11, "1.400", "5.2")


def test_a_seeded_sample_keeps_the_thread_count_and_an_unseeded_one_is_tuned(trained, monkeypatch):
    from makemore import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert run("sample", "-c", trained[2], "-n", "2", "--seed", "1").exit_code == 0
    assert threads.decoding_tuner() is None  # float sums depend on the count: a seed keeps it
    for command in (["sample", "-c", trained[2], "-n", "2"], ["score", "-c", trained[2], toy_items(1)[0]]):
        threads.decoding = None
        assert run(*command).exit_code == 0
        assert threads.decoding_tuner().counts == (1, 2), command
    assert run("sample", "-c", trained[2], "-n", "2", "--threads", "2").exit_code == 0
    assert threads.decoding_tuner() is None
