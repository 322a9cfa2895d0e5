"""One writer per run folder: an advisory lock (`flock`) on `<folder>/.lock` while a training writes it.

A second training into the folder (or a resume of it) fails at once with the holder's process id.
The operating system releases an flock when its process dies however it dies (kill -9 included),
so a lock left by a dead process is simply taken over. The lock file is removed on release; a
taker checks that the file it locked is still the one at the path (a releaser may have removed
it in between) and tries again if not. Only POSIX systems have flock: elsewhere nothing is locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from makemore.errors import MakemoreError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

NAME = ".lock"


class RunLock:
    """`with RunLock(folder):` holds the folder's lock for the block; `acquire`/`release` by hand."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None or self.fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise MakemoreError(f"{self.path.parent}: another training ({holder}) is writing this run folder; "
                                    f"wait for it to finish or train into another `out`") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file as we took it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a process"
