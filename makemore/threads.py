"""Threads chosen for the machine as it is: robust when another process shares the CPU.

torch runs an operation on several threads (OpenMP), and each operation ends at a barrier where all
of them wait for the slowest. When another process keeps a core busy (a browser, a second training,
a test suite), one of those threads is often not running, so each small operation waits for a time
slice: a small model's step, hundreds of small operations, then runs several times slower on every
core than on one (docs/performance.md, threads). Which count is faster depends on the model, the CPU
and what else runs, and it changes while a run goes on, so training measures it:

- `threads` given (`--threads N`, MAKEMORE_THREADS=N, or OpenMP's own OMP_NUM_THREADS=N): exactly N, always.
- otherwise training starts on every core this process may use and a `Tuner` times its steps: now
  and then it tries the other count (1, or every core) for a few steps and keeps whichever is
  faster; a trial that is clearly slower stops at once, and trials back off while a count holds.
- `--deterministic` fixes the count (float sums depend on it), as does torchrun: each of its
  processes gets an equal share of the cores.
- decoding (sample, score, chat) tunes the same way, a token a step, where `start` chose the count
  and no seed was given (float sums depend on the count, so a seeded sample keeps it fixed): a large
  model's token reads every weight from memory, which two threads do 1.3x faster on an idle 2-core
  EPYC and 2.5x slower beside one busy process (GPT-2 124M; docs/performance.md, GPT-2).
Evaluation, and decoding through the Python API, use the count as it is.
"""

from __future__ import annotations

import os
import statistics
from collections import deque

import torch

from makemore.errors import MakemoreError

ENV = "MAKEMORE_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system says, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def requested(threads: int | None) -> int | None:
    """The count asked for: the argument, else MAKEMORE_THREADS, else OMP_NUM_THREADS, else None (choose)."""
    for var in (ENV, "OMP_NUM_THREADS"):
        raw = os.environ.get(var, "").strip()
        if threads is not None or not raw:
            continue
        if not raw.isdigit():
            raise MakemoreError(f"{var}={raw[:20]!r}: expected a number of threads, such as 1")
        threads = int(raw)
    if threads is not None and not 1 <= threads <= 1024:
        raise MakemoreError(f"`threads` {threads}: must be from 1 to 1024")
    return threads


decoding: Tuner | None = None  # the process's tuner for decoding steps, where `start` allowed one


def start(threads: int | None, world: int = 1, tune_decoding: bool = False) -> int:
    """Set torch's thread count for a run and return it: the count asked for, else every usable core
    (shared equally among the processes of a torchrun). With `tune_decoding` (sample, score, chat)
    and the count chosen here, the decodings that follow share one tuner (`decoding_tuner`)."""
    global decoding
    asked = requested(threads)
    n = asked or max(1, usable_cores() // world)
    torch.set_num_threads(n)
    decoding = Tuner((1, n)) if tune_decoding and asked is None and world == 1 and n > 1 else None
    return n


def decoding_tuner() -> Tuner | None:
    """The tuner every decoding of this process ticks, one token a step (`sample.Decoder`): one for
    all of them, so chat's next turn or score's next string goes on from the count it settled on,
    a trial included; None where the count is fixed (asked for, a seed given, the Python API)."""
    return decoding


def typical(times) -> float:
    """The mean step time without the longest step (one stall is not a trend)."""
    ordered = sorted(times)
    return statistics.fmean(ordered[:-1] if len(ordered) > 4 else ordered)


class Tuner:
    """Keeps training on whichever of two thread counts gives faster steps now.

    `tick(seconds)` after every step. The first `warmup` steps are not timed (allocations and first
    calls make them slow, and a count compared with them would look faster than it is). Settled on
    a count, it keeps the last `window` step times;
    once it has `least` of them it tries the other count, then again every `gap` seconds: the first
    step of a trial is not timed (the threads wake up), then up to `trial` steps; a trial whose
    steps are clearly slower (1.3x) stops after three. Where steps are long (a large model, or a
    count that waits on a busy CPU), `enough` seconds of steps count as many as those numbers ask
    for (at least three), so a slow count is left within seconds. The other count is kept when its steps are
    at least 10% shorter, on average without the longest one (means, not medians: waiting for a
    descheduled thread shows as many long steps among short ones; but one stall is not a trend);
    otherwise the tuner returns and waits twice as long before the next trial (at most `max_gap`).
    After a switch the old count is tried again at once, so a switch that noise caused is undone
    within a few steps.
    """

    def __init__(self, counts: tuple[int, int], window: int = 20, least: int = 8, trial: int = 10, gap: float = 3.0,
                 max_gap: float = 60.0, warmup: int = 10, enough: float = 0.5):
        self.warmup, self.enough, self.warmed = warmup, enough, 0.0
        self.counts, self.current = counts, counts[1]
        self.window, self.least, self.trial, self.min_gap, self.max_gap = window, least, trial, gap, max_gap
        self.gap, self.waited = 0.0, 0.0  # the first trial as soon as there are `least` steps to compare with
        self.times: deque[float] = deque(maxlen=window)
        self.trying: list[float] | None = None  # step times of the other count, during a trial
        self.switches = 0

    @classmethod
    def for_training(cls, threads: int | None, deterministic: bool, world: int) -> Tuner | None:
        """A tuner where the count is free to change: not asked for, not deterministic, not under torchrun."""
        n = start(threads, world)
        if requested(threads) is not None or deterministic or world > 1 or n < 2:
            return None
        return cls((1, n))

    @property
    def other(self) -> int:
        return self.counts[0] if self.current == self.counts[1] else self.counts[1]

    def tick(self, seconds: float) -> None:
        if self.warmup and self.warmed < self.enough:
            self.warmup -= 1
            self.warmed += seconds
            return
        if self.trying is None:
            self.times.append(seconds)
            self.waited += seconds
            if self.ready(self.times, self.least) and self.waited >= self.gap:
                self.trying = []
                torch.set_num_threads(self.other)
            return
        self.trying.append(seconds)
        timed = self.trying[1:]  # the first step of a trial wakes the threads up
        base = typical(self.times)
        if len(timed) >= 3 and statistics.fmean(timed) > 1.3 * base:
            self.end_trial(keep=False)
        elif self.ready(timed, self.trial):
            self.end_trial(keep=typical(timed) < 0.9 * base)

    def ready(self, times, count: int) -> bool:
        """`count` step times, or `enough` seconds of at least three."""
        return len(times) >= count or (len(times) >= 3 and sum(times) >= self.enough)

    def end_trial(self, keep: bool) -> None:
        if keep:  # and check the old count again soon: a burst of noise in the old count's steps can mislead once
            self.current, self.gap = self.other, 0.0
            self.times.clear()
            self.switches += 1
        else:
            self.gap = min(max(2 * self.gap, self.min_gap), self.max_gap)
        torch.set_num_threads(self.current)
        self.trying, self.waited = None, 0.0
