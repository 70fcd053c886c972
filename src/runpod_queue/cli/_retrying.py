"""Why a command is waiting when its server does not answer: the client's retries, shown on stderr.

A remote server that refuses, times out or answers 429/5xx gets the client's retries (up to 5 attempts,
seconds apart); without this the screen would stay blank meanwhile. On a terminal a transient spinner says
``connecting to api.runpod.ai: retrying (attempt 2 of 5, next in 1.2s) after HTTP 503…`` (then ``…:
attempt 2 of 5…`` while it is made; on a narrow terminal the ellipsis cuts the reason first), inside the
live status line when a command shows one, and disappears when an answer comes. Off a terminal (CI logs,
``2>file``) each retry is one plain line, ``--json`` included: stderr carries diagnostics, never data, and
a log that shows why a step took 20 s is worth its lines.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from runpod_queue._retry import RetryNotice
from runpod_queue.cli._interrupt import deferred_interrupt
from runpod_queue.errors import APIStatusError, APITimeoutError

__all__ = ["RetryLine", "retry_reason", "spinner_line"]


def spinner_line(spinner: Spinner, text: str) -> Text:
    """The spinner's frame and ``text`` on one line, cut with an ellipsis rather than wrapped: a
    wrapped live line leaves a copy of itself behind at each refresh on a narrow terminal."""
    frame = spinner.render(time.monotonic())
    assert isinstance(frame, Text)  # a spinner without text of its own renders its frame as Text
    return Text.assemble(frame, " ", text, no_wrap=True, overflow="ellipsis")


def retry_reason(notice: RetryNotice) -> str:
    error = notice.error
    if isinstance(error, APIStatusError):
        return f"HTTP {error.status_code}"
    if isinstance(error, APITimeoutError):
        return "a timeout"
    return "a lost connection" if error.sent else "a failed connection"


class RetryLine:
    """The client's ``on_retry`` hook for one command (see the module docstring).

    Only retries of the thread that made it are shown: the live status line's background poll retries
    too, silently, and may still be retrying after the command has printed its answer."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.in_status_line = False  # a live status line is up and shows the retry in its own text
        # Streamed text ends mid-line on the terminal: a spinner there would be drawn after it and,
        # when cleared, erase the whole line. Not drawn meanwhile.
        self.paused = False
        self._thread = threading.get_ident()
        self._notice: RetryNotice | None = None
        self._since = 0.0
        self._live: Live | None = None
        self._spinner = Spinner("dots")
        self._closed = False

    def __call__(self, notice: RetryNotice) -> None:
        if self._closed or threading.get_ident() != self._thread:
            return
        if not self.console.is_terminal:
            self.console.print(self._plain(notice), highlight=False, soft_wrap=True)
            return
        self._notice, self._since = notice, time.monotonic()
        if not self.in_status_line and not self.paused and self._live is None:
            self._live = Live(self, console=self.console, transient=True, refresh_per_second=10)
            with deferred_interrupt():  # Live.start() starts its refresh thread
                self._live.start(refresh=True)  # at once: a short pause would otherwise never show

    @property
    def spinning(self) -> bool:
        """Its own spinner line is on screen (never while a status line shows the retry instead)."""
        return self._live is not None

    def describe(self) -> str:
        """The retry in progress as words ("" when there is none)."""
        notice = self._notice
        if notice is None:
            return ""
        left = notice.delay - (time.monotonic() - self._since)
        where = f"connecting to {urlsplit(notice.url).netloc}"
        progress = f"attempt {notice.attempt} of {notice.attempts}"
        if left > 0:
            return f"{where}: retrying ({progress}, next in {left:.1f}s) after {retry_reason(notice)}…"
        return f"{where}: {progress}…"

    def _plain(self, notice: RetryNotice) -> str:
        where = urlsplit(notice.url).netloc
        progress = f"attempt {notice.attempt} of {notice.attempts}, in {notice.delay:.1f}s"
        return f"connecting to {where}: retrying ({progress}) after {retry_reason(notice)}"

    def __rich__(self) -> RenderableType:
        return spinner_line(self._spinner, self.describe())

    def answered(self) -> None:
        """An answer came: the retry is over (safe from any thread)."""
        self._notice = None

    def clear(self) -> None:
        """An answer came or output follows: the line goes (stopping draws it once more, then erases
        it: the notice is dropped after, or that last frame would be a bare spinner)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._notice = None

    def close(self) -> None:
        self.clear()
        self._closed = True
