"""The rank context: which process this is under torchrun, and agreement between processes.

Plain `makemore train` is one process: `SINGLE`, where agreeing is a no-op. Under torchrun
(RANK, WORLD_SIZE and LOCAL_RANK in the environment) `from_env` joins the process group (gloo on
CPU, nccl on CUDA), and `agree` takes the maximum of each value over all ranks, so that a stop
decision (budget, signal, NaN) is the same everywhere: a rank that stopped alone would leave the
others waiting forever in their next gradient all-reduce.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from makemore.errors import MakemoreError


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0

    def agree(self, *values: float) -> list[float]:
        """Each value's maximum over all ranks."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return t.tolist()

    def same(self, value: float) -> bool:
        """Whether every rank holds this same value (e.g. a checksum of its parameters)."""
        high, low = self.agree(value, -value)
        return high == -low


SINGLE = Rank()


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def from_env(device: str) -> Rank:
    """This process's rank, joining the process group when started by torchrun."""
    if not under_torchrun():
        return SINGLE
    try:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    except ValueError:
        raise MakemoreError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    if world == 1:
        return SINGLE
    if not torch.distributed.is_available():
        raise MakemoreError("this torch build has no torch.distributed; run without torchrun")
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local)
    torch.distributed.init_process_group(backend=backend)
    return Rank(rank, world, local)


def device_for(rank: Rank, device: str) -> str:
    return f"cuda:{rank.local}" if device == "cuda" and rank.world > 1 else device


def finish(rank: Rank) -> None:
    if rank.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
