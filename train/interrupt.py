"""Ctrl-C without losing work: the first SIGINT lets the current step finish, a checkpoint is written
and the run stops; a second SIGINT stops at once (Python's default)."""

from __future__ import annotations

import signal
import threading


class DeferredInterrupt:
    """Context manager; ``requested`` turns True on the first SIGINT. Active only in the main thread of
    a one-process run (with several processes, ranks would disagree on the step to stop at)."""

    def __init__(self, active: bool = True):
        self.active = active and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # the next Ctrl-C interrupts at once

    def __enter__(self) -> DeferredInterrupt:
        if self.active and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            self.active = False  # SIGINT is ignored on purpose (nohup, a background job): leave it so
        if self.active:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.active and not self.requested:
            signal.signal(signal.SIGINT, self._previous)
