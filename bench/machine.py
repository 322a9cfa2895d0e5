"""The machine a benchmark ran on, for its table's title: CPU model, torch's CPU capability, cores."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(capability: str, threads: int | None = None) -> str:
    """E.g. 'AMD EPYC, torch CPU capability AVX512, 2 cores, 2 threads'."""
    return f"{cpu_name()}, torch CPU capability {capability}, {os.cpu_count()} cores" + (f", {threads} threads" if threads else "")
