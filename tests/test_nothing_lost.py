"""Nothing lost, nothing ignored: one writer per run folder, the best model never replaced by a worse
one whatever is killed when, resume from any folder, byte-identical deterministic runs, a full disk
named, output on terminals that cannot show a character, and the unusual-but-valid inputs of issue 19.
Subprocess tests run `python -m makemore` on this checkout, as a user's shell would."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from makemore import checkpoint
from makemore.cli import app
from tests.conftest import edit_safetensors, toy_items, toy_prose

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
GRU = ["--type", "gru", "--set", "n_hidden=32"]
SEED = 20261205  # every random choice below comes from this; printed in a failing assertion


def makemore(*args, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "makemore", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def evals(run: Path) -> list[dict]:
    if not (run / "metrics.jsonl").exists():
        return []
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "val_loss" in r]


def wait_until(condition, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the process ended first: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("timed out")


def saved_val(run: Path) -> float | None:
    path = run / checkpoint.FILENAME
    return checkpoint.load(path).training.best_val_loss if path.exists() else None


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toy.txt").write_text("\n".join(toy_items(400)) + "\n")
    return tmp_path


@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
def test_a_second_training_into_a_busy_run_folder_is_refused_and_the_first_is_intact(toy):
    first = makemore("train", "toy.txt", *GRU, "--max-steps", "100000", "--eval-interval", "50", "--out", "same", cwd=toy)
    wait_until(lambda: len(evals(toy / "same")) >= 1, first)
    for args in (["toy.txt", *GRU, "--max-steps", "50", "--out", "same", "--overwrite"], ["--resume", "same", "--max-steps", "200000"]):
        code, _, err = finish(makemore("train", *args, cwd=toy))
        assert code == 2, err
        assert err.strip() == f"error: same: another training (process {first.pid}) is writing this run folder; " \
                              "wait for it to finish or train into another --out"
    first.send_signal(signal.SIGINT)
    code, _, err = finish(first)
    assert code == 130, err
    steps = [r["step"] for r in evals(toy / "same")]
    assert steps == sorted(set(steps))  # one writer: no rows of another run interleaved
    assert checkpoint.load(toy / "same").training.best_val_loss == min(r["val_loss"] for r in evals(toy / "same"))
    assert not (toy / "same" / ".lock").exists()  # released on exit
    code, _, err = finish(makemore("train", "--resume", "same", "--max-steps", str(steps[-1] + 60), cwd=toy))
    assert code == 0, err  # and the folder is free again


@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
def test_a_lock_left_by_a_killed_training_is_taken_over(toy):
    proc = makemore("train", "toy.txt", *GRU, "--max-steps", "100000", "--eval-interval", "50", "--out", "k", cwd=toy)
    wait_until(lambda: (toy / "k" / ".lock").exists() and evals(toy / "k"), proc)
    proc.kill()
    proc.wait()
    assert (toy / "k" / ".lock").exists()  # what kill -9 leaves behind
    code, _, err = finish(makemore("train", "toy.txt", *GRU, "--max-steps", "20", "--out", "k", "--overwrite", cwd=toy))
    assert code == 0, err
    assert sorted(p.name for p in (toy / "k").iterdir()) == ["last.safetensors", "metrics.jsonl", "model.safetensors"]


@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
def test_kills_during_resumes_never_let_a_worse_model_replace_a_better_one(toy):
    """Each round resumes the run, waits for some evaluations, and kills it with SIGKILL at a seeded
    moment: the model on disk must only ever get better, whatever the last state knew."""
    rng = random.Random(SEED)
    run = toy / "r"
    args = ["--eval-interval", "10", "--lr", "0.02", "--ema", "0"]  # a noisy val loss: improvements and set-backs
    code, _, err = finish(makemore("train", "toy.txt", *GRU, *args, "--max-steps", "40", "--out", "r", cwd=toy))
    assert code == 0, err
    history = [saved_val(run)]
    killed_after_improving = 0
    for round_ in range(4):
        before = saved_val(run)
        n_evals = len(evals(run))
        proc = makemore("train", "--resume", "r", "--max-steps", "100000", cwd=toy)
        wait_until(lambda: len(evals(run)) >= n_evals + rng.randint(2, 6), proc)
        time.sleep(rng.uniform(0, 0.1))
        proc.kill()
        proc.wait()
        after = saved_val(run)
        assert after <= before, (SEED, round_, before, after)
        killed_after_improving += after < before
        history.append(after)
    assert killed_after_improving >= 1, (SEED, history)  # the case that lost work before: a kill after a better save
    code, _, err = finish(makemore("train", "--resume", "r", "--max-steps", "100000", "--max-seconds", "3", cwd=toy))
    assert code == 0, err
    assert saved_val(run) <= history[-1], (SEED, history, saved_val(run))
    assert checkpoint.load(run / checkpoint.LAST)  # every file loads


@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
def test_resume_from_another_folder_keeps_the_data_path(toy):
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "20", "--eval-interval", "10",
                               "--out", str(toy / "ws" / "run")]).exit_code == 0
    elsewhere = toy / "elsewhere"
    elsewhere.mkdir()
    code, _, err = finish(makemore("train", "--resume", "../ws/run", "--max-steps", "40", cwd=elsewhere))
    assert code == 0, err
    record = checkpoint.load(toy / "ws" / "run").training.data
    assert record["path"] == str((toy / "toy.txt").resolve())
    for cwd, path in ((toy, "ws/run"), (elsewhere, "../ws/run"), (toy / "ws", "run")):
        code, out, err = finish(makemore("eval", "-c", path, cwd=cwd))
        assert code == 0 and "test split" in out, err
    code, _, err = finish(makemore("train", "--resume", "run", "--max-steps", "60", cwd=toy / "ws"))
    assert code == 0, err


def test_deterministic_runs_write_byte_identical_files(toy):
    for name in ("a", "b"):
        result = runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "30", "--eval-interval", "10",
                                     "--deterministic", "--out", str(toy / name)])
        assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (toy / "a").iterdir())
    assert names == ["last.safetensors", "metrics.jsonl", "model.safetensors"]
    for name in names:
        assert (toy / "a" / name).read_bytes() == (toy / "b" / name).read_bytes(), name


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
def test_a_full_disk_names_the_file_and_loses_nothing(toy):
    disk = toy / "small"
    if not mount_tmpfs(disk, "64k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and a kernel that allows it)")
    try:
        code, out, err = finish(makemore("train", "toy.txt", "--type", "mlp", "--max-steps", "20", "--eval-interval", "10",
                                         "--out", disk / "run", cwd=toy))
        assert code == 2 and out == "", err
        assert err.strip().splitlines()[-1] == f"error: {disk / 'run' / 'model.safetensors'}: No space left on device"
        assert "Traceback" not in err
        assert sorted(p.name for p in (disk / "run").iterdir()) == ["metrics.jsonl"]  # no half file, no lock left
        (disk / "tok.json").write_text("{}")  # an older tokenizer there stays whole
        big = toy / "big.txt"
        big.write_text(toy_prose(2000))
        code, _, err = finish(subprocess.Popen([sys.executable, "-m", "tokenizer", "train", str(big), "--vocab-size", "2000",
                                                "-o", str(disk / "tok.json")], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        if code != 0:  # the tokenizer may fit: only when it does not, its failure must name it
            assert err.strip() == f"error: {disk / 'tok.json'}: No space left on device", err
            assert (disk / "tok.json").read_text() == "{}"
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
def test_a_terminal_that_cannot_show_a_character_gets_an_escape(toy):
    (toy / "fr.txt").write_text("\n".join(["josé", "rené", "chloé", "zoë", "anaïs", "noé", "léa", "maëlle"] * 3))
    assert runner.invoke(app, ["train", str(toy / "fr.txt"), "--type", "bigram", "--max-steps", "50", "--out", str(toy / "fr")]).exit_code == 0
    code, out, err = finish(makemore("sample", "-c", "fr", "-n", "30", "--seed", "1", "--prompt", "é", cwd=toy,
                                     env={"PYTHONIOENCODING": "ascii"}))
    assert code == 0, err
    assert "\\xe9" in out and "Error" not in err


def test_under_torchrun_only_rank_0_reports_a_bad_input(toy, monkeypatch):
    for rank, expected in (("0", 1), ("1", 0)):
        monkeypatch.setenv("RANK", rank)
        result = runner.invoke(app, ["sample", "-c", str(toy / "missing")])
        assert result.exit_code == 2
        assert len(result.stderr.strip().splitlines()) == expected, (rank, result.stderr)


# unusual but valid


@pytest.fixture
def trained(toy):
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "30", "--eval-interval", "10",
                               "--out", str(toy / "run")]).exit_code == 0
    return toy / "run"


def test_resume_applies_more_steps(trained):
    result = runner.invoke(app, ["train", "--resume", str(trained), "--max-steps", "40", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 40


def test_info_and_plot_take_the_nulls_and_gaps_the_tool_can_write(trained):
    best = trained / checkpoint.FILENAME

    def null_best(header):
        training = json.loads(header["__metadata__"]["training"])
        training["best_val_loss"] = None
        del training["best_step"]
        header["__metadata__"]["training"] = json.dumps(training)

    best.write_bytes(edit_safetensors(best.read_bytes(), null_best))
    result = runner.invoke(app, ["info", str(trained)])
    assert result.exit_code == 0, result.output
    assert "best val loss - at step -" in result.stdout
    metrics = trained / "metrics.jsonl"
    best_val = min(r["val_loss"] for r in evals(trained))
    lines = metrics.read_text().splitlines()
    lines[0] = json.dumps({"step": 5, "train_loss": "oops"})
    lines.insert(1, json.dumps({"step": 6}))
    lines.append(json.dumps({"step": 30, "eval_train_loss": None, "val_loss": None, "wall": 1.0}))  # a non-finite evaluation
    lines.append('{"step": 31, "train_lo')  # cut short by a kill
    metrics.write_text("\n".join(lines) + "\n")
    pytest.importorskip("matplotlib", reason="plot needs the optional plot extra")
    result = runner.invoke(app, ["plot", str(trained), "-o", str(trained.parent / "c.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"warning: {metrics}: skipped lines 1, 2, {len(lines)} (not a metrics row)"
    row = json.loads(result.stdout)["runs"][0]
    assert row["last_val_loss"] is None and row["best_val_loss"] == best_val
    assert (trained.parent / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_temperature_too_small_to_divide_by_is_greedy(trained):
    def texts(t):
        result = runner.invoke(app, ["sample", "-c", str(trained), "-n", "5", "--seed", "3", "--temperature", t, "--json"])
        assert result.exit_code == 0, result.output
        return [r["text"] for r in json.loads(result.stdout)]

    assert texts("1e-300") == texts("0") == texts("1e-5")
    assert len(set(texts("0"))) == 1


def test_min_len_reachable_only_sometimes_gives_long_items(trained):
    result = runner.invoke(app, ["sample", "-c", str(trained), "-n", "10", "--seed", "1", "--min-len", "6", "--json"])
    assert result.exit_code == 0, result.output
    assert all(len(r["text"]) >= 6 for r in json.loads(result.stdout))


def test_a_crlf_copy_evaluates_like_the_file(tmp_path):
    text = toy_prose(400)
    (tmp_path / "p.txt").write_text(text)
    (tmp_path / "crlf.txt").write_bytes(text.replace("\n", "\r\n").encode())
    assert runner.invoke(app, ["train", str(tmp_path / "p.txt"), "--type", "bigram", "--max-steps", "20", "--block-size", "32",
                               "--out", str(tmp_path / "t")]).exit_code == 0
    lf, crlf = (runner.invoke(app, ["eval", str(tmp_path / f), "-c", str(tmp_path / "t"), "--json"]) for f in ("p.txt", "crlf.txt"))
    assert crlf.exit_code == 0, crlf.output
    assert json.loads(crlf.stdout)["loss"] == json.loads(lf.stdout)["loss"]


def test_a_literal_boundary_token_in_items_is_plain_text(tmp_path):
    import tokenizer

    items = toy_items(200) + ["ka<|endoftext|>ri"]
    (tmp_path / "d.txt").write_text("\n".join(items))
    tokenizer.train(tmp_path / "d.txt", vocab_size=270, special=["<|endoftext|>"]).save(tmp_path / "tok.json")
    result = runner.invoke(app, ["train", str(tmp_path / "d.txt"), "--tokenizer", str(tmp_path / "tok.json"), "--type", "bigram",
                                 "--max-steps", "5", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    score = runner.invoke(app, ["score", "-c", str(tmp_path / "r"), "ka<|endoftext|>ri", "--json"])
    assert score.exit_code == 0 and json.loads(score.stdout)[0]["chars"] == len("ka<|endoftext|>ri") + 1


def test_a_second_compare_into_its_folder_needs_overwrite_and_starts_fresh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("toy.txt").write_text("\n".join(toy_items(100)))
    args = ["compare", "toy.txt", "--types", "bigram", "--steps", "10", "--eval-interval", "5", "--out", "cmp"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "cmp/bigram: already holds a trained model" in again.stderr
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    steps = [r["step"] for r in evals(tmp_path / "cmp" / "bigram")]
    assert steps == [5, 10]  # the second run's rows only
