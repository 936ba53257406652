"""DeferredInterrupt: the first Ctrl-C is noted, the second interrupts; an ignored SIGINT stays ignored."""

import os
import signal

import pytest

from polydiff.train.interrupt import DeferredInterrupt


@pytest.fixture
def sigint_handler():
    previous = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGINT, previous)


def test_first_sigint_is_deferred_second_interrupts(sigint_handler):
    sigint_handler(signal.default_int_handler)
    with DeferredInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_an_ignored_sigint_stays_ignored(sigint_handler):
    sigint_handler(signal.SIG_IGN)
    with DeferredInterrupt() as interrupt:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert not interrupt.requested and signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_sigterm_is_deferred_like_ctrl_c_and_handlers_are_restored():
    previous = signal.getsignal(signal.SIGTERM)
    with DeferredInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.requested and interrupt.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous
    with DeferredInterrupt() as interrupt:
        pass
    assert not interrupt.requested and signal.getsignal(signal.SIGTERM) is previous
