"""A Ctrl-C while a thread is starting is raised once the start is done, never inside it."""

from __future__ import annotations

import signal
import threading

import pytest

from runpod_queue.cli._interrupt import deferred_interrupt


def test_a_sigint_inside_the_block_is_raised_after_it() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupt():
        signal.raise_signal(signal.SIGINT)
        thread = threading.Thread(target=lambda: None)
        thread.start()  # would be interrupted midway without the deferral
        finished.append(True)
    thread.join()
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_without_a_sigint_nothing_is_raised_and_the_handler_is_back() -> None:
    with deferred_interrupt():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
