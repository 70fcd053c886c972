"""A thread that notices when the emulator's event loop stops answering, and says so.

Every route, timer and webhook runs on one asyncio loop. An async handler that computes without awaiting
(`examples/fake_llm.py` once did for n = 300000) holds all of them: /health times out and nothing says
why. The watchdog asks the loop for a heartbeat every 0.1 s from its own thread; when one has waited
longer than `warn_after`, it warns (log, `Emulator.warnings` as kind ``"loop_blocked"``) naming the jobs
running then, once per stall, and logs how long the stall lasted when the loop answers again.

It also makes SIGTERM/SIGINT final under `rpq serve`: uvicorn's handler only sets a flag the loop reads,
which a held loop never does. Once told the process should exit (`exit_requested`), the watchdog ends
the process itself if the loop has not answered for `_EXIT_GRACE_S` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from runpod_queue.emulator._notices import Notices

__all__ = ["LoopWatchdog"]

log = logging.getLogger("runpod_queue.emulator")

_BEAT_S: Final = 0.1  # how often the loop is asked; a stall is seen within this of warn_after
# After SIGTERM/SIGINT, how long a loop that does not answer gets before the process ends without its
# graceful shutdown (which needs the loop). Longer than any single heartbeat wait of a busy, healthy loop.
_EXIT_GRACE_S: Final = 3.0


class LoopWatchdog:
    """Watches one loop from a daemon thread; `start(loop)` on the loop, `stop()` from anywhere."""

    def __init__(self, notices: Notices, warn_after: float, running: Callable[[], list[str]]) -> None:
        self._notices = notices
        self._warn_after = warn_after
        self._running = running  # "endpoint/job-id" of the jobs in progress, read while the loop is held
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()
        self._answered = True
        self._exit_signal: int | None = None
        self._exit_at = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching `loop` (idempotent for the same loop)."""
        if self._loop is loop:
            return
        self._loop = loop
        self._stopped.clear()
        threading.Thread(target=self._watch, name="rpq-loop-watchdog", daemon=True).start()

    def stop(self) -> None:
        """Stop watching."""
        self._stopped.set()
        self._loop = None

    def exit_requested(self, signum: int) -> None:
        """The process was told to stop (called from the signal handler): make sure it does."""
        if self._exit_signal is None:
            self._exit_signal = signum
            self._exit_at = time.monotonic()

    def _answer(self) -> None:
        self._answered = True

    def _watch(self) -> None:
        loop = self._loop
        sent = time.monotonic()
        warned = False
        while not self._stopped.wait(_BEAT_S):
            now = time.monotonic()
            if self._answered:
                if warned:
                    log.warning("the emulator's event loop answers again after %.1f s held", now - sent)
                    warned = False
                self._answered = False
                sent = now
                if loop is None or loop.is_closed():
                    return
                try:
                    loop.call_soon_threadsafe(self._answer)
                except RuntimeError:  # the loop closed meanwhile
                    return
                continue
            held = now - sent
            if not warned and held >= self._warn_after:
                warned = True
                self._warn(held)
            if self._exit_signal is not None and now - max(self._exit_at, sent) >= _EXIT_GRACE_S:
                log.error(
                    "the emulator's event loop has been held for %.1f s and cannot shut down gracefully: "
                    "exiting now (signal %d)",
                    held,
                    self._exit_signal,
                )
                logging.shutdown()
                os._exit(128 + self._exit_signal)

    def _warn(self, held: float) -> None:
        try:
            running = self._running()
        except RuntimeError:  # the state changed under us: name no jobs rather than fail
            running = []
        jobs = (
            f" (running then: {', '.join(running[:5])}{' ...' if len(running) > 5 else ''})"
            if running
            else ""
        )
        self._notices.warn(
            f"the emulator's event loop has not answered for {held * 1000:.0f} ms{jobs}: code on it runs "
            "without awaiting, usually an async handler doing CPU work, and every route waits meanwhile. "
            "Make the handler a plain def (it then runs in a thread) or await asyncio.to_thread(...) "
            "for the heavy part",
            "loop_blocked",
        )
