"""Warnings the emulator gives a developer about things RunPod does silently, or that it suffers.

RunPod drops unknown request keys and results over 20 MB without a word; the emulator behaves the same
but says so, three ways: a WARNING in its log (`rpq serve` prints it), an `X-Rpq-Warning` header on
the answer concerned, and `Emulator.warnings`, a list tests can assert on. The same list carries what
went wrong in the emulator itself: a handler that held its event loop, finished jobs forgotten past
`Timings.max_retained_jobs`. Each entry is an `EmulatorWarning`: its text, and a `kind` to filter on.
"""

from __future__ import annotations

import logging
import threading
from typing import Final, Literal

__all__ = ["WARNING_HEADER", "EmulatorWarning", "Notices", "Warned", "WarningKind"]

log = logging.getLogger("runpod_queue.emulator")

#: The response header naming what the emulator ignored or dropped.
WARNING_HEADER: Final = b"x-rpq-warning"

_KEEP: Final = 1000  # a long-running `rpq serve` must not grow without bound

#: What an `EmulatorWarning` is about.
WarningKind = Literal["ignored_keys", "result_dropped", "progress_dropped", "loop_blocked", "jobs_forgotten"]


class EmulatorWarning(str):
    """One entry of `Emulator.warnings`: the message itself (a ``str``, so it prints and compares as
    text) with a `kind` saying what it is about.

    Kinds: ``"ignored_keys"`` (unknown request keys RunPod drops), ``"result_dropped"`` and
    ``"progress_dropped"`` (over RunPod's size limits), ``"loop_blocked"`` (code on the emulator's
    event loop, usually an async handler that never awaits, held every route for longer than
    `Emulator(loop_warn_after=...)`), ``"jobs_forgotten"`` (finished jobs forgotten before their
    retention, past `Timings.max_retained_jobs`).
    """

    __slots__ = ("kind",)
    kind: WarningKind

    def __new__(cls, message: str, kind: WarningKind) -> EmulatorWarning:
        """Make one.

        Args:
            message: What happened and what to do about it.
            kind: What it is about (see the class docstring).
        """
        self = super().__new__(cls, message)
        self.kind = kind
        return self

    def __repr__(self) -> str:
        return f"EmulatorWarning({str(self)!r}, kind={self.kind!r})"


class Notices:
    """The emulator's warnings, newest last (the last 1000 are kept). Thread-safe: written on the
    emulator's loop, read from tests' threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[EmulatorWarning] = []
        self._logged: set[str] = set()

    def warn(self, message: str, kind: WarningKind, *, log_once: bool = False) -> None:
        """Record `message`; with `log_once`, log it only the first time it is seen (up to 1000)."""
        if not log_once:
            log.warning("%s", message)
        elif message not in self._logged and len(self._logged) < _KEEP:
            self._logged.add(message)
            log.warning("%s (logged once)", message)
        with self._lock:
            self._items.append(EmulatorWarning(message, kind))
            if len(self._items) > _KEEP:
                del self._items[: len(self._items) - _KEEP]

    def snapshot(self) -> list[EmulatorWarning]:
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
