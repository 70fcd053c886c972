"""Ctrl-C for commands: one that waits for a thread to finish starting, and one that stops gracefully.

``graceful_stop(stop)``: the first SIGINT or SIGTERM calls ``stop()`` (``rpq batch`` stops submitting and
finishes what is on the wire); a second one raises KeyboardInterrupt at once, which the session turns into
the command's interrupt message and exit 130.

``deferred_interrupt()``: ``threading.Thread.start()`` waits on a Condition; a KeyboardInterrupt raised
inside that wait leaves the Condition's lock half released, and the interpreter then fails with
``RuntimeError: release unlocked lock`` (exit 1, a traceback) instead of the command's interrupt message
(exit 130). CI caught it: a Ctrl-C just after `rpq run` queued a job landed in the status line's
``watcher.start()``. Inside ``deferred_interrupt()`` a SIGINT is noted, and raised as KeyboardInterrupt
once the block is done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["deferred_interrupt", "graceful_stop"]


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; others never see KeyboardInterrupt
        return
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@contextmanager
def graceful_stop(stop: Callable[[], object]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop()
        else:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
