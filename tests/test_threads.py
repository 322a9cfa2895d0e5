"""The thread rule's decisions (not timings): what is asked for wins, and the tuner keeps whichever
count gives faster steps, given step times made up here."""

from __future__ import annotations

import pytest
import torch

from makemore import threads
from makemore.errors import MakemoreError
from makemore.threads import Tuner


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_thread_variables(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_what_is_asked_for_wins(monkeypatch):
    assert threads.requested(None) is None
    assert threads.requested(3) == 3
    monkeypatch.setenv(threads.ENV, "1")
    assert threads.requested(None) == 1 and threads.requested(2) == 2  # the option over the environment
    assert threads.start(None) == 1 == torch.get_num_threads()
    assert Tuner.for_training(None, deterministic=False, world=1) is None  # asked for: never tuned
    monkeypatch.delenv(threads.ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.requested(None) == 3  # OpenMP's own variable counts as asked for too
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(MakemoreError, match="MAKEMORE_THREADS='many'"):
        threads.requested(None)
    with pytest.raises(MakemoreError, match="`threads` 0"):
        threads.requested(0)


def test_the_default_is_every_usable_core_shared_by_torchrun_processes(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    assert threads.start(None) == 8 and threads.start(None, world=2) == 4 and threads.start(None, world=16) == 1
    assert Tuner.for_training(None, deterministic=False, world=1).counts == (1, 8)
    assert Tuner.for_training(None, deterministic=True, world=1) is None  # float sums depend on the count
    assert Tuner.for_training(None, deterministic=False, world=2) is None


def drive(tuner: Tuner, step_time, steps: int) -> list[int]:
    """Feed the tuner `steps` steps whose time depends on the thread count in force; the counts used."""
    used = []
    for k in range(steps):
        n = torch.get_num_threads()
        used.append(n)
        tuner.tick(step_time(n, k))
    return used


def test_the_tuner_moves_to_one_thread_when_the_cpu_is_shared_and_back_when_it_is_not():
    torch.set_num_threads(2)
    tuner = Tuner((1, 2), gap=0.05, warmup=0)
    busy = lambda n, k: 0.010 if n == 2 else 0.003  # noqa: E731  # a competitor: two threads wait at every barrier
    used = drive(tuner, busy, 100)
    assert used[:8] == [2] * 8 and tuner.current == 1 and tuner.switches == 1
    switched = 8 + used[8:].index(1) + 11  # the first trial, after eight steps: one untimed step and ten timed
    assert used[switched:].count(1) >= 0.8 * len(used[switched:])  # later trials of two threads stop after four steps
    idle = lambda n, k: 0.002 if n == 2 else 0.003  # noqa: E731  # the competitor has gone
    drive(tuner, idle, 200)
    assert tuner.current == 2 and tuner.switches == 2


def test_a_clearly_slower_trial_stops_after_three_steps_and_the_next_waits_longer():
    torch.set_num_threads(2)
    tuner = Tuner((1, 2), gap=0.05, max_gap=0.2, warmup=0)
    idle = lambda n, k: 0.002 if n == 2 else 0.010  # noqa: E731
    used = drive(tuner, idle, 30)
    first_trial = used.index(1)
    assert used[first_trial : first_trial + 5] == [1, 1, 1, 1, 2]  # one untimed step, three timed, then back
    assert tuner.current == 2 and tuner.gap == 0.05  # the first trial came early; the next waits the gap
    drive(tuner, idle, 400)
    assert tuner.current == 2 and tuner.gap == 0.2 and tuner.switches == 0  # backed off to the cap


def test_the_first_steps_are_not_compared():
    torch.set_num_threads(2)
    tuner = Tuner((1, 2), gap=0.05)
    warming = lambda n, k: (0.05 if k < 10 else 0.002) if n == 2 else 0.003  # noqa: E731  # slow first steps, then two threads win
    used = drive(tuner, warming, 100)
    assert used[:18] == [2] * 18 and tuner.current == 2 and tuner.switches == 0


def test_a_count_only_slightly_faster_or_one_stall_is_not_worth_a_switch():
    torch.set_num_threads(2)
    tuner = Tuner((1, 2), gap=0.05, warmup=0)
    drive(tuner, lambda n, k: 0.0100 if n == 2 else 0.0095, 300)  # 5% faster on one thread: noise
    stall = lambda n, k: (0.2 if k % 25 == 0 else 0.002) if n == 2 else 0.0025  # noqa: E731  # a rare pause of the process
    drive(tuner, stall, 300)
    assert tuner.current == 2 and tuner.switches == 0


def test_long_steps_on_a_busy_cpu_are_left_within_seconds():
    torch.set_num_threads(2)
    tuner = Tuner((1, 2))
    heavy = lambda n, k: 0.5 if n == 2 else 0.08  # noqa: E731  # a large model whose two threads wait on a busy CPU
    used = drive(tuner, heavy, 60)
    spent = sum(heavy(n, 0) for n in used[: used.index(1)])
    assert spent <= 3.0 and tuner.current == 1, (spent, used[:20])


def test_decoding_tunes_the_threads_only_where_start_chose_them_for_it(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    threads.start(None, tune_decoding=True)
    tuner = threads.decoding_tuner()
    assert tuner.counts == (1, 2) and torch.get_num_threads() == 2
    assert threads.decoding_tuner() is tuner  # one for every decoding that follows
    threads.start(None)  # training's start, or a seeded sample's
    assert threads.decoding_tuner() is None
    threads.start(2, tune_decoding=True)
    assert threads.decoding_tuner() is None  # asked for: never tuned
    monkeypatch.setenv(threads.ENV, "2")
    threads.start(None, tune_decoding=True)
    assert threads.decoding_tuner() is None
    monkeypatch.delenv(threads.ENV)
    threads.start(None, world=2, tune_decoding=True)
    assert threads.decoding_tuner() is None  # one core each


def test_decoding_on_a_shared_cpu_moves_to_one_thread(monkeypatch):
    """Each generated token is a tuner step: made-up step times where two threads wait at every barrier."""
    from makemore import sample
    from makemore.sample import Decoder, Sampling, stream_text
    from tests.test_generate import make
    from tokenizer import CharTokenizer

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    threads.start(None, tune_decoding=True)
    clock = [0.0]
    monkeypatch.setattr(sample.time, "perf_counter", lambda: clock[0])
    real_step = Decoder.step

    def slow_with_two(self, seq):
        clock[0] += 0.010 if torch.get_num_threads() == 2 else 0.003
        return real_step(self, seq)

    monkeypatch.setattr(Decoder, "step", slow_with_two)
    model, tok = make("lstm", "text"), CharTokenizer("abcdefghij")
    out = list(stream_text(model, tok, [1], 60, Sampling(temperature=0), seed=0))
    assert len(out) == 60 and torch.get_num_threads() == 1
    list(stream_text(model, tok, [1], 3, Sampling(temperature=0), seed=0))  # a later decoding goes on where it settled
    assert torch.get_num_threads() == 1 and threads.decoding_tuner().switches == 1
    threads.start(2, tune_decoding=True)  # asked for: two threads however slow
    list(stream_text(model, tok, [1], 60, Sampling(temperature=0), seed=0))
    assert torch.get_num_threads() == 2
