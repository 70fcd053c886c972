"""Ctrl-C that waits for a thread to finish starting.

``threading.Thread.start()`` waits on a Condition; a KeyboardInterrupt raised inside that wait leaves the
Condition's lock half released, and the interpreter then fails with ``RuntimeError: release unlocked
lock`` (exit 1, a traceback) instead of the command's interrupt message (exit 130). CI caught it: a
Ctrl-C just after `rpq run` queued a job landed in the status line's ``watcher.start()``. Inside
``deferred_interrupt()`` a SIGINT is noted, and raised as KeyboardInterrupt once the block is done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["deferred_interrupt"]


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
