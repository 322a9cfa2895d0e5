"""Training that survives: exact resume after SIGINT, SIGKILL at any moment, NaN guard, used run
folders, fine-tuning, early stopping, metrics and plots, torchrun DDP, --compile's fallback.
Subprocess tests run `python -m makemore` on this checkout, as a user's shell would."""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from makemore import checkpoint
from makemore.cli import app
from makemore.data import Lines
from makemore.models.transformer import Transformer, TransformerConfig
from makemore.train import bfloat16_native

train_module = importlib.import_module("makemore.train")  # the module: the package's `train` is the function
from tests.conftest import edit_safetensors, toy_items

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
GRU = ["--type", "gru", "--set", "n_hidden=32", "--eval-interval", "100", "--deterministic"]


def makemore(*args, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "makemore", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toy.txt").write_text("\n".join(toy_items(400)) + "\n")
    return tmp_path


def step_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train_loss"] for r in rows if "train_loss" in r}


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and any(s >= step for s in step_losses(run)):
            return
        time.sleep(0.02)
    raise AssertionError(f"the run never reached step {step}")


@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
@pytest.mark.parametrize("extra", [["--ema", "0"], []])  # without the weights' moving average, and with it (the default)
def test_interrupted_and_resumed_run_is_bit_identical(toy, extra):
    k = random.Random(len(extra)).randint(40, 700)  # a (seeded) step to interrupt at
    code, _, err = finish(makemore("train", "toy.txt", *GRU, *extra, "--max-steps", "900", "--out", "whole", cwd=toy))
    assert code == 0, err
    proc = makemore("train", "toy.txt", *GRU, *extra, "--max-steps", "900", "--out", "cut", cwd=toy)
    wait_for_step(toy / "cut", k, proc)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130, err
    assert "resume with: makemore train --resume cut" in err.strip().splitlines()[-1]
    cut_at = checkpoint.load(toy / "cut" / checkpoint.LAST).training.step  # the state loads
    assert k <= cut_at < 900
    code, _, err = finish(makemore("train", "--resume", "cut", cwd=toy))
    assert code == 0, err
    assert (toy / "whole" / "model.safetensors").read_bytes() == (toy / "cut" / "model.safetensors").read_bytes()
    whole, cut = step_losses(toy / "whole"), step_losses(toy / "cut")
    assert whole == cut and max(whole) == 900  # the same loss at every logged step, none twice


def test_resume_with_more_steps_and_refusals(toy):
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "100", "--out", str(toy / "r")]).exit_code == 0
    more = runner.invoke(app, ["train", "--resume", str(toy / "r"), "--max-steps", "200", "--json"])
    assert more.exit_code == 0, more.output
    assert json.loads(more.stdout)["steps"] == 200
    bad = runner.invoke(app, ["train", "--resume", str(toy / "r"), "--set", "n_hidden=64"])
    assert bad.exit_code == 2 and "only --max-steps, --max-seconds and --device may change" in bad.stderr
    (toy / "other.txt").write_text("\n".join(toy_items(300, seed=9)))
    bad = runner.invoke(app, ["train", str(toy / "other.txt"), "--resume", str(toy / "r")])
    assert bad.exit_code == 2 and "use --init-from" in bad.stderr
    bad = runner.invoke(app, ["train", "--resume", str(toy / "nothing-here")])
    assert bad.exit_code == 2 and f"--resume {toy / 'nothing-here'}: no such run folder" in bad.stderr
    (toy / "empty-run").mkdir()
    bad = runner.invoke(app, ["train", "--resume", str(toy / "empty-run")])
    assert bad.exit_code == 2 and "no last.safetensors there: nothing to resume" in bad.stderr
    last = toy / "r" / checkpoint.LAST
    tensors, info = checkpoint.read_state(last)  # the optimizer's state alone, read tensor by tensor
    assert info["step"] == 200 and {"rng.batch", "opt.0.exp_avg"} <= set(tensors) and all(k.startswith(("opt.", "rng.")) for k in tensors)

    def nan_moment(header, body):
        start, end = next(v["data_offsets"] for k, v in header.items() if k.startswith(checkpoint.STATE) and k.endswith("exp_avg"))
        return body[:start] + b"\x00\x00\xc0\x7f" * ((end - start) // 4) + body[end:]

    last.write_bytes(edit_safetensors(last.read_bytes(), edit_body=nan_moment))
    bad = runner.invoke(app, ["train", "--resume", str(toy / "r"), "--max-steps", "300"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "damaged training state" in bad.stderr
    assert "holds NaN or infinite numbers" in bad.stderr and bad.stderr.count("last.safetensors") == 1, bad.stderr


@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
def test_sigkill_at_random_moments_never_leaves_an_unloadable_checkpoint(toy):
    """Resumes killed at seeded moments once training is under way (saves of the best model every 20
    steps, a few milliseconds apart: kills land in and between them); every file must load after each."""
    seed = 1205
    rng = random.Random(seed)  # the moments, seeded: a failure can be replayed
    run = toy / "k"
    code, _, err = finish(makemore("train", "toy.txt", *GRU, "--eval-interval", "20", "--max-steps", "40", "--out", "k", cwd=toy))
    assert code == 0, err
    for i in range(4):
        rows = len(step_losses(run))
        proc = makemore("train", "--resume", "k", "--max-steps", "1000000", cwd=toy)
        deadline = time.time() + 60
        while len(step_losses(run)) <= rows and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)  # until this process trains (its first logged step)
        assert proc.poll() is None, (seed, i, proc.stderr.read()[-2000:])
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.wait()
        for name in (checkpoint.FILENAME, checkpoint.LAST):
            checkpoint.load(run / name)  # raises if damaged
    code, _, err = finish(makemore("train", "toy.txt", *GRU, "--max-steps", "30", "--overwrite", "--out", "k", cwd=toy))
    assert code == 0, err
    assert sorted(p.name for p in run.iterdir()) == ["last.safetensors", "metrics.jsonl", "model.safetensors"]


def test_a_non_finite_loss_stops_before_the_step_and_keeps_the_checkpoint(toy):
    out = toy / "n"
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "100", "--out", str(out)]).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    result = runner.invoke(app, ["train", str(toy / "toy.txt"), "--type", "transformer", "--set", "n_layer=1",
                                 "--lr", "1e30", "--max-steps", "50", "--out", str(out), "--overwrite", "--json"])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "training diverged at step" in line and "lower learning rate" in line
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout
    assert (out / "model.safetensors").read_bytes() == before


def test_a_used_run_folder_is_refused_before_training(toy):
    out = toy / "u"
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "20", "--out", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "20", "--out", str(out)])
    assert result.exit_code == 2 and "already holds a trained model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_fine_tuning_starts_from_the_checkpoint(toy):
    base = toy / "base"
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "300", "--out", str(base)]).exit_code == 0
    (toy / "pets.txt").write_text("\n".join(toy_items(200, seed=3)))
    result = runner.invoke(app, ["train", str(toy / "pets.txt"), "--init-from", str(base), "--max-steps", "10",
                                 "--eval-interval", "10", "--out", str(toy / "pets"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", str(toy / "pets"), "--json"]).stdout)
    assert info["type"] == "gru" and info["training"]["init_from"].endswith("base/model.safetensors")
    assert json.loads(result.stdout)["best_val_loss"] < 1.5  # a fresh model after 10 steps is near ln(11) = 2.4
    (toy / "odd.txt").write_text("\n".join(toy_items(50) + ["kaxe"] + toy_items(10)))
    bad = runner.invoke(app, ["train", str(toy / "odd.txt"), "--init-from", str(base), "--out", str(toy / "odd")])
    assert bad.exit_code == 2 and "odd.txt: line 51: character 'x'" in bad.stderr


def test_early_stop(toy):
    result = runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--eval-interval", "10", "--lr", "0.5",
                                 "--max-steps", "5000", "--early-stop", "2", "--out", str(toy / "e"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stopped"] == "early-stop" and summary["steps"] < 5000


def test_metrics_and_plot(toy):
    for name in ("a", "b"):
        args = ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "200", "--out", str(toy / name)]
        assert runner.invoke(app, args).exit_code == 0
    rows = [json.loads(line) for line in (toy / "a" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train_loss" in r]
    assert [r["step"] for r in steps] == list(range(10, 201, 10))
    assert all(set(r) == {"step", "train_loss", "lr", "grad_norm", "tokens_per_s", "wall", "tokens"} for r in steps)
    assert [r["step"] for r in rows if "val_loss" in r] == [100, 200]
    pytest.importorskip("matplotlib", reason="plot needs the optional plot extra")
    result = runner.invoke(app, ["plot", str(toy / "a"), str(toy / "b"), "-o", str(toy / "curves.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert (toy / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["steps"] for r in json.loads(result.stdout)["runs"]] == [200, 200]


def test_compile_falls_back_to_eager_when_it_cannot_compile(toy, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    result = runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "20", "--compile",
                                 "--out", str(toy / "c"), "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: --compile: torch.compile does not work here (RuntimeError); training in eager mode" in result.stderr
    names = checkpoint.load(toy / "c").model.state_dict().keys()
    assert not any(k.startswith("_orig_mod.") for k in names)


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun is not installed")
@pytest.mark.slow  # a subprocess or several: the fast tier (-m 'not slow') leaves it out
def test_two_process_torchrun(toy):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "makemore", "train", "toy.txt",
                           "--type", "mlp", "--max-steps", "60", "--eval-interval", "30", "--out", "ddp", "--json"],
                          cwd=toy, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # printed once, by rank 0 (the run checks that both ranks agree)
    assert summary["world_size"] == 2 and summary["global_batch_size"] == 64 and summary["steps"] == 60
    assert sorted(p.name for p in (toy / "ddp").iterdir()) == ["last.safetensors", "metrics.jsonl", "model.safetensors"]
    assert len([line for line in (toy / "ddp" / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]) == 2
    assert "Warning" not in done.stderr  # the closing check of the ranks' parameters once warned in every rank


def test_compare_reports_a_diverged_run_in_one_line(toy):
    result = runner.invoke(app, ["compare", str(toy / "toy.txt"), "--types", "transformer", "--lr", "1e30",
                                 "--steps", "50", "--out", str(toy / "cmp")])
    assert result.exit_code == 1 and "training diverged at step" in result.stderr.strip().splitlines()[-1]


def test_fine_tuning_checks_the_output_before_reading_data(toy):
    base = toy / "b0"
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *GRU, "--max-steps", "10", "--out", str(base)]).exit_code == 0
    (toy / "afile").write_text("x")
    result = runner.invoke(app, ["train", str(toy / "missing.txt"), "--init-from", str(base), "--out", str(toy / "afile" / "run")])
    assert result.exit_code == 2 and "afile is a file, not a folder" in result.stderr


def test_a_run_saved_before_the_average_existed_resumes_without_one(toy):
    args = [*GRU, "--ema", "0", "--out"]
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *args, str(toy / "whole"), "--max-steps", "200"]).exit_code == 0
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *args, str(toy / "old"), "--max-steps", "100"]).exit_code == 0

    def without_ema(header):  # the training options as the code before --ema wrote them
        training = json.loads(header["__metadata__"]["training"])
        del training["options"]["ema"]
        header["__metadata__"]["training"] = json.dumps(training)

    last = toy / "old" / checkpoint.LAST
    last.write_bytes(edit_safetensors(last.read_bytes(), without_ema))
    assert runner.invoke(app, ["train", "--resume", str(toy / "old"), "--max-steps", "200"]).exit_code == 0
    assert (toy / "old" / checkpoint.FILENAME).read_bytes() == (toy / "whole" / checkpoint.FILENAME).read_bytes()


def test_the_weight_average_is_what_is_evaluated_and_saved(toy):
    from safetensors.torch import load_file

    args = [*GRU, "--ema", "0.99", "--eval-interval", "200", "--max-steps", "200", "--out", str(toy / "a")]
    assert runner.invoke(app, ["train", str(toy / "toy.txt"), *args]).exit_code == 0
    best, last = load_file(toy / "a" / checkpoint.FILENAME), load_file(toy / "a" / checkpoint.LAST)
    averages = [t for k, t in last.items() if k.startswith(checkpoint.STATE) and k.endswith(".average")]
    assert len(averages) == len([k for k in last if not k.startswith(checkpoint.STATE)])  # one per parameter
    for name, weight in best.items():  # the one evaluation, at step 200: the average was evaluated and saved
        assert any(torch.equal(weight, a) for a in averages), name
        assert not torch.equal(weight, last[name])  # not the live weights, which last.safetensors continues from
    bad = runner.invoke(app, ["train", "--resume", str(toy / "a"), "--ema", "0.5"])
    assert bad.exit_code == 2 and "only --max-steps, --max-seconds and --device may change" in bad.stderr


TINY_TRANSFORMER = ["--set", "n_layer=1", "--set", "n_embd=32", "--set", "n_head=2", "--eval-interval", "20", "--ema", "0", "--threads", "1"]


@pytest.mark.skipif(not bfloat16_native("cpu"), reason="this CPU has no bfloat16 arithmetic of its own (AVX512-BF16 or AMX)")
def test_bfloat16_products_train_about_as_float32_and_resume_exactly(toy):
    def run(out, *extra):
        result = runner.invoke(app, ["train", str(toy / "toy.txt"), *TINY_TRANSFORMER, "-o", str(toy / out), *extra, "--json"])
        assert result.exit_code == 0, result.output
        return checkpoint.load(toy / out)

    f32 = run("f32", "--max-steps", "60")
    whole = run("whole", "--max-steps", "60", "--dtype", "bfloat16")
    run("cut", "--max-steps", "30", "--dtype", "bfloat16")
    resumed = runner.invoke(app, ["train", "--resume", str(toy / "cut"), "--max-steps", "60"])
    assert resumed.exit_code == 0, resumed.output
    cut = checkpoint.load(toy / "cut")
    assert whole.training.options["dtype"] == "bfloat16" and all(p.dtype == torch.float32 for p in whole.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), cut.model.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), f32.model.state_dict().values()))
    assert abs(whole.training.best_val_loss - f32.training.best_val_loss) < 0.05 < f32.training.best_val_loss


def test_bfloat16_where_the_machine_lacks_it_or_another_dtype_is_one_line(toy, monkeypatch):
    for dtype, native, why in [("float16", True, "choose float32 or bfloat16"), ("bfloat16", False, "no bfloat16 arithmetic of its own")]:
        monkeypatch.setattr(train_module, "bfloat16_native", lambda device: native)
        result = runner.invoke(app, ["train", str(toy / "toy.txt"), "--dtype", dtype, "-o", str(toy / "r")])
        assert result.exit_code == 2 and why in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not (toy / "r").exists()


def test_evaluations_measure_fewer_windows_of_a_model_too_large_for_a_thousand(monkeypatch):
    model = Transformer(TransformerConfig(vocab_size=10, block_size=8, n_layer=1, n_embd=8, n_head=2))
    n = sum(p.numel() for p in model.parameters())
    assert train_module.items_for(model, 1000) == 1000  # small: the default, as before
    monkeypatch.setattr(train_module, "EVAL_WORK", n * 8 * 100)
    assert train_module.items_for(model, 1000) == 100 and train_module.items_for(model, 50) == 50
    monkeypatch.setattr(train_module, "EVAL_WORK", 1)
    assert train_module.items_for(model, 1000) == train_module.FEWEST_ITEMS
    cfg = train_module.resolve(train_module.TrainConfig(eval_items=7), model, Lines)
    assert (cfg.eval_items, cfg.test_items) == (7, train_module.FEWEST_ITEMS)  # a given number is kept
