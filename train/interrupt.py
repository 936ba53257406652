"""Ctrl-C and SIGTERM without losing work: the first signal lets the current step finish, a checkpoint is
written and the run stops; a second Ctrl-C stops at once (Python's default). SIGTERM is what SLURM and
Kubernetes send before they preempt a job, so it is treated like the first Ctrl-C."""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run stopped on a signal after writing a checkpoint; ``signum`` says which."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class DeferredInterrupt:
    """Context manager; ``requested`` turns True on the first SIGINT or SIGTERM (``signum`` says which). Active
    only in the main thread of a one-process run (with several processes, ranks would disagree on the step to
    stop at). A signal that was ignored when the run started (nohup, a background job) stays ignored."""

    def __init__(self, active: bool = True):
        self.active = active and threading.current_thread() is threading.main_thread()
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        self.requested, self.signum = True, signum
        signal.signal(signum, self._previous[signum])  # the same signal again acts at once

    def __enter__(self) -> DeferredInterrupt:
        if self.active:
            for signum in SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            if not (self.requested and signum == self.signum):
                signal.signal(signum, previous)
