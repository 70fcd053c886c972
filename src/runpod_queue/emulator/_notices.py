"""Warnings the emulator gives a developer about things RunPod does silently.

RunPod drops unknown request keys and results over 20 MB without a word; the emulator behaves the same
but says so, three ways: a WARNING in its log (`rpq serve` prints it), an `X-Rpq-Warning` header on
the answer concerned, and `Emulator.warnings`, a list tests can assert on.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

__all__ = ["WARNING_HEADER", "Notices", "Warned"]

log = logging.getLogger("runpod_queue.emulator")

#: The response header naming what the emulator ignored or dropped.
WARNING_HEADER: Final = b"x-rpq-warning"

_KEEP: Final = 1000  # a long-running `rpq serve` must not grow without bound


class Notices:
    """The emulator's warnings, newest last (the last 1000 are kept). Thread-safe: written on the
    emulator's loop, read from tests' threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[str] = []
        self._logged: set[str] = set()

    def warn(self, message: str, *, log_once: bool = False) -> None:
        """Record `message`; with `log_once`, log it only the first time it is seen (up to 1000)."""
        if not log_once:
            log.warning("%s", message)
        elif message not in self._logged and len(self._logged) < _KEEP:
            self._logged.add(message)
            log.warning("%s (logged once)", message)
        with self._lock:
            self._items.append(message)
            if len(self._items) > _KEEP:
                del self._items[: len(self._items) - _KEEP]

    def snapshot(self) -> list[str]:
        """The notices so far, oldest first."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Forget the notices so far."""
        with self._lock:
            self._items.clear()


class Warned:
    """A route's payload with warnings for the `X-Rpq-Warning` header (the app unwraps it)."""

    __slots__ = ("messages", "payload")

    def __init__(self, payload: object, messages: list[str]) -> None:
        self.payload = payload
        self.messages = messages

    def header(self) -> tuple[bytes, bytes]:
        # Header values are latin-1 and one line: keep the message ASCII-safe.
        text = "; ".join(self.messages).replace("\r", " ").replace("\n", " ")
        return WARNING_HEADER, text.encode("ascii", "replace")
