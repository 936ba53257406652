"""One training process per run folder: an exclusive lock on ``<run_dir>/.lock`` holding the owner's pid.

The lock is an ``flock`` on an open file, so the kernel releases it when the owner exits however it exits
(even SIGKILL): a stale file never blocks a later run. A second ``polydiff train`` on the same run folder
refuses at start, naming the process that holds it, instead of racing the first to a traceback.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ..errors import UserError

LOCK_FILE = ".lock"


class RunLock:
    """Context manager holding the run folder's lock (a no-op where ``fcntl`` is missing, i.e. Windows)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.path.parent} is in use by {owner}: one training process per run folder "
                            f"(wait for it to finish, or train into another train.out_dir)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (unlinking would race a new owner)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
